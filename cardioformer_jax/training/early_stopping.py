"""Early stopping on a validation metric, checkpointable (docs/training.md, "Protocol")."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

# Each field's Python type; checkpoints store bools as 0/1.
_TYPES = {
    "patience": int,
    "min_delta": float,
    "higher_is_better": bool,
    "best_metric": float,
    "best_epoch": int,
    "num_bad_epochs": int,
    "should_stop": bool,
}


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """Early-stopping state: an epoch improves iff its metric beats the best so far by
    *more* than ``min_delta`` (a NaN never does); after ``patience`` consecutive epochs
    without improvement ``should_stop`` becomes True and stays True."""

    patience: int = 10
    min_delta: float = 1e-5
    higher_is_better: bool = True
    best_metric: float | None = None  # -inf/+inf before the first update
    best_epoch: int = -1
    num_bad_epochs: int = 0  # consecutive epochs without improvement
    should_stop: bool = False

    def __post_init__(self) -> None:
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}")
        if not self.min_delta >= 0:
            raise ValueError(f"min_delta must be >= 0, got {self.min_delta}")
        if self.best_metric is None:
            # Worst possible value, so the first finite metric is always an improvement.
            worst = -math.inf if self.higher_is_better else math.inf
            object.__setattr__(self, "best_metric", worst)

    def update(self, metric: float, epoch: int) -> tuple[EarlyStopping, bool]:
        """Records the metric of ``epoch``; returns ``(new_state, is_best)``."""
        metric = float(metric)
        better = metric > self.best_metric + self.min_delta
        if not self.higher_is_better:
            better = metric < self.best_metric - self.min_delta
        if better:
            new = dataclasses.replace(
                self, best_metric=metric, best_epoch=int(epoch), num_bad_epochs=0
            )
            return new, True
        bad = self.num_bad_epochs + 1
        stop = self.should_stop or bad >= self.patience
        return dataclasses.replace(self, num_bad_epochs=bad, should_stop=stop), False

    def to_dict(self) -> dict[str, float | int]:
        """Flat dict of Python numbers (bools as 0/1) for checkpoints."""
        return {k: (int if t is bool else t)(getattr(self, k)) for k, t in _TYPES.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EarlyStopping:
        """Inverse of ``to_dict``; accepts numpy/0-d array values as restored by Orbax."""
        values = {k: bool(int(d[k])) if t is bool else t(d[k]) for k, t in _TYPES.items()}
        return cls(**values)
