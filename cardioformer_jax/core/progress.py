"""Progress of long loops: a tqdm bar on a terminal, plain lines in a log.

No JAX here: the dataset builders use it, and they run without it.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

import tqdm

EVERY_PERCENT = 10  # a plain line each time the count passes another 10% of the total
EVERY_SECONDS = 30.0  # and at least this often (also when the total is unknown)
MIN_SECONDS = 2.0  # but percentage lines no closer together than this


def format_duration(seconds: float) -> str:
    """``"12s"``, ``"3m05s"``, ``"1h02m"``: rounded half up to the second (from one hour on,
    to the minute); ValueError when negative or not finite."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"duration {seconds!r}: expected a finite number >= 0")
    whole = math.floor(seconds + 0.5)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    hours, minutes = divmod(math.floor(seconds / 60 + 0.5), 60)
    return f"{hours}h{minutes:02d}m"


def is_terminal(stream: Any) -> bool:
    """Whether `stream` is an interactive terminal (False for files, pipes, closed streams)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class PlainProgress:
    """Progress as plain lines on `stream` (docs/training.md, "Logs"); `clock` for tests."""

    def __init__(self, total: int | None, desc: str, unit: str, stream: TextIO, *,
                 clock: Callable[[], float] = time.monotonic,
                 every_percent: int = EVERY_PERCENT, every_seconds: float = EVERY_SECONDS,
                 min_seconds: float = MIN_SECONDS):
        if total is not None and total < 0:
            raise ValueError(f"{desc}: total {total} must be >= 0 (or None: unknown)")
        if not 0 < every_percent <= 100:
            raise ValueError(f"{desc}: every_percent {every_percent} must be in 1..100")
        self.total = total or None
        self.desc, self.unit, self.stream, self.clock = desc, unit, stream, clock
        self.every_percent, self.every_seconds = every_percent, every_seconds
        self.min_seconds = min_seconds
        self.n = 0
        self._start = self._last_time = clock()
        self._last_step = 0
        self._written_n: int | None = None
        self._closed = False

    def _step(self) -> int:
        """How many `every_percent` steps of the total the count has passed."""
        return min(self.n * 100 // self.total, 100) // self.every_percent

    def line(self, now: float) -> str:
        """The line for the current count, e.g. ``"evaluating test: 30/100 batches (30%), 5s"``."""
        elapsed = format_duration(max(now - self._start, 0.0))
        if self.total is None:
            return f"{self.desc}: {self.n} {self.unit}, {elapsed}"
        percent = min(self.n * 100 // self.total, 100)
        return f"{self.desc}: {self.n}/{self.total} {self.unit} ({percent}%), {elapsed}"

    def _write(self, now: float) -> None:
        self.stream.write(self.line(now) + "\n")
        self.stream.flush()
        self._last_time, self._written_n = now, self.n
        if self.total is not None:
            self._last_step = self._step()

    def update(self, n: int = 1) -> None:
        """Counts `n` more; writes a line when one is due."""
        self.n += n
        now = self.clock()
        since = now - self._last_time
        if since >= self.every_seconds or (
                self.total is not None and since >= self.min_seconds
                and self._step() > self._last_step):
            self._write(now)

    def close(self) -> None:
        """Writes the final count (unless the last line showed it). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.n and self._written_n != self.n:
            self._write(self.clock())

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def progress(total: int | None, desc: str, unit: str, *, enabled: bool = True,
             stream: TextIO | None = None, **tqdm_options: Any) -> PlainProgress | tqdm.tqdm:
    """A reporter of `total` `unit`s (None: unknown) named `desc` on `stream` (default:
    `sys.stderr`): a tqdm bar (`tqdm_options`) on a terminal, else `PlainProgress` lines."""
    if not enabled:
        return tqdm.tqdm(total=total, disable=True)
    stream = sys.stderr if stream is None else stream
    if is_terminal(stream):
        return tqdm.tqdm(total=total, desc=desc, unit=f" {unit}", file=stream,
                         **tqdm_options)
    return PlainProgress(total, desc, unit, stream)


def track[T](items: Iterable[T], total: int | None, desc: str, unit: str, *,
             enabled: bool = True, **tqdm_options: Any) -> Iterator[T]:
    """`items`, each counted by `progress` when the caller has finished it."""
    with progress(total, desc, unit, enabled=enabled, **tqdm_options) as bar:
        for item in items:
            yield item
            bar.update()
