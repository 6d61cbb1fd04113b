"""Subject-independent splits (docs/data.md, Splits) and the disjointness check.

No TFDS import: the rules are tested on their own and the builders only call them.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping

import numpy as np

SPLITS: tuple[str, ...] = ("train", "validation", "test")


def subject_splits(
    subject_classes: Mapping[int, int],
    bounds: tuple[float, float],
    *,
    seed: int | None = None,
) -> dict[int, str]:
    """Assigns every subject to "train", "validation" or "test".

    Per class, subjects are taken in ascending id order (reference rule), or in an order shuffled
    with `seed` when one is given (the seeded random alternative). With `n` subjects in the
    class and `bounds = (a, b)`: the first `floor(a*n)` go to train, the next ones up to
    `floor(b*n)` to validation, the rest to test.
    """
    a, b = bounds
    if not 0.0 <= a <= b <= 1.0:
        raise ValueError(f"split bounds must satisfy 0 <= a <= b <= 1, got {bounds}")
    by_class: dict[int, list[int]] = {}
    for subject, cls in subject_classes.items():
        by_class.setdefault(cls, []).append(subject)
    rng = np.random.default_rng(seed) if seed is not None else None
    assignment: dict[int, str] = {}
    for cls in sorted(by_class):
        subjects = sorted(by_class[cls])
        if rng is not None:
            subjects = [subjects[i] for i in rng.permutation(len(subjects))]
        n = len(subjects)
        # Plain float products, as the reference computes them (0.7 * 90 floors to 62).
        n_train = math.floor(a * n)
        n_val_end = math.floor(b * n)
        for i, subject in enumerate(subjects):
            assignment[subject] = (
                "train" if i < n_train else "validation" if i < n_val_end else "test"
            )
    return assignment


def _unit_hash(text: str) -> int:
    """The first 8 bytes of SHA-256(text) as an unsigned integer (stable everywhere)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def record_hash_split(key: str, bounds: tuple[float, float], *, seed: int = 0) -> str:
    """"train", "validation" or "test" for one record from a hash of `key` (its name).

    u = SHA-256 of ``"<seed>:<key>"``, first 8 bytes / 2**64, uniform in [0, 1): train if
    u < a, validation if u < b, else test (`bounds = (a, b)`). Each record's split depends
    on its own key only, so adding or removing records never moves another one.
    """
    a, b = bounds
    if not 0.0 <= a <= b <= 1.0:
        raise ValueError(f"split bounds must satisfy 0 <= a <= b <= 1, got {bounds}")
    u = _unit_hash(f"{seed}:{key}") / 2.0**64
    return "train" if u < a else "validation" if u < b else "test"


def stable_id(key: str) -> int:
    """A stable non-negative 63-bit integer id of `key` (SHA-256 based), e.g. a subject id
    for sources without one."""
    return _unit_hash(key) >> 1


def fold_split(fold: int, *, validation_folds: Iterable[int] = (9,), test_folds=(10,)) -> str:
    """PTB-XL's recommended split by `strat_fold`: 1-8 train, 9 validation, 10 test."""
    if fold in tuple(test_folds):
        return "test"
    if fold in tuple(validation_folds):
        return "validation"
    return "train"


class SplitLeakError(AssertionError):
    """A subject appears in more than one split."""


def check_disjoint(subjects_by_split: Mapping[str, Iterable[int]]) -> None:
    """Raises SplitLeakError naming the subjects shared by two splits, if any."""
    sets = {split: set(subjects) for split, subjects in subjects_by_split.items()}
    names = sorted(sets)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            shared = sets[first] & sets[second]
            if shared:
                examples = sorted(shared)[:10]
                raise SplitLeakError(
                    f"{len(shared)} subject(s) appear in both '{first}' and '{second}' "
                    f"(e.g. {examples}); splits must be subject-independent"
                )
