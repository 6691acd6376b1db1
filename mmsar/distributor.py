"""Where a build's per-source and per-shard tasks run: in this process, a local process pool, or an
existing Dask cluster.

Why results come back in submission order: every task is a pure function of its arguments writing its own
files, and the build merges results in the order it asked for them, so the output is identical whichever
distributor ran the work and however many workers it had.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from d2c.errors import D2CError, UsageError

log = logging.getLogger(__name__)

DISTRIBUTORS = ("local", "dask")


def _tick(result: Any, done: Callable[[], Any] | None) -> Any:
    if done is not None:
        done()
    return result


class Distributor:
    """``map(fn, args)`` -> results in order; ``fn`` is a module-level function, ``args`` tuples;
    ``done()`` (progress) is called as each result comes back."""

    name = "inline"

    def map(self, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]],
            done: Callable[[], Any] | None = None) -> list[Any]:
        return [_tick(fn(*a), done) for a in args]

    def close(self) -> None:
        pass

    def __enter__(self) -> Distributor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalDistributor(Distributor):
    """A process pool (spawned workers: safe next to threads); one worker, or one task, runs inline."""

    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        import os

        self.workers = max(1, workers if workers is not None else min(4, os.cpu_count() or 1))
        self._pool = None

    def map(self, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]],
            done: Callable[[], Any] | None = None) -> list[Any]:
        if self.workers == 1 or len(args) <= 1:
            return super().map(fn, args, done)
        if self._pool is None:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"))
        from concurrent.futures.process import BrokenProcessPool

        try:
            futures = [self._pool.submit(fn, *a) for a in args]
            return [_tick(f.result(), done) for f in futures]
        except BrokenProcessPool:  # a worker was killed (out of memory?) or crashed: say so, no traceback
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            raise D2CError("a worker process died (killed, out of memory or crashed); sources staged "
                           "completely are kept: run the build again") from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


class DaskDistributor(Distributor):
    """Tasks on an existing Dask cluster at ``scheduler`` (``tcp://host:8786`` or an in-process address)."""

    name = "dask"

    def __init__(self, scheduler: str) -> None:
        try:
            from dask.distributed import Client
        except ImportError:
            raise UsageError(
                "--distributor dask needs dask.distributed: pip install 'sarclip-toolkit[dask]'") from None
        try:
            self.client = Client(scheduler, set_as_default=False, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise UsageError(f"--scheduler {scheduler}: cannot connect to the Dask scheduler ({exc})") from None

    def map(self, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]],
            done: Callable[[], Any] | None = None) -> list[Any]:
        if not args:
            return []
        futures = [self.client.submit(fn, *a, pure=False) for a in args]
        return [_tick(f.result(), done) for f in futures]

    def close(self) -> None:
        self.client.close()


def make_distributor(kind: str = "local", *, scheduler: str | None = None,
                     workers: int | None = None) -> Distributor:
    if kind not in DISTRIBUTORS:
        raise UsageError(f"--distributor must be one of {', '.join(DISTRIBUTORS)}, got {kind!r}")
    if kind == "dask":
        if not scheduler:
            raise UsageError("--distributor dask needs --scheduler ADDR (the address of a running Dask scheduler)")
        return DaskDistributor(scheduler)
    if scheduler:
        raise UsageError("--scheduler is only used with --distributor dask")
    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    return LocalDistributor(workers)
