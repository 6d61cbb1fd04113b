"""Numbers behind the evaluation report: pure functions of probabilities and labels."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from sklearn import metrics as skm

from cardioformer_jax.core import metrics
from cardioformer_jax.evaluation import bootstrap

ECE_BINS = 15

# docs/training.md: AUROC (%) of the paper, mean ± std over 5 seeds, subject-independent splits.
PAPER_AUROC: dict[str, tuple[float, float]] = {
    "ptb": (96.34, 0.11),
    "ptbxl": (89.99, 0.12),
    "mimic_iv_ecg": (95.59, 1.66),
}

# Builder configs whose preparation and split are the paper's (docs/data.md).
PAPER_BUILDER_CONFIGS = ("", "default")


def paper_comparison(dataset: str, builder_config: str | None, split: str,
                     synthetic: bool) -> tuple[bool, str]:
    """(whether a result may stand beside the paper's AUROC, why): only real PTB or PTB-XL
    data, the default builder config and the test split compare (docs/training.md)."""
    if synthetic:
        return False, "the data is a synthetic twin, not the real dataset"
    if dataset not in PAPER_AUROC:
        return False, f"the paper reports no result on {dataset}"
    if dataset == "mimic_iv_ecg":
        return False, ("the paper's MIMIC-IV pipeline merged SB, ST and AF into one label "
                       "and split by record (docs/reference_defects.md D1, D2); this "
                       "project's four-class subject split is another task")
    if (builder_config or "") not in PAPER_BUILDER_CONFIGS:
        return False, f"builder config {builder_config!r} is not the paper's preparation/split"
    if split != "test":
        return False, f"the paper reports the test split, this is {split!r}"
    return True, "real data, the paper's preparation and split, test split"


SEX_NAMES = {0: "male", 1: "female"}
# Upper bounds (exclusive) of the age bands; PTB-XL codes ages of 90 and over as 300,
# which falls in the last band.
AGE_BANDS: tuple[tuple[str, float, float], ...] = (
    ("<40", 0.0, 40.0), ("40-59", 40.0, 60.0), ("60-79", 60.0, 80.0), (">=80", 80.0, math.inf))
UNKNOWN = "unknown"

REPORTED_METRICS = ("accuracy", "precision", "recall", "f1", "auroc", "auprc")


def _check(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    if probs.ndim != 2 or labels.shape != (probs.shape[0],):
        raise ValueError(f"expected probs (N, K) and labels (N,), got {probs.shape}, "
                         f"{labels.shape}")
    if probs.shape[0] == 0:
        raise ValueError("no examples")
    return probs, labels


def _confidence_bins(probs: np.ndarray, labels: np.ndarray, num_bins: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per example: top-label confidence, whether the argmax is right (0/1), and its
    confidence bin (``(b / num_bins, (b + 1) / num_bins]``, the first also holding 0)."""
    probs, labels = _check(probs, labels)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    # ceil(c * B) - 1: right-closed bins; clip puts c = 0 into the first bin.
    index = np.clip(np.ceil(confidence * num_bins).astype(np.int64) - 1, 0, num_bins - 1)
    return confidence, correct, index


def reliability_bins(probs: np.ndarray, labels: np.ndarray, num_bins: int = ECE_BINS
                     ) -> dict[str, np.ndarray]:
    """Top-label reliability diagram data (bins as `_confidence_bins`): ``{"lower",
    "upper", "count", "confidence", "accuracy"}`` ``(num_bins,)``, NaN in empty bins."""
    confidence, correct, index = _confidence_bins(probs, labels, num_bins)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    count = np.bincount(index, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, confidence, num_bins) / count
        accuracy = np.bincount(index, correct, num_bins) / count
    return {"lower": edges[:-1], "upper": edges[1:], "count": count,
            "confidence": mean_confidence, "accuracy": accuracy}


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray,
                               num_bins: int = ECE_BINS) -> float:
    """Top-label ECE with `num_bins` equal-width bins (see `reliability_bins`)."""
    bins = reliability_bins(probs, labels, num_bins)
    used = bins["count"] > 0
    weights = bins["count"][used] / bins["count"].sum()
    return float(np.sum(weights * np.abs(bins["accuracy"][used] - bins["confidence"][used])))


def confusion_matrix(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``(K, K)`` counts: row = true class, column = predicted (argmax) class."""
    probs, labels = _check(probs, labels)
    k = probs.shape[1]
    return skm.confusion_matrix(labels, probs.argmax(axis=1), labels=np.arange(k))


def per_class_curves(probs: np.ndarray, labels: np.ndarray) -> list[dict[str, Any] | None]:
    """One-vs-rest curves per class: ``{"fpr", "tpr", "auroc", "precision", "recall",
    "ap"}``, or None for a class without positives or without negatives."""
    probs, labels = _check(probs, labels)
    curves: list[dict[str, Any] | None] = []
    for k in range(probs.shape[1]):
        y = labels == k
        if y.all() or not y.any():
            curves.append(None)
            continue
        fpr, tpr, _ = skm.roc_curve(y, probs[:, k])
        precision, recall, _ = skm.precision_recall_curve(y, probs[:, k])
        curves.append({
            "fpr": fpr, "tpr": tpr, "auroc": float(skm.roc_auc_score(y, probs[:, k])),
            "precision": precision, "recall": recall,
            "ap": float(skm.average_precision_score(y, probs[:, k]))})
    return curves


def per_class_metrics(probs: np.ndarray, labels: np.ndarray) -> list[dict[str, float]]:
    """Per class: support, precision, recall, F1 (argmax decisions), AUROC and AP (NaN
    when the class has no positive or no negative)."""
    probs, labels = _check(probs, labels)
    k = probs.shape[1]
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        labels, probs.argmax(axis=1), labels=np.arange(k), zero_division=0)
    return [{"support": int(support[c]), "precision": float(precision[c]),
             "recall": float(recall[c]), "f1": float(f1[c]),
             "auroc": math.nan if curve is None else curve["auroc"],
             "ap": math.nan if curve is None else curve["ap"]}
            for c, curve in enumerate(per_class_curves(probs, labels))]


def age_bands(ages: np.ndarray) -> np.ndarray:
    """Age band names (`AGE_BANDS`) of ages in years; negative (unknown) -> "unknown"."""
    ages = np.asarray(ages, dtype=np.float64)
    out = np.full(ages.shape, UNKNOWN, dtype=object)
    for name, low, high in AGE_BANDS:
        out[(ages >= low) & (ages < high)] = name
    return out


def by_subgroup(sexes: np.ndarray, ages: np.ndarray, score: Callable[[np.ndarray], Any]
                ) -> dict[str, dict[str, Any]]:
    """``{"by_sex": {group: score(mask)}, "by_age": ...}`` over the known groups with
    examples, in `SEX_NAMES` / `AGE_BANDS` order (a key without groups left out)."""
    out = {}
    sex_groups = np.asarray([SEX_NAMES.get(int(s), UNKNOWN) for s in np.asarray(sexes)], object)
    for key, groups, order in (("by_sex", sex_groups, SEX_NAMES.values()),
                               ("by_age", age_bands(ages), [n for n, _, _ in AGE_BANDS])):
        rows = {name: score(groups == name) for name in order if (groups == name).any()}
        if rows:
            out[key] = rows
    return out


def record_level_metrics(probs: np.ndarray, labels: np.ndarray, record_ids: np.ndarray,
                         num_classes: int) -> dict[str, float]:
    """Metrics of the per-record mean probabilities, ``"n"`` the number of records."""
    record_probs, record_labels, ids = metrics.record_level(probs, labels, record_ids)
    values = metrics.classification_metrics(record_probs, record_labels,
                                            num_classes=num_classes)
    return {"n": float(ids.size), **values}


def seed_summary(per_seed: Mapping[int, Mapping[str, float]], dataset: str,
                 compare_with_paper: bool = True) -> list[dict[str, Any]]:
    """Rows ``{"metric", "mean", "std", "formatted", "paper"}`` over seeds (``"89.99 ± 0.12"``
    form); ``paper`` the paper's AUROC when `compare_with_paper`, else None."""
    values = [{k: v[k] for k in REPORTED_METRICS} for v in per_seed.values()]
    aggregate = metrics.aggregate_seeds(values)
    paper = PAPER_AUROC.get(dataset) if compare_with_paper else None
    return [{"metric": name, "mean": aggregate[name]["mean"], "std": aggregate[name]["std"],
             "formatted": metrics.format_mean_std(aggregate[name]),
             "paper": f"{paper[0]:.2f} ± {paper[1]:.2f}" if name == "auroc" and paper else None}
            for name in REPORTED_METRICS]


BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
BOOTSTRAP_LEVEL = 0.95
# Resamples per vectorised block: bounds the (block, N) weight arrays to ~32 MB each.
_BOOTSTRAP_CELLS = 4_000_000


def weighted_expected_calibration_error(probs: np.ndarray, labels: np.ndarray,
                                        weights: np.ndarray, num_bins: int = ECE_BINS
                                        ) -> np.ndarray:
    """`expected_calibration_error` under each row of `weights` ``(B, N)``: ``(B,)``."""
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    confidence, correct, index = _confidence_bins(probs, labels, num_bins)
    in_bin = np.eye(num_bins)[index]  # (N, bins)
    count = weights @ in_bin
    gap = weights @ (in_bin * (correct - confidence)[:, None])
    # sum_b (n_b / n) |acc_b - conf_b| = sum_b |sum_{i in b} (correct_i - conf_i)| / n.
    return np.abs(gap).sum(axis=1) / count.sum(axis=1)


def bootstrap_intervals(probs: np.ndarray, labels: np.ndarray, num_classes: int, *,
                        clusters: np.ndarray | None = None,
                        num_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                        level: float = BOOTSTRAP_LEVEL) -> dict[str, dict[str, Any]]:
    """The ``"intervals"`` of `bootstrap_analysis`."""
    return bootstrap_analysis(probs, labels, num_classes, clusters=clusters,
                              num_resamples=num_resamples, seed=seed, level=level)["intervals"]


def bootstrap_analysis(probs: np.ndarray, labels: np.ndarray, num_classes: int, *,
                       clusters: np.ndarray | None = None,
                       num_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                       level: float = BOOTSTRAP_LEVEL) -> dict[str, Any]:
    """Percentile bootstrap confidence intervals of a single-label evaluation from
    `bootstrap.bootstrap_resamples` (whole `clusters` when given; docs/training.md).

    Returns ``{"intervals", "per_class_auroc", "redrawn", "too_rare", "classes"}``: intervals as
    `percentile_intervals` plus ``"redrawn"``, AUROC and AUPRC also with ``"point"``,
    ``"classes"`` and ``"too_rare"`` (over / how many / outside the resamplable classes).
    """
    probs, labels = _check(probs, labels)
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got "
                         f"[{labels.min()}, {labels.max()}]")

    def weighted(weights: np.ndarray, classes: np.ndarray, per_class: bool
                 ) -> dict[str, np.ndarray]:
        out = metrics.weighted_classification_metrics(
            probs, labels, weights, num_classes, classes=classes, per_class=per_class)
        if per_class:
            out["ece"] = (weighted_expected_calibration_error(probs, labels, weights)
                          if np.isfinite(probs).all() else np.full(weights.shape[0], np.nan))
        return out

    return resampled_analysis(np.eye(num_classes, dtype=np.int64)[labels], weighted,
                              clusters=clusters, num_resamples=num_resamples, seed=seed,
                              level=level, block=max(1, _BOOTSTRAP_CELLS // labels.shape[0]))


def resampled_analysis(positive: np.ndarray,
                       weighted: Callable[[np.ndarray, np.ndarray, bool],
                                          Mapping[str, np.ndarray]], *,
                       clusters: np.ndarray | None, num_resamples: int, seed: int,
                       level: float, block: int) -> dict[str, Any]:
    """`bootstrap_analysis` of any task: `weighted(weights (B, N), resamplable classes,
    per_class)` gives its metrics (and ``"auroc_per_class"``); `positive` ``(N, K)`` the truth."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    draws = bootstrap.bootstrap_resamples(positive, num_resamples, np.random.default_rng(seed),
                                          clusters=clusters)
    values: dict[str, list[np.ndarray]] = {}
    for weights in draws.blocks(block):
        for key, v in weighted(weights, draws.classes, True).items():
            values.setdefault(key, []).append(v)
    point = weighted(np.ones((1, positive.shape[0])), draws.classes, False)
    per_class = np.concatenate(values.pop("auroc_per_class"))
    intervals = percentile_intervals(values, level)
    for interval in intervals.values():
        interval["redrawn"] = draws.redrawn
    for key in ("auroc", "auprc"):
        intervals[key].update(point=float(point[key][0]), classes=int(draws.classes.sum()),
                              too_rare=sorted(draws.too_rare))
    tail = 100 * (1 - level) / 2
    per_class_ci = []
    for c in range(per_class.shape[1]):
        v = per_class[:, c]
        if not draws.classes[c] or not np.isfinite(v).all():
            per_class_ci.append(None)
            continue
        lower, upper = np.percentile(v, [tail, 100 - tail]).tolist()
        per_class_ci.append({"lower": float(lower), "upper": float(upper)})
    return {"intervals": intervals, "per_class_auroc": per_class_ci,
            "redrawn": draws.redrawn, "too_rare": dict(draws.too_rare),
            "classes": np.flatnonzero(draws.classes).tolist()}


def percentile_intervals(values: Mapping[str, Sequence[np.ndarray]], level: float
                         ) -> dict[str, dict[str, float]]:
    """``{metric: {"lower", "upper", "resamples", "skipped"}}``: the central `level` interval
    of each metric's finite resampled values, the others ``"skipped"`` (NaN if none)."""
    out = {}
    tail = 100 * (1 - level) / 2
    for key, parts in values.items():
        v = np.concatenate(parts)
        finite = v[np.isfinite(v)]
        lower, upper = ((math.nan, math.nan) if finite.size == 0
                        else np.percentile(finite, [tail, 100 - tail]).tolist())
        out[key] = {"lower": float(lower), "upper": float(upper),
                    "resamples": int(finite.size), "skipped": int(v.size - finite.size)}
    return out
