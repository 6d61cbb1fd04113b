"""Metric logging: TensorBoard event files + ``metrics.jsonl``, console lines, atomic JSON.

Only process 0 writes; paths may be URLs. docs/training.md, "Logs".
"""

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
# The test metrics a run's closing line shows (when the results have them).
SUMMARY_METRICS = ("accuracy", "f1", "auroc", "fmax")  # those a result has are shown


def _to_float(value: Any) -> float:
    """Python float from a Python/numpy/jax scalar (fetching device arrays)."""
    arr = np.asarray(jax.device_get(value))
    if arr.size != 1:
        raise ValueError(f"expected a scalar, got shape {arr.shape}")
    return float(arr.reshape(()))


def _to_number(value: Any) -> int | float:
    """Like `_to_float`, but integers (Python or integer dtypes) stay ints: counters such
    as ``epoch`` then read ``3``, not ``3.0``, in logs and ``metrics.jsonl``."""
    arr = np.asarray(jax.device_get(value))
    if arr.size == 1 and arr.dtype.kind in "iu":
        return int(arr.reshape(()))
    return _to_float(value)


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


def quiet_orbax(min_level: int, target: std_logging.Filterer | None = None) -> None:
    """Drops Orbax's log records below `min_level` (e.g. its dozen INFO lines per checkpoint)
    from `target`, by default absl's logger; other sources are untouched. Orbax logs through
    absl like this program, so records are told apart by their source path."""

    def keep(record: std_logging.LogRecord) -> bool:
        return record.levelno >= min_level or "/orbax/" not in record.pathname

    (std_logging.getLogger("absl") if target is None else target).addFilter(keep)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Writes ``obj`` as strict JSON atomically (see `write_text_atomic`).

    Readers never see a half-written file, and a crash leaves the previous version.
    Parent directories are created. NaN/inf are written as null (see ``to_jsonable``).
    Callers decide which process writes.
    """
    text = json.dumps(to_jsonable(obj), indent=indent, allow_nan=False, sort_keys=False)
    write_text_atomic(path, text + "\n")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Replaces the file at `path` by `text` (UTF-8) in one step, creating parent dirs.

    A local path is written to a temp file in the same directory, synced and renamed over
    the target (``os.replace``). A URL (``gs://...``) is written directly: object stores
    have no rename, but replace an object atomically when its upload completes.
    """
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
        if tmp.exists():
            tmp.unlink()


class MetricWriter:
    """Writes scalars to TensorBoard and ``<workdir>/metrics.jsonl`` on process 0.

    Each ``write_scalars`` call adds one JSON object per line::

        {"step": 3, "split": "val", "wall_time": 1.7e9, "f1": 0.81, "auroc": null}

    (NaN/inf as null; integer values, such as counters, stay integers) and adds
    ``<split>/<name>`` scalars to the event file. A resumed run continues an existing
    ``metrics.jsonl``. Use as a context manager or call ``close``.

    How ``metrics.jsonl`` is written (``jsonl_mode``):

    * ``"append"`` (the default for a local workdir): the file is opened in append mode
      and flushed on every write, so a crash leaves only complete lines.
    * ``"rewrite"`` (the default, and the only mode, for a URL workdir such as
      ``gs://bucket/run``: objects cannot be appended to): the existing object is read
      once, the lines are kept in memory and the whole object is uploaded again, atomically
      (`write_text_atomic`), on the first write, then at the first write at least
      ``sync_seconds`` after the previous upload, on ``flush`` and on ``close``. The object
      always holds complete lines; a crash loses at most the last ``sync_seconds`` of them.

    Args:
      workdir: directory (or URL) for ``metrics.jsonl`` and, unless ``tensorboard_dir`` is
        given, the event files (so ``tensorboard --logdir <workdir>`` works).
      tensorboard_dir: optional separate directory for event files.
      enabled: force writing on/off; default ``jax.process_index() == 0``.
      jsonl_mode: ``"append"``, ``"rewrite"`` or None (by the kind of workdir, see above).
      sync_seconds: the upload interval of ``"rewrite"`` mode.
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
        self._open = False
        self._jsonl = None  # "append": the open file
        self._chunks: list[str] = []  # "rewrite": the whole file's text
        self._dirty = False
        self._last_sync = -math.inf
        self._tb = None
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
            self._chunks.append(self.jsonl_path.read_text(encoding="utf-8"))
        self._open = True

    def write_scalars(
        self, step: int, scalars: Mapping[str, Any], split: str | None = None
    ) -> None:
        """Writes a dict of scalars (Python, numpy or jax) for ``step`` under ``split``."""
        if not self.enabled:
            return
        if not self._open:
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
            self._dirty = True
            if time.monotonic() - self._last_sync >= self.sync_seconds:
                self._sync()

    def _sync(self) -> None:
        text = "".join(self._chunks)
        self._chunks = [text]
        write_text_atomic(self.jsonl_path, text)
        self._dirty = False
        self._last_sync = time.monotonic()

    def flush(self) -> None:
        """Flushes both outputs (in ``"rewrite"`` mode: uploads unsaved lines)."""
        if self._tb is not None:
            self._tb.flush()
        if self._jsonl is not None:
            self._jsonl.flush()
        if self._dirty:
            self._sync()

    def close(self) -> None:
        """Flushes and closes; further writes raise. Safe to call twice."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        self._open = False
        if self._dirty:
            self._sync()

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def format_scalars(
    scalars: Mapping[str, Any], step: int | None = None, split: str | None = None,
    digits: int = 4, progress: str | None = None,
) -> str:
    """One-line summary, e.g. ``"[val] step 3 | f1=0.8123 | loss=0.4100 | epoch=2"``.

    Integer values (counters) are written as integers, the others with `digits` decimals.
    `progress`, e.g. `format_progress`'s ``"step 3/640 (0.4%)"``, replaces ``step N``.
    """
    parts = []
    step_text = progress if progress is not None else (
        None if step is None else f"step {int(step)}")
    head = " ".join(p for p in (f"[{split}]" if split else None, step_text) if p)
    if head:
        parts.append(head)
    parts.extend(f"{k}={_format_number(v, digits)}" for k, v in scalars.items())
    return " | ".join(parts)


def _format_number(value: Any, digits: int) -> str:
    number = _to_number(value)
    return str(number) if isinstance(number, int) else f"{number:.{digits}f}"


def log_scalars(
    scalars: Mapping[str, Any], step: int | None = None, split: str | None = None,
    digits: int = 4, progress: str | None = None,
) -> None:
    """Logs ``format_scalars(...)`` with absl at INFO level, on process 0 only."""
    if jax.process_index() == 0:
        logging.info("%s", format_scalars(scalars, step=step, split=split, digits=digits,
                                          progress=progress))


def format_progress(step: int, total: int | None, elapsed_seconds: float,
                    timed_steps: int | None = None) -> str:
    """``"step 120/640 (18.7%, ETA 3m05s)"``: where a run is and when it should end.

    The ETA is the remaining steps at the measured rate, `timed_steps` steps (default
    `step`) in `elapsed_seconds`; a caller that starts the clock later (after a first step
    that compiled, or on resuming) passes the steps since. Edge cases:

    * `total` unknown (None or <= 0): ``"step 120"``;
    * no rate yet (`timed_steps` or `elapsed_seconds` <= 0, e.g. at step 0, or an
      infinite `elapsed_seconds`):
      ``"step 0/640 (0.0%)"``, no ETA;
    * the percentage is rounded down (``100.0%`` only at the last step) and capped at 100,
      the ETA at ``0s``, for a `step` beyond `total`.
    """
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
    """The closing line of a one-seed run: the best epoch, its test metrics (those of
    `SUMMARY_METRICS` it has) and where ``results.json`` is, e.g.
    ``"best epoch 7: test accuracy=0.8596, f1=0.8412, auroc=0.9606; results: w/results.json"``.

    Without an evaluated epoch (`best_epoch` None): ``"no evaluated epoch; results: ..."``.
    """
    if best_epoch is None:
        return _format_summary("no evaluated epoch", {}, results_path)
    return _format_summary(f"best epoch {int(best_epoch)}", test or {}, results_path, digits)


def format_seeds_summary(seeds: Sequence[int], test_formatted: Mapping[str, str],
                         results_path: str | os.PathLike) -> str:
    """The closing line of a multi-seed run, from the aggregate's ``"mean ± std"`` test
    metrics (`metrics.format_mean_std`, in %), e.g. ``"5 seeds (41-45): test
    accuracy=85.96 ± 1.00, f1=84.12 ± 0.50, auroc=96.06 ± 0.11 (mean ± std, %); results:
    w/results.json"``. Consecutive seeds are shown as a range, others listed.
    """
    seeds = [int(s) for s in seeds]
    consecutive = len(seeds) > 1 and seeds == list(range(seeds[0], seeds[0] + len(seeds)))
    names = f"{seeds[0]}-{seeds[-1]}" if consecutive else ", ".join(map(str, seeds))
    return _format_summary(f"{len(seeds)} seeds ({names})", test_formatted, results_path,
                           note=" (mean ± std, %)")
