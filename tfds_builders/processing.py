"""Per-record work done in the builders' worker processes.

Deliberately free of TFDS imports: worker processes import only this module (and
`cardioformer_jax.data.preprocessing`, hence wfdb and numpy), which keeps their start-up short.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

from cardioformer_jax.data import preprocessing

Mode = Literal["segments", "beats"]

Reader = Callable[[str, Sequence[str]], tuple[np.ndarray, float, tuple[str, ...]]]
"""A record reader other than WFDB's: `(path, lead_names) -> (signal (n, C) in mV with those
leads in that order, fs, notes)`, raising `RecordError`; must be picklable (a module-level
function). `notes` name recoverable quirks it corrected (counted in the metadata)."""


@dataclasses.dataclass(frozen=True)
class RecordTask:
    """One source record and what every example cut from it carries.

    `path` is the absolute record path without extension; `record_id` the path relative to
    the dataset root (stable across machines, used as example key prefix).
    """

    path: str
    record_id: str
    subject_id: int
    label: int
    age: float = -1.0
    sex: int = -1
    labels: tuple[int, ...] | None = None


@dataclasses.dataclass(frozen=True)
class RecordResult:
    """Samples `(k, T, C)` float32 of a record, or why it was skipped; `notes`: what the
    reader corrected in a used record."""

    samples: np.ndarray | None
    error_kind: str | None = None
    error: str | None = None
    notes: tuple[str, ...] = ()


def process_record(
    task: RecordTask,
    *,
    mode: Mode,
    expected_fs: float | None,
    lead_names: Sequence[str],
    beat_rule: str = "port",
    target_fs: float = preprocessing.TARGET_FS,
    segment_length: int = preprocessing.SEGMENT_LENGTH,
    reader: Reader | None = None,
) -> RecordResult:
    """Reads and prepares one record, its leads matched by name to `lead_names` (so a
    record that stores them in another order is reordered); a `RecordError` (e.g. a lead
    missing: ``lead_mismatch``) becomes a skipped result.

    Other exceptions propagate: they are bugs, not bad input, and should stop the build.
    With a `reader` (segments only), records are read by it instead of wfdb.
    """
    notes: tuple[str, ...] = ()
    try:
        if reader is not None:
            if mode != "segments":
                raise ValueError("a record reader is supported for segment datasets only")
            signal, fs, notes = reader(task.path, lead_names)
            if expected_fs is not None and not math.isclose(fs, expected_fs):
                raise preprocessing.RecordError(
                    task.path, "wrong_fs", f"sampling rate {fs} Hz, expected {expected_fs}")
            samples = preprocessing.signal_segments(
                signal, fs, path=task.path, target_fs=target_fs, length=segment_length)
        elif mode == "segments":
            samples = preprocessing.record_segments(
                task.path, expected_fs=expected_fs, lead_names=lead_names,
                target_fs=target_fs, length=segment_length,
            )
        elif mode == "beats":
            samples = preprocessing.record_heartbeats(
                task.path, expected_fs=expected_fs, lead_names=lead_names, rule=beat_rule
            )
        else:
            raise ValueError(f"unknown mode {mode!r}")
    except preprocessing.RecordError as err:
        return RecordResult(samples=None, error_kind=err.kind, error=str(err))
    return RecordResult(samples=samples, notes=tuple(notes))
