"""The report's computations (`analysis`) on constructed cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cardioformer_jax.core import metrics
from cardioformer_jax.evaluation import analysis


def _calibrated(confidences: list[float], per_level: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Two-class probabilities whose confidence c is right in exactly c of the cases."""
    probs, labels = [], []
    for c in confidences:
        right = round(c * per_level)
        probs += [[c, 1 - c]] * per_level
        labels += [0] * right + [1] * (per_level - right)
    return np.asarray(probs), np.asarray(labels)


def test_ece_is_zero_when_perfectly_calibrated():
    probs, labels = _calibrated([0.55, 0.6, 0.75, 0.8, 0.95, 1.0])
    assert analysis.expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)
    bins = analysis.reliability_bins(probs, labels)
    used = bins["count"] > 0
    np.testing.assert_allclose(bins["accuracy"][used], bins["confidence"][used])
    assert bins["count"].sum() == len(labels) and bins["count"].shape == (15,)


def test_ece_of_a_miscalibrated_model():
    # Confidence 0.9, right half of the time: ECE = |0.5 - 0.9| = 0.4.
    probs = np.tile([[0.9, 0.05, 0.05]], (40, 1))
    labels = np.array([0, 1] * 20)
    assert analysis.expected_calibration_error(probs, labels) == pytest.approx(0.4)
    # Two populations in two bins, weighted by their size: (30 * |0 - 0.7| + 10 * 0) / 40.
    probs = np.concatenate([np.tile([[0.7, 0.3]], (30, 1)), np.tile([[0.2, 0.8]], (10, 1))])
    labels = np.array([1] * 30 + [1] * 8 + [0] * 2)  # 0 % right at 0.7, 80 % right at 0.8
    assert analysis.expected_calibration_error(probs, labels) == pytest.approx(0.525)


def test_bins_are_right_closed():
    probs = np.array([[1 / 15, 14 / 15], [0.5, 0.5]])  # confidences 14/15 and 1/2
    bins = analysis.reliability_bins(probs, np.array([1, 0]))
    assert np.flatnonzero(bins["count"]).tolist() == [7, 13]  # (7/15, 8/15] and (13/15, 14/15]


def test_confusion_and_per_class():
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.2, 0.7]])
    labels = np.array([0, 1, 1, 2])
    assert analysis.confusion_matrix(probs, labels).tolist() == [[1, 0, 0], [1, 1, 0],
                                                                 [0, 0, 1]]
    rows = analysis.per_class_metrics(probs, labels)
    assert [r["support"] for r in rows] == [1, 2, 1]
    assert rows[0]["precision"] == 0.5 and rows[1]["recall"] == 0.5
    assert rows[2]["auroc"] == 1.0 and rows[2]["ap"] == 1.0
    # A class without positives has no curve.
    assert analysis.per_class_curves(probs, np.array([0, 1, 1, 1]))[2] is None


def test_groups_skip_unknown_and_equal_direct_computation():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), 60)
    labels = rng.integers(0, 3, 60)
    sexes = np.array([0, 1, -1] * 20)
    groups = analysis.by_subgroup(sexes, np.full(60, -1.0), lambda m: {
        "n": float(m.sum()), **metrics.classification_metrics(probs[m], labels[m], num_classes=3)})
    assert list(groups) == ["by_sex"]
    groups = groups["by_sex"]
    assert list(groups) == ["male", "female"]
    for name, code in (("male", 0), ("female", 1)):
        mask = sexes == code
        direct = metrics.classification_metrics(probs[mask], labels[mask], num_classes=3)
        assert groups[name] == {"n": 20.0, **direct}

    ages = np.array([-1, 25, 39.9, 40, 59, 60, 79.5, 80, 300])
    assert analysis.age_bands(ages).tolist() == [
        "unknown", "<40", "<40", "40-59", "40-59", "60-79", "60-79", ">=80", ">=80"]


def test_record_level_and_seed_summary():
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8], [0.4, 0.6]])
    labels = np.array([0, 0, 1, 1])
    result = analysis.record_level_metrics(probs, labels, np.array(["a", "a", "b", "b"]), 2)
    assert result["n"] == 2 and result["accuracy"] == 1.0  # a: (0.6, 0.4), b: (0.3, 0.7)

    per_seed = {41: {m: 0.9 for m in analysis.REPORTED_METRICS},
                42: {m: 0.8 for m in analysis.REPORTED_METRICS}}
    rows = {r["metric"]: r for r in analysis.seed_summary(per_seed, "ptbxl")}
    assert rows["auroc"]["formatted"] == "85.00 ± 7.07"  # sample std of 90 and 80
    assert rows["auroc"]["paper"] == "89.99 ± 0.12" and rows["f1"]["paper"] is None
    assert math.isclose(rows["accuracy"]["std"], np.std([0.9, 0.8], ddof=1))
    ptb_rows = {r["metric"]: r for r in analysis.seed_summary(per_seed, "ptb")}
    assert ptb_rows["auroc"]["paper"] == "96.34 ± 0.11"


@pytest.mark.parametrize("dataset,builder_config,split,synthetic,comparable,why", [
    ("ptbxl", "", "test", False, True, "real data"),
    ("ptb", "default", "test", False, True, "real data"),
    ("ptbxl", "", "test", True, False, "synthetic twin"),
    ("ptbxl", "random_split", "test", False, False, "random_split"),
    ("ptbxl", "", "validation", False, False, "test split"),
    ("mimic_iv_ecg", "", "test", False, False, "split by record"),
])
def test_only_the_papers_protocol_on_real_data_is_compared(dataset, builder_config, split,
                                                           synthetic, comparable, why):
    got, reason = analysis.paper_comparison(dataset, builder_config, split, synthetic)
    assert got is comparable and why in reason
    per_seed = {41: {m: 0.9 for m in analysis.REPORTED_METRICS},
                42: {m: 0.8 for m in analysis.REPORTED_METRICS}}
    rows = {r["metric"]: r for r in analysis.seed_summary(per_seed, dataset,
                                                          compare_with_paper=got)}
    assert (rows["auroc"]["paper"] is not None) == comparable


def _informative(n: int, seed: int = 0, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, size=n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), labels] += 1.5
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), labels


def test_bootstrap_interval_contains_the_point_and_narrows_with_n():
    widths = {}
    for n in (100, 1600):
        probs, labels = _informative(n)
        intervals = analysis.bootstrap_intervals(probs, labels, 3, num_resamples=300)
        point = {**metrics.classification_metrics(probs, labels, num_classes=3),
                 "ece": analysis.expected_calibration_error(probs, labels)}
        assert set(intervals) == set(point)
        for name, interval in intervals.items():
            assert interval["lower"] <= point[name] <= interval["upper"], (n, name)
            assert interval["resamples"] == 300 and interval["skipped"] == 0
        widths[n] = {name: v["upper"] - v["lower"] for name, v in intervals.items()}
    for name in ("accuracy", "f1", "auroc", "loss"):
        # Width ~ 1 / sqrt(n): 16 times the examples, about a quarter of the width.
        assert widths[1600][name] < 0.5 * widths[100][name], name


def test_bootstrap_is_deterministic_for_a_seed():
    probs, labels = _informative(80)
    first = analysis.bootstrap_intervals(probs, labels, 3, num_resamples=100, seed=5)
    assert first == analysis.bootstrap_intervals(probs, labels, 3, num_resamples=100, seed=5)
    assert first != analysis.bootstrap_intervals(probs, labels, 3, num_resamples=100, seed=6)


def test_cluster_bootstrap_keeps_a_subjects_examples_together():
    # 20 subjects, 10 identical examples each, half of them classified right: the data
    # holds 20 independent observations, not 200. Resampling examples one by one would
    # pretend 200 and give an interval about sqrt(10) times too narrow.
    subjects = np.repeat(np.arange(20), 10)
    labels = np.repeat(np.arange(20) % 2, 10)
    right = np.repeat(np.arange(20) % 4 < 2, 10)
    predicted = np.where(right, labels, 1 - labels)
    probs = np.where(np.eye(2)[predicted] == 1, 0.8, 0.2)
    by_example = analysis.bootstrap_intervals(probs, labels, 2, num_resamples=400)
    by_subject = analysis.bootstrap_intervals(probs, labels, 2, clusters=subjects,
                                              num_resamples=400)
    width = {name: v["accuracy"]["upper"] - v["accuracy"]["lower"]
             for name, v in (("example", by_example), ("subject", by_subject))}
    assert width["subject"] > 2.5 * width["example"]
    # The subject interval is the one of 20 examples, one per subject.
    one_each = analysis.bootstrap_intervals(probs[::10], labels[::10], 2, num_resamples=400)
    assert width["subject"] == pytest.approx(
        one_each["accuracy"]["upper"] - one_each["accuracy"]["lower"], abs=0.06)


def test_bootstrap_with_resamples_of_one_class():
    # Three examples, two of class 0: class 1 has one positive (and class 0 one negative),
    # too rare to resample; they are named and the macro AUROC/AUPRC intervals, over no
    # resamplable class, are NaN instead of a mean over whichever class a resample holds.
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    labels = np.array([0, 0, 1])
    intervals = analysis.bootstrap_intervals(probs, labels, 2, num_resamples=200)
    assert intervals["auroc"]["too_rare"] == [0, 1] and intervals["auroc"]["classes"] == 0
    assert intervals["auroc"]["skipped"] == 200 and math.isnan(intervals["auroc"]["lower"])
    assert intervals["accuracy"]["skipped"] == 0
    # Two examples of each class: resamples lacking one are redrawn, none is skipped.
    six = np.concatenate([probs, probs[::-1]]), np.array([0, 0, 1, 1, 0, 0])
    six[1][4:] = 1
    redrawn = analysis.bootstrap_intervals(*six, 2, num_resamples=200)
    assert redrawn["auroc"]["skipped"] == 0 and redrawn["auroc"]["redrawn"] > 0
    assert redrawn["auroc"]["too_rare"] == [] and redrawn["auroc"]["resamples"] == 200
    # One class in the data: every resample is skipped and the bounds are NaN.
    only = analysis.bootstrap_intervals(probs[:2], labels[:2], 2, num_resamples=50)
    assert only["auroc"]["resamples"] == 0 and math.isnan(only["auroc"]["lower"])
    assert only["accuracy"]["lower"] == only["accuracy"]["upper"] == 1.0
    with pytest.raises(ValueError):
        analysis.bootstrap_intervals(probs, labels, 2, num_resamples=0)
