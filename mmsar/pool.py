"""A local process pool that knows which task each worker runs, so a killed worker costs one retry of
its own task (``concurrent.futures``' pool breaks as a whole and cannot say whose task killed it).

Why spawned processes: they are safe beside threads, and a worker that dies is simply replaced.
Results are returned in submission order whatever the order they finish in. A call may take earlier
calls' results (:class:`mmsar.taskgraph.Result` in its arguments): it starts once they are in.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

from d2c.errors import D2CError
from mmsar.crash import TaskFailed
from mmsar.taskgraph import Schedule, dependencies, resolve

log = logging.getLogger(__name__)


def _serve(conn: Connection, preload: tuple[str, ...] = ()) -> None:
    """A worker: import ``preload`` (while the build still plans, instead of in its first task), then run
    each ``(fn, args)`` received; send back ("ok", result) or ("err", exception, text)."""
    import importlib

    for name in preload:
        importlib.import_module(name)
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:  # every task's files are complete: skip the interpreter's clean-up of a big heap
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        fn, args = msg
        try:
            reply: tuple[Any, ...] = ("ok", fn(*args))
        except BaseException as exc:  # any failure goes back to the build, which decides to retry
            reply = ("err", exc, traceback.format_exc())
        try:
            conn.send(reply)
        except Exception as exc:  # an unpicklable result or exception
            conn.send(("err", RuntimeError(f"cannot send the result back: {exc}"), traceback.format_exc()))


class _Worker:
    def __init__(self, ctx: Any, preload: tuple[str, ...] = ()) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, preload), daemon=True)
        self.proc.start()
        child.close()
        self.task: int | None = None

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.proc.kill()
        else:
            with contextlib.suppress(OSError):
                self.conn.send(None)
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


class ProcessPool:
    """``run(calls)``: every ``(fn, args)`` in ``calls`` on ``workers`` processes, each retried up to
    ``retries`` times when its worker dies or it raises something other than a :class:`D2CError`
    (bad input fails at once: running it again gives the same error). ``order``: the order to start
    ready calls in. ``preload``: modules every worker imports as it starts."""

    def __init__(self, workers: int, preload: tuple[str, ...] = ()) -> None:
        self.workers = workers
        self.preload = preload
        self._ctx = mp.get_context("spawn")
        self._idle: list[_Worker] = []

    def start(self) -> None:
        """Start the workers now (spawning and importing take about a second that the caller can use)."""
        while len(self._idle) < self.workers:
            self._idle.append(_Worker(self._ctx, self.preload))

    def run(self, calls: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]], *, retries: int,
            label: Callable[[int], str], done: Callable[[int], Any] | None = None,
            order: Sequence[int] | None = None) -> list[Any]:
        results: list[Any] = [None] * len(calls)
        attempts = [0] * len(calls)
        todo = Schedule(dependencies(calls), order)
        busy: list[_Worker] = []
        finished = 0
        try:
            while finished < len(calls):
                while len(busy) < self.workers and (i := todo.pop()) is not None:
                    w = self._idle.pop() if self._idle else _Worker(self._ctx, self.preload)
                    w.task = i
                    w.conn.send(resolve(calls[i], results))
                    busy.append(w)
                ready = set(wait([w.conn for w in busy] + [w.proc.sentinel for w in busy]))
                for w in list(busy):
                    if w.conn not in ready and w.proc.sentinel not in ready:
                        continue
                    i = w.task
                    assert i is not None
                    try:
                        reply = w.conn.recv() if w.conn.poll() else None
                    except (EOFError, OSError):
                        reply = None
                    busy.remove(w)
                    if reply is None:  # the process died (killed, out of memory, crashed)
                        w.proc.join(5)
                        w.stop(kill=True)
                        problem = f"its worker process died (exit code {w.proc.exitcode})"
                    elif reply[0] == "ok":
                        results[i] = reply[1]
                        finished += 1
                        w.task = None
                        self._idle.append(w)
                        todo.finish(i)
                        if done is not None:
                            done(i)
                        continue
                    else:
                        w.task = None
                        self._idle.append(w)
                        if isinstance(reply[1], D2CError):
                            raise reply[1]
                        log.debug("%s: %s", label(i), reply[2])
                        problem = f"{type(reply[1]).__name__}: {reply[1]}"
                    attempts[i] += 1
                    if attempts[i] > retries:
                        raise TaskFailed(f"{label(i)} failed {attempts[i]} time(s); last: {problem}")
                    log.warning("%s: %s; retrying (%d of %d)", label(i), problem, attempts[i], retries)
                    todo.retry(i)
        except BaseException:
            for w in busy:
                w.stop(kill=True)
            raise
        return results

    def close(self) -> None:
        while self._idle:
            self._idle.pop().stop()
