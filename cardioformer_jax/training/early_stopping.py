"""Early stopping on a validation metric, as a checkpointable immutable dataclass.

docs/training.md, "Protocol".
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """Early-stopping state.

    An epoch is an improvement iff its metric beats the best so far by *more* than
    ``min_delta`` (``metric > best + min_delta`` when higher is better). After
    ``patience`` consecutive epochs without improvement ``should_stop`` becomes True and
    stays True. A NaN metric never counts as an improvement.

    Attributes:
      patience: non-improving epochs tolerated before stopping.
      min_delta: required margin of improvement (>= 0).
      higher_is_better: True for F1/accuracy/AUROC, False for a loss.
      best_metric: best value so far (-inf/+inf before the first update).
      best_epoch: epoch of ``best_metric`` (-1 before the first update).
      num_bad_epochs: consecutive epochs without improvement.
      should_stop: whether training should stop now.
    """

    patience: int = 10
    min_delta: float = 1e-5
    higher_is_better: bool = True
    best_metric: float | None = None
    best_epoch: int = -1
    num_bad_epochs: int = 0
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

    def is_improvement(self, metric: float) -> bool:
        """Whether ``metric`` beats the best so far by more than ``min_delta``."""
        metric = float(metric)
        if self.higher_is_better:
            return metric > self.best_metric + self.min_delta
        return metric < self.best_metric - self.min_delta

    def update(self, metric: float, epoch: int) -> tuple[EarlyStopping, bool]:
        """Records the metric of ``epoch``.

        Returns:
          ``(new_state, is_best)``; ``is_best`` tells the caller to keep this epoch's
          checkpoint as the result.
        """
        if self.is_improvement(metric):
            new = dataclasses.replace(
                self, best_metric=float(metric), best_epoch=int(epoch), num_bad_epochs=0
            )
            return new, True
        bad = self.num_bad_epochs + 1
        stop = self.should_stop or bad >= self.patience
        return dataclasses.replace(self, num_bad_epochs=bad, should_stop=stop), False

    def to_dict(self) -> dict[str, float | int]:
        """Flat dict of Python numbers (bools as 0/1) for checkpoints."""
        return {
            "patience": int(self.patience),
            "min_delta": float(self.min_delta),
            "higher_is_better": int(self.higher_is_better),
            "best_metric": float(self.best_metric),
            "best_epoch": int(self.best_epoch),
            "num_bad_epochs": int(self.num_bad_epochs),
            "should_stop": int(self.should_stop),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EarlyStopping:
        """Inverse of ``to_dict``; accepts numpy/0-d array values as restored by Orbax."""
        return cls(
            patience=int(d["patience"]),
            min_delta=float(d["min_delta"]),
            higher_is_better=bool(int(d["higher_is_better"])),
            best_metric=float(d["best_metric"]),
            best_epoch=int(d["best_epoch"]),
            num_bad_epochs=int(d["num_bad_epochs"]),
            should_stop=bool(int(d["should_stop"])),
        )
