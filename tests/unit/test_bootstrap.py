"""The bootstrap's redraw rule (`bootstrap.bootstrap_resamples`) and the intervals built on it
(`analysis.bootstrap_analysis`, `task_reports.MultiLabel.bootstrap_analysis`); the rest of
the interval logic is tested in test_analysis.py."""

import numpy as np
import pytest

from cardioformer_jax.core import metrics
from cardioformer_jax.evaluation import analysis, bootstrap, markdown, task_reports

RARE = (3, 17, 40, 55, 68)  # 2-3 positives each among 300 examples


def _rare_multilabel(n: int = 300, k: int = 71, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """PTB-XL-'all'-like truth: common classes and a few with 2-3 positives; informative
    sigmoid probabilities."""
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, k)) < rng.uniform(0.05, 0.3, size=k)).astype(np.int64)
    for i, c in enumerate(RARE):
        targets[:, c] = 0
        targets[rng.choice(n, size=2 + i % 2, replace=False), c] = 1
    logits = rng.normal(size=(n, k)) + 1.5 * targets
    return 1 / (1 + np.exp(-logits)), targets


def _present(draws: bootstrap.BootstrapResamples, targets: np.ndarray) -> np.ndarray:
    """``(R, K)``: whether each resample holds a positive and a negative of each class,
    re-derived from the resamples' example weights."""
    weights = np.concatenate(list(draws.blocks(64)))
    return (weights @ targets > 0) & (weights @ (1 - targets) > 0)


def test_plain_draws_lose_rare_classes():
    # The condition the redraw fixes: without it most resamples lack a rare class, so
    # their macro AUROC averages fewer classes than the point estimate.
    probs, targets = _rare_multilabel()
    weights = bootstrap.bootstrap_weights(300, 200, np.random.default_rng(0))
    classes_in = ((weights @ targets > 0) & (weights @ (1 - targets) > 0)).sum(axis=1)
    assert (classes_in < 71).mean() > 0.4
    assert len(set(classes_in.tolist())) > 1  # macro means over different class sets


def test_redraw_keeps_every_class_in_every_resample():
    probs, targets = _rare_multilabel()
    draws = bootstrap.bootstrap_resamples(targets, 200, np.random.default_rng(0))
    assert draws.classes.all() and draws.too_rare == {}
    assert draws.num_resamples == 200 and 0 < draws.redrawn <= draws.drawn - 200
    assert _present(draws, targets).all()
    # Same seed, same resamples.
    again = bootstrap.bootstrap_resamples(targets, 200, np.random.default_rng(0))
    np.testing.assert_array_equal(again.counts, draws.counts)

    result = task_reports.MULTI_LABEL.bootstrap_analysis(probs, targets, num_resamples=200)
    point = metrics.multilabel_metrics(probs, targets)
    for name in ("auroc", "auprc", "fmax"):
        interval = result["intervals"][name]
        assert interval["lower"] <= point[name] <= interval["upper"], name
        assert interval["skipped"] == 0 and interval["redrawn"] == draws.redrawn
    assert result["intervals"]["auroc"]["point"] == pytest.approx(point["auroc"])
    assert result["intervals"]["auroc"]["classes"] == 71
    # Every class gets its own AUROC interval, around its AUROC.
    per_class = metrics.per_class_auroc(probs, targets)
    for c, interval in enumerate(result["per_class_auroc"]):
        assert interval["lower"] <= per_class[c] <= interval["upper"], c


def test_cluster_redraw_keeps_whole_subjects():
    probs, targets = _rare_multilabel()
    subjects = np.arange(300) // 2  # two examples per subject
    draws = bootstrap.bootstrap_resamples(targets, 100, np.random.default_rng(1),
                                        clusters=subjects)
    weights = np.concatenate(list(draws.blocks(30)))
    assert (weights[:, 0::2] == weights[:, 1::2]).all()
    assert (weights.sum(axis=1) == 300).all()
    present = _present(draws, targets)
    assert present[:, draws.classes].all()


def test_a_class_with_one_positive_is_named_too_rare():
    probs, targets = _rare_multilabel()
    targets[:, 9] = 0
    targets[5, 9] = 1
    # Three positives, all of one subject: as rare as one for a subject bootstrap.
    targets[:, 20] = 0
    targets[[10, 11, 12], 20] = 1
    subjects = np.arange(300)
    subjects[[10, 11, 12]] = 10
    names = [f"C{c}" for c in range(71)]
    draws = bootstrap.bootstrap_resamples(targets, 50, np.random.default_rng(0),
                                        clusters=subjects)
    assert sorted(draws.too_rare) == [9, 20]
    assert "fewer than 2" in draws.too_rare[9]
    assert not draws.classes[[9, 20]].any() and draws.classes.sum() == 69

    detail = task_reports.MULTI_LABEL.analyse(
        probs, targets, np.ones(71, bool), record_ids=np.arange(300), subject_ids=subjects,
        ages=np.full(300, -1), sexes=np.full(300, -1), bootstrap_resamples=50,
        class_names=names)
    boot = detail["bootstrap"]
    assert sorted(boot["too_rare"]["segment"]) == ["C20", "C9"]
    auroc = boot["segment"]["auroc"]
    # The interval and its point estimate describe the same 69 classes.
    keep = np.ones(71, bool)
    keep[[9, 20]] = False
    over_69 = metrics.multilabel_metrics(probs[:, keep], targets[:, keep])["auroc"]
    assert auroc["point"] == pytest.approx(over_69) and auroc["point"] != detail["segment"][
        "auroc"]
    assert auroc["classes"] == 69 and auroc["lower"] <= auroc["point"] <= auroc["upper"]
    assert detail["per_class"][9]["auroc_ci"] is None
    assert detail["per_class"][0]["auroc_ci"]["lower"] <= detail["per_class"][0]["auroc"]
    note = markdown.bootstrap_note(detail)
    assert "C9" in note and "C20" in note and f"segment {boot['redrawn']['segment']}" in note
    assert "69 resamplable classes" in markdown.ci(boot["segment"], "auroc")


def test_the_redraw_budget_is_never_exceeded():
    # Ten classes with 2 positives: a resample holds all of them about 0.87^10 = 25% of
    # the time, so 1.5 draws per resample cannot suffice; classes are given up instead.
    rng = np.random.default_rng(3)
    targets = (rng.random((200, 12)) < 0.3).astype(np.int64)
    for c in range(10):
        targets[:, c] = 0
        targets[[2 * c, 2 * c + 1], c] = 1
    draws = bootstrap.bootstrap_resamples(targets, 100, np.random.default_rng(0),
                                        max_draws_factor=1.5, block=50)
    assert 100 <= draws.drawn <= 150 and draws.num_resamples == 100
    assert draws.too_rare and all("redraw budget" in r for r in draws.too_rare.values())
    assert _present(draws, targets)[:, draws.classes].all()
    assert draws.classes[10:].all()  # the common classes stay
    with pytest.raises(ValueError, match="max_draws_factor"):
        bootstrap.bootstrap_resamples(targets, 10, rng, max_draws_factor=0.5)
    with pytest.raises(ValueError, match="0 and 1"):
        bootstrap.bootstrap_resamples(targets * 2, 10, rng)
    with pytest.raises(ValueError, match="clusters"):
        bootstrap.bootstrap_resamples(targets, 10, rng, clusters=np.arange(5))


def test_single_label_rare_class():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=120)
    labels[labels == 3] = 0
    labels[7] = 3  # one example of class 3
    logits = rng.normal(size=(120, 4))
    logits[np.arange(120), labels] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    result = analysis.bootstrap_analysis(probs, labels, 4, num_resamples=200)
    assert list(result["too_rare"]) == [3] and result["classes"] == [0, 1, 2]
    assert result["per_class_auroc"][3] is None
    auroc = result["intervals"]["auroc"]
    over_3 = metrics.weighted_classification_metrics(
        probs, labels, np.ones((1, 120)), 4, classes=np.arange(4) < 3)["auroc"][0]
    assert auroc["point"] == pytest.approx(over_3)
    assert auroc["lower"] <= auroc["point"] <= auroc["upper"] and auroc["skipped"] == 0
