"""Metric logging: TensorBoard event files + ``metrics.jsonl``, console lines, atomic JSON.

Only process 0 writes (``jax.process_index() == 0``); on other processes ``MetricWriter``
is a no-op, so the training loop can call it unconditionally in multi-host runs.
TensorBoard files are written with tensorboardX (no TensorFlow needed).
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
from absl import logging

JSONL_NAME = "metrics.jsonl"
_RESERVED_KEYS = ("step", "split", "wall_time")


def _to_float(value: Any) -> float:
    """Python float from a Python/numpy/jax scalar (fetching device arrays)."""
    arr = np.asarray(jax.device_get(value))
    if arr.size != 1:
        raise ValueError(f"expected a scalar, got shape {arr.shape}")
    return float(arr.reshape(()))


def _finite_or_none(x: float) -> float | None:
    # Strict JSON has no NaN/Infinity; null keeps every line parseable by any reader.
    return x if math.isfinite(x) else None


def to_jsonable(obj: Any) -> Any:
    """Converts numpy/jax values, tuples and paths to JSON types; NaN/inf become None."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (str, bool)) or obj is None:
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return _finite_or_none(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (np.ndarray, np.generic, jax.Array)):
        arr = np.asarray(jax.device_get(obj))
        return to_jsonable(arr.tolist())  # tolist() yields Python scalars / nested lists
    raise TypeError(f"cannot convert {type(obj).__name__} to JSON")


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Writes ``obj`` as strict JSON atomically (temp file in the same dir, then rename).

    Readers never see a half-written file, and a crash leaves the previous version.
    Parent directories are created. NaN/inf are written as null (see ``to_jsonable``).
    Local file systems only (``os.replace``); callers decide which process writes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(to_jsonable(obj), indent=indent, allow_nan=False, sort_keys=False)
    # Unique name: concurrent writers (other processes/threads) never share a temp file.
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}.{uuid.uuid4().hex}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class MetricWriter:
    """Writes scalars to TensorBoard and ``<workdir>/metrics.jsonl`` on process 0.

    Each ``write_scalars`` call appends one JSON object per line::

        {"step": 3, "split": "val", "wall_time": 1.7e9, "f1": 0.81, "auroc": null}

    (NaN/inf as null) and adds ``<split>/<name>`` scalars to the event file. The JSONL
    file is opened in append mode (a resumed run continues it) and flushed on every write
    so a crash leaves only complete lines. Use as a context manager or call ``close``.

    Args:
      workdir: directory for ``metrics.jsonl`` and, unless ``tensorboard_dir`` is given,
        the event files (so ``tensorboard --logdir <workdir>`` works).
      tensorboard_dir: optional separate directory for event files.
      enabled: force writing on/off; default ``jax.process_index() == 0``.
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        tensorboard_dir: str | os.PathLike | None = None,
        enabled: bool | None = None,
    ) -> None:
        self.enabled = jax.process_index() == 0 if enabled is None else bool(enabled)
        self.workdir = Path(workdir)
        self.jsonl_path = self.workdir / JSONL_NAME
        self._jsonl = None
        self._tb = None
        if not self.enabled:
            return
        # Imported here: non-writing processes never touch tensorboardX.
        from tensorboardX import SummaryWriter

        self.workdir.mkdir(parents=True, exist_ok=True)
        tb_dir = self.workdir if tensorboard_dir is None else Path(tensorboard_dir)
        self._tb = SummaryWriter(logdir=os.fspath(tb_dir))
        self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")

    def write_scalars(
        self, step: int, scalars: Mapping[str, Any], split: str | None = None
    ) -> None:
        """Writes a dict of scalars (Python, numpy or jax) for ``step`` under ``split``."""
        if not self.enabled:
            return
        if self._jsonl is None:
            raise RuntimeError("MetricWriter is closed")
        values = {str(k): _to_float(v) for k, v in scalars.items()}
        clash = set(values) & set(_RESERVED_KEYS)
        if clash:
            raise ValueError(f"metric names {sorted(clash)} are reserved in metrics.jsonl")
        step = int(step)
        wall_time = time.time()
        for name, value in values.items():
            tag = f"{split}/{name}" if split else name
            self._tb.add_scalar(tag, value, global_step=step, walltime=wall_time)
        record = {"step": step, "split": split, "wall_time": wall_time}
        record.update({k: _finite_or_none(v) for k, v in values.items()})
        self._jsonl.write(json.dumps(record, allow_nan=False) + "\n")
        self._jsonl.flush()

    def flush(self) -> None:
        """Flushes both outputs to disk."""
        if self._tb is not None:
            self._tb.flush()
        if self._jsonl is not None:
            self._jsonl.flush()

    def close(self) -> None:
        """Flushes and closes; further writes raise. Safe to call twice."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def format_scalars(
    scalars: Mapping[str, Any], step: int | None = None, split: str | None = None,
    digits: int = 4,
) -> str:
    """One-line summary, e.g. ``"[val] step 3 | f1=0.8123 | loss=0.4100"``."""
    parts = []
    head = " ".join(p for p in (f"[{split}]" if split else "",
                                "" if step is None else f"step {int(step)}") if p)
    if head:
        parts.append(head)
    parts.extend(f"{k}={_to_float(v):.{digits}f}" for k, v in scalars.items())
    return " | ".join(parts)


def log_scalars(
    scalars: Mapping[str, Any], step: int | None = None, split: str | None = None,
    digits: int = 4,
) -> None:
    """Logs ``format_scalars(...)`` with absl at INFO level, on process 0 only."""
    if jax.process_index() == 0:
        logging.info("%s", format_scalars(scalars, step=step, split=split, digits=digits))
