"""CinC Challenge 2021 metrics on ``(N, K)`` arrays: docs/training.md, "Challenge 2021 metrics"."""

from __future__ import annotations

import csv
import functools
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

WEIGHTS_CSV = Path(__file__).with_name("cinc2021_weights.csv")
"""The Challenge 2021 weights table (26 classes; evaluation/README.md)."""

NORMAL_CODE = "426783006"
"""SNOMED CT code of sinus rhythm, the Challenge's normal ("inactive") class."""

DEFAULT_GRID: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))
"""`choose_thresholds`' candidate thresholds: 0.05, 0.10, ..., 0.95."""


def load_weights(path: str | os.PathLike[str] | None = None
                 ) -> tuple[tuple[str, ...], np.ndarray]:
    """(class codes, weights ``(K, K)`` float64) of a weights table (default `WEIGHTS_CSV`,
    a copy); ValueError naming the file and cell of a malformed one."""
    if path is None:
        classes, weights = _challenge_table()
        return classes, weights.copy()
    return _read_table(Path(path))


@functools.cache
def _challenge_table() -> tuple[tuple[str, ...], np.ndarray]:
    return _read_table(WEIGHTS_CSV)


def _read_table(path: Path) -> tuple[tuple[str, ...], np.ndarray]:
    with open(path, newline="") as f:
        rows = [[cell.strip() for cell in row] for row in csv.reader(f) if row]
    if len(rows) < 2:
        raise ValueError(f"{path}: a weights table needs a header row and at least one row")
    header = tuple(rows[0][1:])
    for r, row in enumerate(rows[1:], start=2):
        if len(row) != len(header) + 1:
            raise ValueError(f"{path}: row {r} has {len(row) - 1} weights, the header "
                             f"names {len(header)} classes")
    names = tuple(row[0] for row in rows[1:])
    if names != header:
        raise ValueError(f"{path}: the rows name the classes {names}, the header "
                         f"{header}; they must be the same, in the same order")
    weights = np.empty((len(header), len(header)))
    for r, row in enumerate(rows[1:]):
        for c, cell in enumerate(row[1:]):
            try:
                weights[r, c] = float(cell)
            except ValueError:
                weights[r, c] = math.nan
            if not math.isfinite(weights[r, c]):
                raise ValueError(f"{path}: row {header[r]!r}, column {header[c]!r}: "
                                 f"{cell!r} is not a finite number")
    _codes_of(header, "the header of " + str(path))  # no code in two classes
    return header, weights


def _codes_of(classes: Sequence[str], what: str) -> list[frozenset[str]]:
    """Each class as the set of its codes; ValueError when a code is empty or repeated."""
    groups = []
    seen: dict[str, str] = {}
    for cls in classes:
        codes = [c.strip() for c in str(cls).split("|")]
        if not all(codes):
            raise ValueError(f"{what}: class {cls!r} has an empty code")
        for code in codes:
            if code in seen:
                raise ValueError(f"{what}: code {code} is in both {seen[code]!r} and {cls!r}")
            seen[code] = str(cls)
        groups.append(frozenset(codes))
    return groups


def class_order(class_codes: Sequence[str], classes: Sequence[str] | None = None
                ) -> np.ndarray:
    """Column indices putting a matrix whose columns are `class_codes` into the order of
    `classes` (default: the table's), classes compared as code sets; ValueError on a mismatch."""
    if classes is None:
        classes = _challenge_table()[0]
    wanted = _codes_of(classes, "classes")
    given = _codes_of(class_codes, "class_codes")
    column = {codes: j for j, codes in enumerate(given)}
    missing = [cls for cls, codes in zip(classes, wanted, strict=True) if codes not in column]
    known = set(wanted)
    extra = [cls for cls, codes in zip(class_codes, given, strict=True) if codes not in known]
    if missing or extra:
        raise ValueError(f"class_codes do not match the classes: missing {missing}, "
                         f"not among them {extra}")
    return np.array([column[codes] for codes in wanted], dtype=np.int64)


def multi_hot(records: Iterable[Iterable[str]], classes: Sequence[str] | None = None
              ) -> np.ndarray:
    """``(N, K)`` bool labels of `records` (each an iterable of SNOMED CT codes) over
    `classes` (default: the Challenge table's); ``a|b`` is positive for ``a`` or ``b``;
    unscored codes are ignored."""
    if classes is None:
        classes = _challenge_table()[0]
    index = {code: k for k, codes in enumerate(_codes_of(classes, "classes"))
             for code in codes}
    rows = []
    for n, codes in enumerate(records):
        if isinstance(codes, str):
            raise ValueError(f"records[{n}] is the string {codes!r}; give each record as a "
                             "list of codes")
        row = np.zeros(len(classes), dtype=bool)
        for code in codes:
            k = index.get(str(code).strip())
            if k is not None:
                row[k] = True
        rows.append(row)
    return np.array(rows, dtype=bool).reshape(len(rows), len(classes))


def _binary(x: Any, name: str, num_classes: int | None = None) -> np.ndarray:
    """`x` as an ``(N, K)`` bool array; ValueError naming `name` when it is not 0/1."""
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be (recordings, classes); got shape {a.shape}")
    if num_classes is not None and a.shape[1] != num_classes:
        raise ValueError(f"{name} has {a.shape[1]} classes, expected {num_classes}")
    if a.shape[0] == 0:
        raise ValueError(f"{name} has no recordings")
    if a.dtype != bool:
        bad = np.argwhere((a != 0) & (a != 1))
        if bad.size:
            n, k = bad[0]
            raise ValueError(f"{name} must be 0/1; {name}[{n}, {k}] is {a[n, k]!r}")
        a = a.astype(bool)
    return a


def _binary_pair(labels: Any, outputs: Any, num_classes: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """`_binary` labels and outputs of the same shape."""
    labels = _binary(labels, "labels", num_classes)
    outputs = _binary(outputs, "outputs", num_classes)
    if labels.shape != outputs.shape:
        raise ValueError(f"labels {labels.shape} and outputs {outputs.shape} differ in shape")
    return labels, outputs


def confusion_matrix(labels: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """The Challenge's multi-label confusion matrix ``(K, K)`` (rows: labels), each recording
    adding ``1 / max(1, #classes in its labels or outputs)`` per (label, output) pair."""
    labels, outputs = _binary_pair(labels, outputs)
    m = np.maximum(1, (labels | outputs).sum(axis=1))
    return (labels / m[:, None]).T @ outputs.astype(np.float64)


def _weights(weights: np.ndarray | None, normal_index: int | None
             ) -> tuple[np.ndarray, int]:
    if weights is None:
        if normal_index is not None:
            raise ValueError("normal_index is given without weights; the Challenge table's "
                             "normal class is fixed (NORMAL_CODE)")
        classes, table = _challenge_table()
        return table, classes.index(NORMAL_CODE)
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise ValueError(f"weights must be a square (K, K) matrix; got shape {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError("weights must be finite")
    if normal_index is None or not 0 <= int(normal_index) < w.shape[0]:
        raise ValueError(f"explicit weights need normal_index in [0, {w.shape[0]}); "
                         f"got {normal_index!r}")
    return w, int(normal_index)


def challenge_score_parts(labels: np.ndarray, outputs: np.ndarray, *,
                          weights: np.ndarray | None = None,
                          normal_index: int | None = None) -> dict[str, float]:
    """``{"score", "observed", "correct", "inactive"}`` of binary `outputs` against `labels`
    ``(N, K)``; `weights` ``(K, K)`` and the normal class's column `normal_index` (give both or
    neither) default to the Challenge 2021 table, in its column order (`class_order`)."""
    w, normal = _weights(weights, normal_index)
    labels, outputs = _binary_pair(labels, outputs, w.shape[0])
    inactive_outputs = np.zeros_like(outputs)
    inactive_outputs[:, normal] = True
    observed = float(np.sum(w * confusion_matrix(labels, outputs)))
    correct = float(np.sum(w * confusion_matrix(labels, labels)))
    inactive = float(np.sum(w * confusion_matrix(labels, inactive_outputs)))
    # Exact comparison, as the Challenge's code: e.g. every recording labelled normal alone.
    score = (observed - inactive) / (correct - inactive) if correct != inactive else 0.0
    return {"score": score, "observed": observed, "correct": correct, "inactive": inactive}


def f_measure(labels: np.ndarray, outputs: np.ndarray) -> tuple[float, np.ndarray]:
    """(macro, per-class ``(K,)``) Challenge F-measure ``2TP / (2TP + FP + FN)``: NaN where
    the denominator is 0; macro = mean of the defined classes (NaN when none is)."""
    labels, outputs = _binary_pair(labels, outputs)
    tp = (labels & outputs).sum(axis=0)
    fp = (~labels & outputs).sum(axis=0)
    fn = (labels & ~outputs).sum(axis=0)
    denominator = 2 * tp + fp + fn
    per_class = np.full(labels.shape[1], np.nan)
    defined = denominator > 0
    per_class[defined] = 2 * tp[defined] / denominator[defined]
    macro = float(np.mean(per_class[defined])) if defined.any() else math.nan
    return macro, per_class


def accuracy(labels: np.ndarray, outputs: np.ndarray) -> float:
    """Fraction of recordings whose outputs equal their labels in every class."""
    labels, outputs = _binary_pair(labels, outputs)
    return float(np.mean(np.all(labels == outputs, axis=1)))


def weighted_metrics(labels: np.ndarray, outputs: np.ndarray, weights: np.ndarray
                     ) -> dict[str, np.ndarray]:
    """``(B,)`` ``score``, ``f_measure`` and ``accuracy`` under each row of `weights` ``(B, N)``
    (a row of ones: the unweighted metrics); columns in the Challenge table's order."""
    # Every term of the three metrics is a sum over recordings: a weighting is a matmul.
    w_table, normal = _weights(None, None)
    labels, outputs = _binary_pair(labels, outputs, w_table.shape[0])
    b = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if b.shape[1] != labels.shape[0]:
        raise ValueError(f"weights {b.shape} do not match {labels.shape[0]} recordings")
    inactive_outputs = np.zeros_like(outputs)
    inactive_outputs[:, normal] = True

    def share(o: np.ndarray) -> np.ndarray:  # each recording's sum(W * A_n), (N,)
        m = np.maximum(1, (labels | o).sum(axis=1))
        return np.einsum("ni,ij,nj->n", labels.astype(np.float64), w_table,
                         o.astype(np.float64)) / m

    observed, correct, inactive = (b @ share(o) for o in (outputs, labels, inactive_outputs))
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.where(correct != inactive, (observed - inactive) / (correct - inactive), 0.0)
        tp = b @ (labels & outputs).astype(np.float64)
        fp = b @ (~labels & outputs).astype(np.float64)
        fn = b @ (labels & ~outputs).astype(np.float64)
        denominator = 2 * tp + fp + fn
        per_class = np.where(denominator > 0, 2 * tp / denominator, np.nan)
        defined = np.isfinite(per_class)
        f_macro = np.where(defined.any(axis=1),
                           np.where(defined, per_class, 0.0).sum(axis=1)
                           / np.maximum(defined.sum(axis=1), 1), np.nan)
        exact = np.all(labels == outputs, axis=1).astype(np.float64)
        acc = (b @ exact) / b.sum(axis=1)
    return {"score": score, "f_measure": f_macro, "accuracy": acc}


def _probabilities(probs: Any, name: str = "probs") -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"{name} must be (recordings, classes); got shape {p.shape}")
    if p.shape[0] == 0:
        raise ValueError(f"{name} has no recordings")
    if not np.isfinite(p).all():
        n, k = np.argwhere(~np.isfinite(p))[0]
        raise ValueError(f"{name}[{n}, {k}] is {p[n, k]}; probabilities must be finite")
    return p


def apply_thresholds(probs: np.ndarray, thresholds: float | Sequence[float] | np.ndarray
                     ) -> np.ndarray:
    """``(N, K)`` bool outputs ``probs[:, k] >= thresholds[k]`` (one float: every class); a
    recording with no class over its threshold stays all-zero (no forced argmax)."""
    p = _probabilities(probs)
    t = np.asarray(thresholds, dtype=np.float64)
    if t.ndim == 0:
        t = np.full(p.shape[1], float(t))
    if t.shape != (p.shape[1],):
        raise ValueError(f"thresholds must be one float or ({p.shape[1]},) for probs "
                         f"{p.shape}; got shape {t.shape}")
    if not np.isfinite(t).all():
        raise ValueError(f"thresholds must be finite; class {int(np.argmax(~np.isfinite(t)))} "
                         f"is {t[~np.isfinite(t)][0]}")
    return p >= t


def choose_thresholds(probs: np.ndarray, labels: np.ndarray, *,
                      grid: Sequence[float] | None = DEFAULT_GRID) -> np.ndarray:
    """Per-class thresholds ``(K,)``: each class's candidate (`grid`, or None: its own
    probabilities) with the best validation F-measure; ties and rule: docs/training.md."""
    p = _probabilities(probs)
    y = _binary(labels, "labels", p.shape[1])
    if p.shape[0] != y.shape[0]:
        raise ValueError(f"probs {p.shape} and labels {y.shape} differ in recordings")
    if grid is not None:
        candidates_all = np.asarray(grid, dtype=np.float64)
        if candidates_all.ndim != 1 or candidates_all.size == 0 \
                or not np.isfinite(candidates_all).all():
            raise ValueError(f"grid must be a non-empty list of finite thresholds; got {grid!r}")
        candidates_all = np.unique(candidates_all)  # sorted: ties go to the smallest
    thresholds = np.empty(p.shape[1])
    for k in range(p.shape[1]):
        candidates = np.unique(p[:, k]) if grid is None else candidates_all
        ordered = np.sort(p[:, k])
        positives = np.sort(p[y[:, k], k])
        # Counts of p >= t for every candidate t at once, from the sorted probabilities.
        output = ordered.size - np.searchsorted(ordered, candidates, side="left")
        tp = positives.size - np.searchsorted(positives, candidates, side="left")
        fp = output - tp
        fn = positives.size - tp
        denominator = 2 * tp + fp + fn
        f = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 1.0)
        # lexsort: the last key is primary; smallest threshold last among equals.
        best = np.lexsort((candidates, fp + fn, -f))[0]
        thresholds[k] = candidates[best]
    return thresholds


def challenge_metrics(probs: np.ndarray, labels: np.ndarray,
                      thresholds: float | Sequence[float] | np.ndarray,
                      class_codes: Sequence[str] | None = None) -> dict[str, Any]:
    """The Challenge 2021 metrics of `probs` ``(N, K)`` thresholded at `thresholds` (one
    float, or ``(K,)``) against 0/1 `labels`, columns named by `class_codes` (None: in the
    Challenge table's order): `challenge_score_parts`, ``f_measure``, ``accuracy``,
    ``f_measure_per_class``, ``classes``, ``num_recordings``, ``num_no_output``."""
    classes = _challenge_table()[0]
    p = _probabilities(probs)
    named = len(classes) if class_codes is None else len(class_codes)
    if p.shape[1] != named:
        what = "the Challenge table has" if class_codes is None else "class_codes name"
        raise ValueError(f"probs has {p.shape[1]} classes; {what} {named}")
    order = (np.arange(len(classes)) if class_codes is None
             else class_order(class_codes, classes))
    outputs = apply_thresholds(p, thresholds)[:, order]
    y = _binary(labels, "labels", p.shape[1])
    if y.shape[0] != p.shape[0]:
        raise ValueError(f"probs {p.shape} and labels {y.shape} differ in recordings")
    y = y[:, order]
    parts = challenge_score_parts(y, outputs)
    macro_f, per_class = f_measure(y, outputs)
    return {
        **parts,
        "f_measure": macro_f,
        "accuracy": accuracy(y, outputs),
        "f_measure_per_class": dict(zip(classes, per_class.tolist(), strict=True)),
        "classes": classes,
        "num_recordings": int(p.shape[0]),
        "num_no_output": int((~outputs.any(axis=1)).sum()),
    }
