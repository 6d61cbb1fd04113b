"""Random crops in training, max/mean over strided windows in evaluation: the PTB-XL
benchmark suite's input protocol (docs/benchmarks.md, "Two input protocols")."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

AGGREGATIONS = ("max", "mean")


@dataclasses.dataclass(frozen=True)
class Windowing:
    """Model inputs of `length` samples (``input.seq_len``) cut from longer records; evaluation
    windows start every `stride` samples, their probabilities combined by `aggregation`."""

    length: int
    stride: int
    aggregation: str = "max"

    def starts(self, record_length: int) -> tuple[int, ...]:
        return window_starts(record_length, self.length, self.stride)


def stride_samples(seq_len: int, crop_seconds: float, stride_seconds: float) -> float:
    """The evaluation stride in samples: the crop is `seq_len` samples long, so the
    sampling rate is ``seq_len / crop_seconds``."""
    return stride_seconds * seq_len / crop_seconds


def config_problems(config: Any) -> list[str]:
    """What is wrong with the ``input`` section of a config beyond `config_lib.FIELDS`'
    checks of each field (empty when it is valid)."""
    section = config.input
    crop, stride = float(section.crop_seconds), float(section.eval_stride_seconds)
    if crop == 0:
        return []
    if crop < 0 or not math.isfinite(crop):
        return [f"input.crop_seconds={section.crop_seconds} must be 0 (whole records) or > 0"]
    problems = []
    if not stride > 0 or not math.isfinite(stride):
        problems.append(f"input.eval_stride_seconds={section.eval_stride_seconds} must be "
                        "> 0 when input.crop_seconds > 0")
    else:
        samples = stride_samples(int(config.input.seq_len), crop, stride)
        if abs(samples - round(samples)) > 1e-6 or round(samples) < 1:
            problems.append(
                f"input.eval_stride_seconds={stride} is {samples:g} samples at the "
                f"{config.input.seq_len / crop:g} Hz that input.seq_len="
                f"{config.input.seq_len} samples per input.crop_seconds={crop} imply; it "
                "must be a whole number of samples (>= 1)")
    return problems


def from_config(config: Any) -> Windowing | None:
    """The `Windowing` of a valid config, or None for whole records (``input.crop_seconds`` 0)."""
    section = config.input
    if not float(section.crop_seconds):
        return None
    seq_len = int(config.input.seq_len)
    stride = round(stride_samples(seq_len, float(section.crop_seconds),
                                  float(section.eval_stride_seconds)))
    return Windowing(seq_len, stride, str(section.eval_aggregation))


def window_starts(record_length: int, length: int, stride: int) -> tuple[int, ...]:
    """Starts of the windows of `length` samples at `stride` over a record: 0, stride,
    ... while ``start + length <= record_length`` (a shorter tail is not scored)."""
    if length < 1 or stride < 1:
        raise ValueError(f"window length {length} and stride {stride} must be >= 1")
    if record_length < length:
        raise ValueError(f"a record of {record_length} samples is shorter than the "
                         f"{length}-sample window (input.crop_seconds)")
    return tuple(range(0, record_length - length + 1, stride))


def cut_windows(signals: Any, windowing: Windowing) -> Any:
    """``(B, T, C)`` records -> ``(B, W, L, C)`` windows (NumPy or JAX arrays; static
    slices, so it traces to a fixed program). The batch axis stays first."""
    starts = windowing.starts(signals.shape[1])
    xp = np if isinstance(signals, np.ndarray) else _jnp()
    return xp.stack([signals[:, s:s + windowing.length] for s in starts], axis=1)


def aggregate(probs: Any, aggregation: str) -> Any:
    """``(B, W, K)`` window probabilities -> ``(B, K)`` per record."""
    if aggregation == "max":
        return probs.max(axis=1)
    if aggregation == "mean":
        return probs.mean(axis=1)
    raise ValueError(f"unknown window aggregation {aggregation!r}; use one of {AGGREGATIONS}")


def random_crops(signals: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """One uniformly random crop of `length` samples from each record of ``(B, T, C)``
    (start in [0, T - length], independently per record) -> ``(B, length, C)``."""
    batch, record_length = signals.shape[:2]
    window_starts(record_length, length, 1)  # the crop must fit
    starts = rng.integers(0, record_length - length + 1, size=batch)
    rows = np.arange(batch)[:, None]
    return signals[rows, starts[:, None] + np.arange(length)]


def _jnp() -> Any:
    import jax.numpy as jnp  # only for traced arrays; the input pipeline stays NumPy

    return jnp
