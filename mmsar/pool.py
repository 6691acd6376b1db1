"""A local process pool that knows which task each worker runs, so a killed worker costs one retry of
its own task (``concurrent.futures``' pool breaks as a whole and cannot say whose task killed it).

Why spawned processes: they are safe beside threads, and a worker that dies is simply replaced.
Results are returned in submission order whatever the order they finish in.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

from d2c.errors import D2CError
from mmsar.crash import TaskFailed

log = logging.getLogger(__name__)


def _serve(conn: Connection) -> None:
    """A worker: run each ``(fn, args)`` received; send back ("ok", result) or ("err", exception, text)."""
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
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
    def __init__(self, ctx: Any) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child,), daemon=True)
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
    (bad input fails at once: running it again gives the same error)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._ctx = mp.get_context("spawn")
        self._idle: list[_Worker] = []

    def run(self, calls: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]], *, retries: int,
            label: Callable[[int], str], done: Callable[[int], Any] | None = None,
            order: Sequence[int] | None = None) -> list[Any]:
        results: list[Any] = [None] * len(calls)
        attempts = [0] * len(calls)
        todo = deque(order if order is not None else range(len(calls)))
        busy: list[_Worker] = []
        finished = 0
        try:
            while finished < len(calls):
                while todo and len(busy) < self.workers:
                    w = self._idle.pop() if self._idle else _Worker(self._ctx)
                    w.task = todo.popleft()
                    w.conn.send(calls[w.task])
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
                    todo.appendleft(i)
        except BaseException:
            for w in busy:
                w.stop(kill=True)
            raise
        return results

    def close(self) -> None:
        while self._idle:
            self._idle.pop().stop()
