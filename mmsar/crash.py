"""The test hook for killed workers, and the one error a task that keeps failing gives.

Why a hook: retries are only trustworthy when tested against a worker that really dies (``os._exit``, no
Python clean-up), as an out-of-memory kill would. ``MMSAR_CRASH_TASK=<index>`` kills the process running
staging task ``<index>`` on its first attempt (``write:<index>``: writing task ``<index>``); a marker file
(``MMSAR_CRASH_MARKER``, default in the temp folder) records that it happened, so the retry runs. With
``:always`` appended every attempt dies (a task that keeps failing).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from d2c.errors import D2CError

CRASH_ENV, MARKER_ENV = "MMSAR_CRASH_TASK", "MMSAR_CRASH_MARKER"


class TaskFailed(D2CError):
    """A task failed on every attempt (its worker died or it raised); the message names its units."""


def marker_path(stage: str, index: int) -> Path:
    given = os.environ.get(MARKER_ENV)
    return Path(given) if given else Path(tempfile.gettempdir()) / f"mmsar-crash-{stage}-{index}.marker"


def _should_crash(stage: str, index: int) -> bool:
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return False
    parts = spec.split(":")
    always = parts[-1] == "always"
    if always:
        parts = parts[:-1]
    want_stage = {"write": "writing", "stage": "staging"}.get(parts[0]) if len(parts) == 2 else "staging"
    if want_stage != stage or parts[-1] != str(index):
        return False
    marker = marker_path(stage, index)
    if always:
        return True
    if marker.exists():
        return False
    marker.write_text(f"{stage} task {index} killed once\n", encoding="utf-8")
    return True


def guarded(stage: str, index: int, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """Run ``fn(*args)`` as task ``index`` of ``stage`` (the hook may kill the process first)."""
    if _should_crash(stage, index):
        os._exit(137)
    return fn(*args)
