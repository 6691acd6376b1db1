"""Where a build's tasks run: in this process, a local process pool, or a Dask cluster (a LocalCluster
when no scheduler is named).

Why results come back in submission order: every task is a pure function of its arguments writing its own
files, and the build merges results in the order it asked for them, so the output is identical whichever
distributor ran the work, however many workers it had, and however often a task was retried.

A task may take the results of tasks listed before it (:class:`mmsar.taskgraph.Result` in its
arguments); every distributor starts it once those are in, with the results in their places.

Retries: a task whose worker dies, or that raises something other than a :class:`D2CError` (bad input:
the same error again), runs again, up to ``retries`` times; then the build fails with a
:class:`mmsar.crash.TaskFailed` naming the task's units.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from d2c.errors import D2CError, UsageError
from mmsar.crash import TaskFailed, guarded
from mmsar.taskgraph import Schedule, dependencies, resolve

log = logging.getLogger(__name__)

DISTRIBUTORS = ("local", "dask")
Labels = Callable[[int], str]


def _default_label(i: int) -> str:
    return f"task {i}"


class Distributor:
    """``map(fn, args, done, stage=, labels=)`` -> results in order; ``fn`` is a module-level function,
    ``args`` tuples (:class:`mmsar.taskgraph.Result` in them: an earlier task's result); ``done(i)``
    (progress) is called as task ``i`` finishes; ``order``: the order to start ready tasks in (results
    still come back in ``args`` order). This base runs inline, in ``args`` order."""

    name = "inline"

    def __init__(self, retries: int = 2) -> None:
        if retries < 0:
            raise UsageError(f"--retries must be >= 0, got {retries}")
        self.retries = retries

    def map(self, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]], done: Callable[[int], Any] | None = None,
            *, stage: str = "staging", labels: Labels = _default_label,
            order: Sequence[int] | None = None) -> list[Any]:
        dependencies(args)  # the same check as the other distributors make
        out: list[Any] = []
        for i, a in enumerate(args):
            out.append(self._inline(fn, resolve(a, out), i, stage, labels))
            if done is not None:
                done(i)
        return out

    def parallelism(self) -> int:
        """How many tasks run at once (the task size's "auto" divides the work by it)."""
        return 1

    def _inline(self, fn: Callable[..., Any], a: tuple[Any, ...], i: int, stage: str, labels: Labels) -> Any:
        for attempt in range(self.retries + 1):
            try:
                return fn(*a)
            except D2CError:
                raise
            except Exception as exc:  # retried like a worker's failure
                if attempt == self.retries:
                    raise TaskFailed(f"{labels(i)} failed {attempt + 1} time(s); last: "
                                     f"{type(exc).__name__}: {exc}") from exc
                log.warning("%s: %s; retrying (%d of %d)", labels(i), exc, attempt + 1, self.retries)
        raise AssertionError("unreachable")

    def close(self) -> None:
        pass

    def __enter__(self) -> Distributor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalDistributor(Distributor):
    """A pool of spawned processes (:class:`mmsar.pool.ProcessPool`); one worker, or one task, runs inline.
    With ``preload`` (module names) the workers start at once and import those while the caller goes on."""

    name = "local"

    def __init__(self, workers: int | None = None, retries: int = 2, preload: tuple[str, ...] = ()) -> None:
        import os

        super().__init__(retries)
        self.workers = max(1, workers if workers is not None else min(4, os.cpu_count() or 1))
        self.preload = preload
        self._pool: Any = None
        if preload and self.workers > 1:
            self._start_pool().start()

    def _start_pool(self) -> Any:
        if self._pool is None:
            from mmsar.pool import ProcessPool

            self._pool = ProcessPool(self.workers, self.preload)
        return self._pool

    def map(self, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]], done: Callable[[int], Any] | None = None,
            *, stage: str = "staging", labels: Labels = _default_label,
            order: Sequence[int] | None = None) -> list[Any]:
        if self.workers == 1 or len(args) <= 1:
            return super().map(fn, args, done, stage=stage, labels=labels)
        calls = [(guarded, (stage, i, fn, a)) for i, a in enumerate(args)]
        return self._start_pool().run(calls, retries=self.retries, label=labels, done=done, order=order)

    def parallelism(self) -> int:
        return self.workers

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


class DaskDistributor(Distributor):
    """Tasks on a Dask cluster: the one at ``scheduler`` (``tcp://host:8786``), or, without one, a
    LocalCluster of ``workers`` single-threaded worker processes started here and closed with the build."""

    name = "dask"

    def __init__(self, scheduler: str | None, workers: int | None = None, retries: int = 2) -> None:
        super().__init__(retries)
        try:
            import dask
            from dask.distributed import Client, LocalCluster
        except ImportError:
            raise UsageError(
                "--distributor dask needs dask.distributed: pip install 'sarclip-toolkit[dask]'") from None
        self.cluster = None
        if scheduler is None:
            import os

            n = max(1, workers if workers is not None else min(4, os.cpu_count() or 1))
            # every worker death reaches map() at once (KilledWorker), which counts the retries itself;
            # no statistical profiler sampling the task's thread every 10 ms (our tasks are pure Python)
            with dask.config.set({"distributed.scheduler.allowed-failures": 0,
                                  "distributed.worker.profile.enabled": False}):
                self.cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                            dashboard_address=None, silence_logs=logging.ERROR)
            scheduler = self.cluster.scheduler_address
        try:
            self.client = Client(scheduler, set_as_default=False, timeout="20s")
        except (OSError, TimeoutError) as exc:
            if self.cluster is not None:
                self.cluster.close()
            raise UsageError(f"--scheduler {scheduler}: cannot connect to the Dask scheduler ({exc})") from None

    def map(self, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]], done: Callable[[int], Any] | None = None,
            *, stage: str = "staging", labels: Labels = _default_label,
            order: Sequence[int] | None = None) -> list[Any]:
        if not args:
            return []
        from dask.distributed import as_completed

        todo = Schedule(dependencies(args), order)
        attempts = [0] * len(args)
        results: list[Any] = [None] * len(args)
        futures: dict[Any, int] = {}
        pending = as_completed(loop=self.client.loop)

        slots = self.parallelism()

        def submit_ready() -> None:
            """As many ready tasks as the cluster runs at once, earlier in ``order`` first: a task handed
            to the scheduler is queued on some worker, and a queue there would keep it from the next
            free worker (and a task that is ready later from the order)."""
            while len(futures) < slots and (i := todo.pop()) is not None:
                fut = self.client.submit(guarded, stage, i, fn, resolve(args[i], results), pure=False,
                                         priority=-todo.place(i))
                futures[fut] = i
                pending.add(fut)

        submit_ready()
        try:
            for fut in pending:
                i = futures.pop(fut)
                if fut.status == "finished":
                    results[i] = fut.result()
                    todo.finish(i)
                    submit_ready()
                    if done is not None:
                        done(i)
                    continue
                exc = fut.exception()
                if isinstance(exc, D2CError):
                    raise exc
                attempts[i] += 1
                problem = f"{type(exc).__name__}: {exc}"
                if attempts[i] > self.retries:
                    raise TaskFailed(f"{labels(i)} failed {attempts[i]} time(s); last: {problem}")
                log.warning("%s: %s; retrying (%d of %d)", labels(i), problem, attempts[i], self.retries)
                todo.retry(i)
                submit_ready()
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        return results

    def parallelism(self) -> int:
        info = self.client.scheduler_info()
        return max(1, sum(w.get("nthreads", 1) for w in info.get("workers", {}).values()))

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def make_distributor(kind: str = "local", *, scheduler: str | None = None, workers: int | None = None,
                     retries: int = 2, preload: tuple[str, ...] = ()) -> Distributor:
    """``preload``: modules the local pool's workers import as they start (Dask workers import on use)."""
    if kind not in DISTRIBUTORS:
        raise UsageError(f"--distributor must be one of {', '.join(DISTRIBUTORS)}, got {kind!r}")
    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    if kind == "dask":
        return DaskDistributor(scheduler, workers, retries)
    if scheduler:
        raise UsageError("--scheduler is only used with --distributor dask")
    return LocalDistributor(workers, retries, preload)
