"""Classification metrics computed on host from probabilities (docs/training.md, "Metrics")."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from absl import logging
from sklearn.metrics import (
    average_precision_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

# Clip for log(p): float32 softmax outputs can be exactly 0; 1e-7 ~ float32 resolution near 1.
PROB_EPS = 1e-7

CLASSIFICATION_KEYS = ("accuracy", "precision", "recall", "f1", "auroc", "auprc", "loss")
MULTILABEL_KEYS = ("auroc", "fmax", "auprc", "f1", "precision", "recall", "loss")

# Fmax's thresholds: a prediction is positive when its probability is >= t.
FMAX_THRESHOLDS = np.linspace(0.0, 1.0, 101)


def to_numpy(x: Any) -> np.ndarray:
    """A host numpy copy of an array-like or a fully addressable ``jax.Array`` (else raises)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        raise ValueError(
            "Array is not fully addressable from this process; gather it first with "
            "jax.experimental.multihost_utils.process_allgather(x, tiled=True)."
        )
    return np.asarray(jax.device_get(x))


def _as_mask(mask: Any, n: int) -> np.ndarray:
    """Validates a boolean / 0-1 mask of length ``n`` and returns it as bool."""
    m = to_numpy(mask)
    if m.shape != (n,):
        raise ValueError(f"mask must have shape ({n},), got {m.shape}")
    if m.dtype != np.bool_:
        # A non-0/1 value most likely means weights or indices were passed by mistake.
        if not np.isin(m, (0, 1)).all():
            raise ValueError("mask must be boolean or contain only 0/1")
        m = m.astype(bool)
    return m


def _apply_mask(mask: Any, *arrays: np.ndarray | None) -> list[np.ndarray | None]:
    n = arrays[0].shape[0]
    for a in arrays:
        if a is not None and a.shape[0] != n:
            raise ValueError(f"leading dimensions differ: {a.shape[0]} vs {n}")
    if mask is None:
        return list(arrays)
    m = _as_mask(mask, n)
    return [None if a is None else a[m] for a in arrays]


def _all_nan(keys: Sequence[str]) -> dict[str, float]:
    # A diverged model (NaN/inf outputs) gets NaN metrics instead of crashing the
    # evaluation; early stopping never counts NaN as an improvement.
    logging.warning("non-finite probabilities: all metrics set to NaN")
    return dict.fromkeys(keys, math.nan)


def _macro_ranking_scores(onehot: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """Macro AUROC and AUPRC over the columns of ``onehot`` with a positive (and, for
    AUROC, a negative); NaN if none has."""
    aurocs, auprcs = [], []
    for k in range(onehot.shape[1]):
        y, s = onehot[:, k], scores[:, k]
        n_pos = int(y.sum())
        if n_pos == 0:
            continue
        auprcs.append(average_precision_score(y, s))
        if n_pos < y.shape[0]:
            aurocs.append(roc_auc_score(y, s))
    auroc = float(np.mean(aurocs)) if aurocs else math.nan
    auprc = float(np.mean(auprcs)) if auprcs else math.nan
    return auroc, auprc


def classification_metrics(
    probs: Any,
    labels: Any,
    mask: Any = None,
    num_classes: int | None = None,
) -> dict[str, float]:
    """`CLASSIFICATION_KEYS` of ``(N, K)`` softmax probabilities against ``(N,)`` class ids,
    rows where the optional ``(N,)`` 0/1 `mask` is 0 left out."""
    probs = to_numpy(probs).astype(np.float64)
    labels = to_numpy(labels)
    if probs.ndim != 2 or labels.ndim != 1:
        raise ValueError(
            f"expected probs (N, K) and labels (N,), got {probs.shape}, {labels.shape}"
        )
    k = probs.shape[1] if num_classes is None else int(num_classes)
    if probs.shape[1] != k:
        raise ValueError(f"probs has {probs.shape[1]} columns but num_classes={k}")
    probs, labels = _apply_mask(mask, probs, labels)
    if labels.shape[0] == 0:
        raise ValueError("no valid examples to compute metrics on")
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.mod(labels, 1) == 0):
            raise ValueError("labels must be integer class ids")
        labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() >= k:
        raise ValueError(f"labels must lie in [0, {k}), got [{labels.min()}, {labels.max()}]")

    if not np.isfinite(probs).all():
        return _all_nan(CLASSIFICATION_KEYS)

    preds = probs.argmax(axis=1)
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, preds, labels=np.arange(k), average="macro", zero_division=0
    )
    onehot = np.eye(k, dtype=np.int64)[labels]
    if np.unique(labels).size < 2:
        # One class only: no class has both positives and negatives to rank.
        auroc = auprc = math.nan
    else:
        auroc, auprc = _macro_ranking_scores(onehot, probs)
    p_true = np.clip(probs[np.arange(labels.shape[0]), labels], PROB_EPS, 1.0)
    return {
        "accuracy": float(np.mean(preds == labels)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "auroc": auroc,
        "auprc": auprc,
        "loss": float(-np.mean(np.log(p_true))),
    }


def record_level(
    probs: Any,
    labels: Any,
    record_ids: Any,
    mask: Any = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(record_probs (R, K), record_labels, sorted ids (R,))``: each record's mean segment
    probabilities; `labels` (``(N,)`` or ``(N, K)``) must agree within a record."""
    probs = to_numpy(probs).astype(np.float64)
    labels = to_numpy(labels)
    record_ids = to_numpy(record_ids)
    if record_ids.ndim != 1:
        raise ValueError(f"record_ids must be 1-D, got shape {record_ids.shape}")
    probs, labels, record_ids = _apply_mask(mask, probs, labels, record_ids)
    ids, first, inverse = np.unique(record_ids, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    counts = np.bincount(inverse, minlength=ids.size)
    sums = np.zeros((ids.size, probs.shape[1]), dtype=np.float64)
    np.add.at(sums, inverse, probs)
    rec_probs = sums / counts[:, None]
    # The first segment gives the record label; every other segment must agree with it.
    rec_labels = labels[first]
    mismatch = (rec_labels[inverse] != labels).reshape(labels.shape[0], -1).any(axis=1)
    if mismatch.any():
        bad = ids[np.unique(inverse[mismatch])][:5]
        raise ValueError(f"segments of the same record have different labels: {bad.tolist()}")
    return rec_probs, rec_labels, ids


def aggregate_seeds(
    results: Sequence[Mapping[str, float]], ddof: int = 1
) -> dict[str, dict[str, float]]:
    """``{metric: {"mean", "std"}}`` over runs with the same keys; `ddof=1`: the sample std
    (NaN for one run), as papers report it."""
    if not results:
        raise ValueError("no results to aggregate")
    keys = list(results[0])
    for i, r in enumerate(results):
        if set(r) != set(keys):
            raise ValueError(f"result {i} has keys {sorted(r)}, expected {sorted(keys)}")
    out: dict[str, dict[str, float]] = {}
    for key in keys:
        values = np.array([float(r[key]) for r in results], dtype=np.float64)
        std = math.nan if values.size <= ddof else float(np.std(values, ddof=ddof))
        out[key] = {"mean": float(np.mean(values)), "std": std}
    return out


def format_mean_std(stats: Mapping[str, float], scale: float = 100.0, digits: int = 2) -> str:
    """Formats ``{"mean", "std"}`` as in the paper tables, e.g. ``"96.34 ± 0.11"``."""
    return f"{stats['mean'] * scale:.{digits}f} ± {stats['std'] * scale:.{digits}f}"


def _weighted_ranking_scores(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray
                             ) -> tuple[np.ndarray, np.ndarray]:
    """One class's AUROC and average precision under each row of `weights`: scikit-learn's
    with ``sample_weight``; NaN where a row lacks a positive (or, for AUROC, a negative)."""
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    # Tied scores form one threshold: reduce the weights over each run of equal scores.
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    w = weights[:, order]
    pos = np.add.reduceat(w * positive[order], starts, axis=1)
    neg = np.add.reduceat(w * ~positive[order], starts, axis=1)
    total_pos, total_neg = pos.sum(axis=1), neg.sum(axis=1)
    tps, fps = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tps + fps > 0, tps / (tps + fps), 0.0)
        ap = np.sum(pos * precision, axis=1) / total_pos
        # Descending order: a positive outranks the negatives below it, half of its ties.
        neg_below = total_neg[:, None] - fps
        auroc = np.sum(pos * (neg_below + 0.5 * neg), axis=1) / (total_pos * total_neg)
    ap = np.where(total_pos > 0, ap, np.nan)
    auroc = np.where((total_pos > 0) & (total_neg > 0), auroc, np.nan)
    return auroc, ap


def _macro(per_class: np.ndarray, classes: np.ndarray | None) -> np.ndarray:
    """Row means of ``(B, K)`` per-class scores over the defined (finite) entries of the
    columns in `classes` (all columns when None); NaN for a row with none."""
    if classes is not None:
        per_class = per_class[:, np.asarray(classes, bool)]
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: nothing ranks
        return np.nanmean(per_class, axis=1)


def _ranking(probs: np.ndarray, positive: np.ndarray, weights: np.ndarray, classes: Any
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class AUROC ``(B, K)`` and the `_macro` AUROC and AUPRC of ``(N, K)`` truth."""
    aurocs, aps = zip(*(_weighted_ranking_scores(probs[:, c], positive[:, c], weights)
                        for c in range(probs.shape[1])), strict=True)
    auroc_k = np.stack(aurocs, axis=1)
    return auroc_k, _macro(auroc_k, classes), _macro(np.stack(aps, axis=1), classes)


def _macro_prf(tp: np.ndarray, pred_count: np.ndarray, true_count: np.ndarray,
               f1_denominator: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Macro precision, recall, F1 ``(B,)`` of ``(B, K)`` weighted counts, zero_division=0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(pred_count > 0, tp / pred_count, 0.0)
        recall = np.where(true_count > 0, tp / true_count, 0.0)
        f1 = np.where(f1_denominator > 0, 2 * tp / f1_denominator, 0.0)
    return precision.mean(axis=1), recall.mean(axis=1), f1.mean(axis=1)


def weighted_classification_metrics(probs: Any, labels: Any, weights: Any,
                                     num_classes: int | None = None, *,
                                     classes: Any = None, per_class: bool = False
                                     ) -> dict[str, np.ndarray]:
    """`classification_metrics` of the data sets with example i ``weights[b, i]`` times
    (``(B, N)``, e.g. bootstrap counts), as ``(B,)`` arrays. `classes` ``(K,)`` bool limits
    the macro AUROC/AUPRC; `per_class` adds ``"auroc_per_class"`` ``(B, K)``."""
    probs = to_numpy(probs).astype(np.float64)
    labels = to_numpy(labels).astype(np.int64)
    weights = np.atleast_2d(to_numpy(weights)).astype(np.float64)
    k = probs.shape[1] if num_classes is None else int(num_classes)
    if probs.shape != (labels.shape[0], k) or weights.shape[1] != labels.shape[0]:
        raise ValueError(f"expected probs (N, {k}), labels (N,), weights (B, N); got "
                         f"{probs.shape}, {labels.shape}, {weights.shape}")
    b = weights.shape[0]
    if not np.isfinite(probs).all():
        return {key: np.full(b, np.nan) for key in CLASSIFICATION_KEYS}
    total = weights.sum(axis=1)
    preds = probs.argmax(axis=1)
    # Weighted confusion matrices (B, K, K): row = true class, column = predicted class.
    cell = labels * k + preds
    confusion = (weights @ np.eye(k * k)[cell]).reshape(b, k, k)
    tp = np.einsum("bkk->bk", confusion)
    true_count, pred_count = confusion.sum(axis=2), confusion.sum(axis=1)
    precision, recall, f1 = _macro_prf(tp, pred_count, true_count, true_count + pred_count)
    auroc_k, auroc, auprc = _ranking(probs, labels[:, None] == np.arange(k), weights, classes)
    one_class = (true_count > 0).sum(axis=1) < 2
    p_true = np.clip(probs[np.arange(labels.shape[0]), labels], PROB_EPS, 1.0)
    return {
        "accuracy": weights @ (preds == labels).astype(np.float64) / total,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "auroc": np.where(one_class, np.nan, auroc),
        "auprc": np.where(one_class, np.nan, auprc),
        "loss": weights @ -np.log(p_true) / total,
        **({"auroc_per_class": auroc_k} if per_class else {}),
    }


def _check_multilabel(probs: np.ndarray, targets: np.ndarray) -> None:
    if probs.ndim != 2 or probs.shape != targets.shape:
        raise ValueError(f"expected probs and multi-hot targets of one shape (N, K), got "
                         f"{probs.shape} and {targets.shape}")
    if not np.isin(targets, (0, 1)).all():
        raise ValueError("multi-hot targets must hold only 0 and 1")


def weighted_multilabel_metrics(probs: Any, targets: Any, weights: Any, *,
                                classes: Any = None, per_class: bool = False
                                ) -> dict[str, np.ndarray]:
    """`MULTILABEL_KEYS` as ``(B,)`` arrays of ``(N, K)`` sigmoid probabilities against
    multi-hot `targets`, weighted as in `weighted_classification_metrics` (definitions:
    docs/benchmarks.md, "Fmax"; F1/precision/recall at 0.5, macro over all K)."""
    probs = to_numpy(probs).astype(np.float64)
    targets = to_numpy(targets).astype(np.int64)
    weights = np.atleast_2d(to_numpy(weights)).astype(np.float64)
    _check_multilabel(probs, targets)
    if weights.shape[1] != probs.shape[0]:
        raise ValueError(f"weights {weights.shape} do not match {probs.shape[0]} examples")
    b = weights.shape[0]
    if not np.isfinite(probs).all():
        return {key: np.full(b, np.nan) for key in MULTILABEL_KEYS}
    total = weights.sum(axis=1)
    positive = targets.astype(bool)
    auroc_k, auroc, auprc = _ranking(probs, positive, weights, classes)

    true_count = positive.sum(axis=1)
    precision_t, has_pred_t, recall_t = [], [], []
    for t in FMAX_THRESHOLDS:
        predicted = probs >= t
        hits = (predicted & positive).sum(axis=1)
        count = predicted.sum(axis=1)
        has_pred_t.append(count > 0)
        precision_t.append(np.divide(hits, count, out=np.zeros(len(hits)), where=count > 0))
        recall_t.append(np.divide(hits, true_count, out=np.zeros(len(hits)),
                                  where=true_count > 0))
    has_pred = np.stack(has_pred_t, axis=1).astype(np.float64)  # (N, T)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision_avg = (weights @ (np.stack(precision_t, axis=1) * has_pred)) / (
            weights @ has_pred)
        recall_avg = (weights @ np.stack(recall_t, axis=1)) / total[:, None]
        f_t = 2 * precision_avg * recall_avg / (precision_avg + recall_avg)
    f_t = np.where(np.isfinite(f_t), f_t, 0.0)  # no prediction at t, or P = R = 0

    predicted = probs >= 0.5
    tp = weights @ (predicted & positive).astype(np.float64)  # (B, K)
    fp = weights @ (predicted & ~positive).astype(np.float64)
    fn = weights @ (~predicted & positive).astype(np.float64)
    precision, recall, f1 = _macro_prf(tp, tp + fp, tp + fn, 2 * tp + fp + fn)
    p = np.clip(probs, PROB_EPS, 1.0 - PROB_EPS)
    bce = -(targets * np.log(p) + (1 - targets) * np.log1p(-p)).mean(axis=1)
    return {
        "auroc": auroc,
        "fmax": f_t.max(axis=1),
        "auprc": auprc,
        "f1": f1,
        "precision": precision,
        "recall": recall,
        "loss": weights @ bce / total,
        **({"auroc_per_class": auroc_k} if per_class else {}),
    }


def multilabel_metrics(probs: Any, targets: Any, mask: Any = None) -> dict[str, float]:
    """`weighted_multilabel_metrics` of one data set: ``(N, K)`` sigmoid probabilities
    against ``(N, K)`` multi-hot targets, optional ``(N,)`` mask of valid rows."""
    probs, targets = _apply_mask(mask, to_numpy(probs), to_numpy(targets))
    if probs.shape[0] == 0:
        raise ValueError("no valid examples to compute metrics on")
    values = weighted_multilabel_metrics(probs, targets, np.ones((1, probs.shape[0])))
    return {key: float(values[key][0]) for key in MULTILABEL_KEYS}


def per_class_auroc(probs: Any, targets: Any) -> np.ndarray:
    """``(K,)`` AUROC of each class of a multi-label problem (NaN where undefined)."""
    probs = to_numpy(probs).astype(np.float64)
    targets = to_numpy(targets).astype(np.int64)
    _check_multilabel(probs, targets)
    return _ranking(probs, targets.astype(bool), np.ones((1, probs.shape[0])), None)[0][0]
