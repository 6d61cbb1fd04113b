"""Ordered, memory-bounded parallel map over records.

Unlike `multiprocessing.Pool.imap`: at most `max_pending` chunks in flight; a dead worker
is an error.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures.process import BrokenProcessPool

# Workers fork from a fresh server process, not from the caller: the caller may be
# multithreaded (JAX, TFDS, tqdm's monitor), where fork() can deadlock. Preloading the
# record-processing module lets each worker start in milliseconds. Like "spawn", this
# start method re-imports the caller's main script in the workers, so scripts that build
# datasets need the usual `if __name__ == "__main__":` guard.
_START_METHOD = "forkserver"
_PRELOAD = ["tfds_builders.processing"]


def _apply_chunk[T, R](fn: Callable[[T], R], chunk: list[T]) -> list[R]:
    return [fn(item) for item in chunk]


def _chunks[T](items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


class OrderedPool:
    """Worker processes shared by several ordered maps (one per split of a build).

    Starting workers costs about a second each time (they import numpy, wfdb and the
    caller's main module), so a build starts them once. `num_workers <= 0` runs
    everything in the calling process (tests, debugging). Use as a context manager.
    """

    def __init__(self, num_workers: int):
        self.num_workers = num_workers
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None

    def __enter__(self) -> OrderedPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def _get_executor(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._executor is None:  # started lazily: a build may fail before any record
            context = multiprocessing.get_context(_START_METHOD)
            context.set_forkserver_preload(_PRELOAD)
            self._executor = concurrent.futures.ProcessPoolExecutor(
                self.num_workers, mp_context=context
            )
        return self._executor

    def map[T, R](
        self,
        fn: Callable[[T], R],
        items: Iterable[T],
        *,
        chunk_size: int = 4,
        max_pending: int | None = None,
    ) -> Iterator[R]:
        """Yields `fn(item)` for every item, in input order, at most `max_pending` chunks
        of `chunk_size` items in flight. `fn` must be picklable (a module-level function
        or a `functools.partial` of one)."""
        if self.num_workers <= 0:
            yield from map(fn, items)
            return
        executor = self._get_executor()
        max_pending = max_pending or 4 * self.num_workers
        pending: collections.deque[concurrent.futures.Future] = collections.deque()
        try:
            for chunk in _chunks(items, chunk_size):
                pending.append(executor.submit(_apply_chunk, fn, chunk))
                if len(pending) >= max_pending:
                    yield from pending.popleft().result()
            while pending:
                yield from pending.popleft().result()
        except BrokenProcessPool as err:
            raise RuntimeError(
                "a record-processing worker died (out of memory? or the calling script "
                "lacks an `if __name__ == '__main__':` guard, which multiprocessing's "
                f"'{_START_METHOD}' start method requires); rerun with num_workers=0 to debug"
            ) from err
        finally:
            for future in pending:  # generator closed early: drop the queued work
                future.cancel()


def ordered_map[T, R](
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    num_workers: int,
    chunk_size: int = 4,
    max_pending: int | None = None,
) -> Iterator[R]:
    """One-off `OrderedPool(num_workers).map(...)`; the workers stop when it ends."""
    with OrderedPool(num_workers) as pool:
        yield from pool.map(fn, items, chunk_size=chunk_size, max_pending=max_pending)
