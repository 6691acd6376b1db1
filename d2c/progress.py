"""Progress for every long step (convert, build, train, eval, embed): one helper, not a copy per command.

Why two faces: on a terminal a rich bar with the total, rate and ETA; in a log file or a CI job (stderr
not a TTY) a bar would print nothing useful or garble the file, so the same updates become one plain log
line every few seconds (``label: 120/400 (30%), 12.0/s, ETA 0:00:23``). A step whose total is not known
yet shows a count and rate; :meth:`Progress.set_total` adds the total once it is (after planning).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger("progress")

LOG_EVERY_S = 5.0
_LIVE: Any = None  # the rich display on screen: rich allows one at a time, so nested bars share it
_USERS = 0


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """``with Progress("staging sources", total=3) as p: ... p.advance()``.

    ``enabled``: None follows stderr (rich bar on a TTY, log lines otherwise), True forces the rich bar,
    False turns both off, ``"log"`` forces log lines. ``every``: seconds between log lines.
    """

    def __init__(self, label: str, total: int | None = None, *, enabled: bool | str | None = None,
                 every: float = LOG_EVERY_S, unit: str = "", logger: logging.Logger | None = None,
                 start: int = 0) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.completed = self.start = start  # start: done before this run (a resumed one); not in the rate
        self.info = ""
        self.every = every
        self.log = logger or log
        mode = enabled
        if mode is None:
            mode = "rich" if sys.stderr.isatty() else "log"
        self.mode = {True: "rich", False: "off"}.get(mode, mode) if isinstance(mode, bool) else mode
        self._bar: Any = None
        self._task: Any = None
        self._t0 = time.monotonic()
        self._last_log = self._t0

    def __enter__(self) -> Progress:
        global _LIVE, _USERS
        if self.mode == "rich" and _LIVE is not None:  # nested (eval -> encoding): a line in the same display
            self._bar = _LIVE
            _USERS += 1
            self._task = self._bar.add_task("", total=self.total, label=self.label, completed=self.start)
        elif self.mode == "rich":
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(SpinnerColumn(), TextColumn("{task.fields[label]}"), BarColumn(),
                                     MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                                     TimeRemainingColumn(), TextColumn("{task.description}"),
                                     console=Console(stderr=True), transient=False)
            self._bar.start()
            _LIVE, _USERS = self._bar, 1
            self._task = self._bar.add_task("", total=self.total, label=self.label, completed=self.start)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(failed=exc[0] is not None)

    def set_total(self, total: int | None) -> None:
        """The total, once known (e.g. after planning)."""
        self.total = total
        if self._bar is not None:
            self._bar.update(self._task, total=total)

    def advance(self, n: int = 1, info: str | None = None) -> None:
        self.update(self.completed + n, info)

    def update(self, completed: int, info: str | None = None) -> None:
        """Set how much is done (and a short status text: loss, rejects...)."""
        self.completed = completed
        if info is not None:
            self.info = info
        if self._bar is not None:
            self._bar.update(self._task, completed=completed, description=self.info)
        elif self.mode == "log":
            now = time.monotonic()
            if now - self._last_log >= self.every:
                self._last_log = now
                self._emit(self.line(now))

    def line(self, now: float | None = None) -> str:
        """The plain-text status line: done/total (share), rate, ETA, info."""
        elapsed = max((now if now is not None else time.monotonic()) - self._t0, 1e-9)
        rate = (self.completed - self.start) / elapsed
        unit = f" {self.unit}" if self.unit else ""
        if self.total:
            text = f"{self.label}: {self.completed}/{self.total}{unit} ({self.completed / self.total:.0%})"
        else:
            text = f"{self.label}: {self.completed}{unit}"
        text += f", {rate:.1f}/s, elapsed {_clock(elapsed)}"
        if self.total and rate > 0:
            text += f", ETA {_clock(max(self.total - self.completed, 0) / rate)}"
        return text + (f"; {self.info}" if self.info else "")

    def _emit(self, text: str) -> None:
        """A log line at INFO (the command lines set logging up; a library caller chooses)."""
        self.log.info("%s", text)

    def close(self, failed: bool = False) -> None:
        global _LIVE, _USERS
        if self._bar is not None:
            _USERS -= 1
            if _USERS <= 0:
                self._bar.stop()
                _LIVE = None
            elif failed or self.total is None:
                self._bar.remove_task(self._task)
            self._bar = None
        elif self.mode == "log" and not failed and self.completed > self.start:
            self._emit(self.line() + " (done)")
        self.mode = "off"


def track(items: Iterable[T], label: str, total: int | None = None, **kw: Any) -> Iterator[T]:
    """``for x in track(xs, "embedding", total=len(xs)): ...`` with a :class:`Progress`."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(label, total, **kw) as p:
        for item in items:
            yield item
            p.advance()
