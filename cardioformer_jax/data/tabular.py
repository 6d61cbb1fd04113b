"""Age and sex as model inputs (``model.tabular``; docs/model.md, "Age and sex")."""

from __future__ import annotations

import numpy as np

TABULAR_FEATURES: tuple[str, ...] = ("age", "age_known", "male", "female")
AGE_CAP = 90.0
AGE_CENTRE = 60.0
AGE_SCALE = 20.0


def tabular_features(age: np.ndarray | float, sex: np.ndarray | int) -> np.ndarray:
    """``(..., 4)`` float32 features (`TABULAR_FEATURES`) of ages in years (-1 or NaN:
    unknown) and sexes (0 male, 1 female, anything else unknown)."""
    age = np.asarray(age, np.float64)
    sex = np.asarray(sex)
    known = np.isfinite(age) & (age >= 0)
    capped = np.minimum(np.where(known, age, AGE_CENTRE), AGE_CAP)
    return np.stack([
        np.where(known, (capped - AGE_CENTRE) / AGE_SCALE, 0.0),
        known.astype(np.float64),
        (sex == 0).astype(np.float64),
        (sex == 1).astype(np.float64),
    ], axis=-1).astype(np.float32)
