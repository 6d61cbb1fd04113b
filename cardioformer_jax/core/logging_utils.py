"""TensorBoard + ``metrics.jsonl``, console lines, atomic JSON (docs/training.md, "Logs")."""

from __future__ import annotations

import json
import logging as std_logging
import math
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from absl import logging

from cardioformer_jax.core import paths
from cardioformer_jax.core.progress import format_duration

JSONL_NAME = "metrics.jsonl"
_RESERVED_KEYS = ("step", "split", "wall_time")
SUMMARY_METRICS = ("accuracy", "f1", "auroc", "fmax")  # a run's closing line: those it has


def _to_number(value: Any) -> int | float:
    """Python float of a Python/numpy/jax scalar; integers stay ints (``epoch`` logs ``3``)."""
    arr = np.asarray(jax.device_get(value))
    if arr.size != 1:
        raise ValueError(f"expected a scalar, got shape {arr.shape}")
    return int(arr.reshape(())) if arr.dtype.kind in "iu" else float(arr.reshape(()))


def _finite_or_none(x: float) -> float | None:
    # Strict JSON has no NaN/Infinity; null keeps every line parseable by any reader.
    return x if math.isfinite(x) else None


def to_jsonable(obj: Any) -> Any:
    """Converts numpy/jax values, tuples and paths to JSON types; NaN/inf become None."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (str, bool, int)) or obj is None:
        return obj
    if isinstance(obj, float):
        return _finite_or_none(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (np.ndarray, np.generic, jax.Array)):
        arr = np.asarray(jax.device_get(obj))
        return to_jsonable(arr.tolist())  # tolist() yields Python scalars / nested lists
    raise TypeError(f"cannot convert {type(obj).__name__} to JSON")


def quiet_orbax(min_level: int, target: std_logging.Filterer | None = None) -> None:
    """Drops Orbax's records below `min_level` from `target` (default: absl's logger, which
    Orbax logs through too: records are told apart by their source path)."""

    def keep(record: std_logging.LogRecord) -> bool:
        return record.levelno >= min_level or "/orbax/" not in record.pathname

    (std_logging.getLogger("absl") if target is None else target).addFilter(keep)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Writes ``obj`` as strict JSON (`to_jsonable`) with `write_text_atomic`."""
    text = json.dumps(to_jsonable(obj), indent=indent, allow_nan=False)
    write_text_atomic(path, text + "\n")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Replaces the file at `path` by `text` (UTF-8) in one step, creating parent dirs (a
    URL directly: an object store replaces an object atomically when its upload completes)."""
    path = paths.resolve_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if paths.is_url(path):
        path.write_text(text, encoding="utf-8")
        return
    # Unique name: concurrent writers (other processes/threads) never share a temp file.
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}.{uuid.uuid4().hex}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class MetricWriter:
    """Scalars to TensorBoard (`tensorboard_dir`, default `workdir`) and a line per
    `write_scalars` in ``<workdir>/metrics.jsonl`` (NaN as null), by process 0 by default.

    `jsonl_mode` (None: by the workdir): ``"append"`` (local; flushed per line) or
    ``"rewrite"`` (a URL, which cannot be appended to: uploaded again atomically at most
    every `sync_seconds`, and on `flush` and `close`). A resumed run continues the file.
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        tensorboard_dir: str | os.PathLike | None = None,
        enabled: bool | None = None,
        *,
        jsonl_mode: str | None = None,
        sync_seconds: float = 60.0,
    ) -> None:
        self.enabled = jax.process_index() == 0 if enabled is None else bool(enabled)
        self.workdir = paths.resolve_path(workdir)
        self.jsonl_path = self.workdir / JSONL_NAME
        url = paths.is_url(self.workdir)
        self.jsonl_mode = jsonl_mode or ("rewrite" if url else "append")
        if self.jsonl_mode not in ("append", "rewrite"):
            raise ValueError(f"jsonl_mode={jsonl_mode!r}: use 'append' or 'rewrite'")
        if self.jsonl_mode == "append" and url:
            raise ValueError(f"{self.jsonl_path} is a URL: objects cannot be appended to, "
                             f"use jsonl_mode='rewrite'")
        self.sync_seconds = float(sync_seconds)
        self._jsonl = None  # "append": the open file
        # "rewrite": the file's text as last written, then the lines not written yet.
        self._chunks = [""]
        self._last_sync = -math.inf
        self._tb = None  # None once closed
        if not self.enabled:
            return
        # Imported here: non-writing processes never touch tensorboardX.
        from tensorboardX import SummaryWriter

        self.workdir.mkdir(parents=True, exist_ok=True)
        tb_dir = self.workdir if tensorboard_dir is None else paths.resolve_path(tensorboard_dir)
        self._tb = SummaryWriter(logdir=os.fspath(tb_dir))
        if self.jsonl_mode == "append":
            self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")
        elif self.jsonl_path.exists():
            self._chunks = [self.jsonl_path.read_text(encoding="utf-8")]

    def write_scalars(
        self, step: int, scalars: Mapping[str, Any], split: str | None = None
    ) -> None:
        """Writes a dict of scalars (Python, numpy or jax) for ``step`` under ``split``."""
        if not self.enabled:
            return
        if self._tb is None:
            raise RuntimeError("MetricWriter is closed")
        values = {str(k): _to_number(v) for k, v in scalars.items()}
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
        line = json.dumps(record, allow_nan=False) + "\n"
        if self._jsonl is not None:
            self._jsonl.write(line)
            self._jsonl.flush()
        else:
            self._chunks.append(line)
            if time.monotonic() - self._last_sync >= self.sync_seconds:
                self._sync()

    def _sync(self) -> None:
        text = "".join(self._chunks)
        write_text_atomic(self.jsonl_path, text)
        self._chunks = [text]  # written: no longer pending
        self._last_sync = time.monotonic()

    def flush(self) -> None:
        """Flushes both outputs (in ``"rewrite"`` mode: uploads unsaved lines)."""
        if self._tb is not None:
            self._tb.flush()
        if self._jsonl is not None:
            self._jsonl.flush()
        if len(self._chunks) > 1:
            self._sync()

    def close(self) -> None:
        """Flushes and closes; further writes raise. Safe to call twice."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if len(self._chunks) > 1:
            self._sync()

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def format_scalars(
    scalars: Mapping[str, Any], step: int | None = None, split: str | None = None,
    digits: int = 4, progress: str | None = None,
) -> str:
    """One line, e.g. ``"[val] step 3 | f1=0.8123 | loss=0.4100 | epoch=2"``; `progress`
    (`format_progress`'s text) replaces ``step N``."""
    if progress is None and step is not None:
        progress = f"step {int(step)}"
    head = " ".join(p for p in (f"[{split}]" if split else None, progress) if p)
    parts = [f"{k}={_format_number(v, digits)}" for k, v in scalars.items()]
    return " | ".join([head, *parts] if head else parts)


def _format_number(value: Any, digits: int) -> str:
    number = _to_number(value)
    return str(number) if isinstance(number, int) else f"{number:.{digits}f}"


def log_scalars(scalars: Mapping[str, Any], **kwargs: Any) -> None:
    """Logs ``format_scalars(scalars, **kwargs)`` with absl at INFO level, on process 0 only."""
    if jax.process_index() == 0:
        logging.info("%s", format_scalars(scalars, **kwargs))


def format_progress(step: int, total: int | None, elapsed_seconds: float,
                    timed_steps: int | None = None) -> str:
    """``"step 120/640 (18.7%, ETA 3m05s)"`` (docs/training.md, "Logs"): the ETA at the rate
    of `timed_steps` (default `step`) steps in `elapsed_seconds`, none without a rate;
    ``"step 120"`` without a `total`."""
    step = int(step)
    if total is None or total <= 0:
        return f"step {step}"
    total = int(total)
    tenths = min(step * 1000 // total, 1000)
    text = f"step {step}/{total} ({tenths // 10}.{tenths % 10}%"
    timed_steps = step if timed_steps is None else int(timed_steps)
    if timed_steps > 0 and 0 < elapsed_seconds < math.inf:
        remaining = max(total - step, 0) * elapsed_seconds / timed_steps
        text += f", ETA {format_duration(remaining)}"
    return text + ")"


def _format_summary(head: str, test: Mapping[str, Any], results_path: str | os.PathLike,
                    digits: int = 4, note: str = "") -> str:
    shown = [f"{name}={value if isinstance(value, str) else _format_number(value, digits)}"
             for name in SUMMARY_METRICS if (value := test.get(name)) is not None]
    metrics = f": test {', '.join(shown)}{note}" if shown else ""
    return f"{head}{metrics}; results: {os.fspath(results_path)}"


def format_run_summary(best_epoch: int | None, test: Mapping[str, Any] | None,
                       results_path: str | os.PathLike, digits: int = 4) -> str:
    """The closing line of a one-seed run (docs/training.md, "Logs")."""
    if best_epoch is None:
        return _format_summary("no evaluated epoch", {}, results_path)
    return _format_summary(f"best epoch {int(best_epoch)}", test or {}, results_path, digits)


def format_seeds_summary(seeds: Sequence[int], test_formatted: Mapping[str, str],
                         results_path: str | os.PathLike) -> str:
    """The closing line of a multi-seed run from `metrics.format_mean_std` texts
    (docs/training.md, "Logs"); consecutive seeds as a range."""
    seeds = [int(s) for s in seeds]
    consecutive = len(seeds) > 1 and seeds == list(range(seeds[0], seeds[0] + len(seeds)))
    names = f"{seeds[0]}-{seeds[-1]}" if consecutive else ", ".join(map(str, seeds))
    return _format_summary(f"{len(seeds)} seeds ({names})", test_formatted, results_path,
                           note=" (mean ± std, %)")
