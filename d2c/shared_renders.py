"""Caption renders shared between the worker processes of one conversion.

Why: each forked worker has its own caption engine, whose memo of rendered texts starts empty, so two
workers captioning alternate chunks render a third more texts than one engine does (the 116k-image
benchmark: 73k renders against 51k, half a second of CPU). After each task a worker appends the texts it
rendered (:meth:`d2c.captions.CaptionEngine.export_renders`) to a log in memory shared by the pool, and
before each task it imports what the others appended since it last looked. Captions never depend on it:
an imported text is exactly the one the worker would have rendered; only the work changes.

The log is an anonymous shared mapping, created before the workers are forked (so only with the fork
start method), written and read under one lock: records ``[length, writer pid, blob]`` after an 8-byte
header holding the bytes in use. When it is full, workers simply stop publishing.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
from typing import Any

log = logging.getLogger(__name__)
LOG_BYTES = 256 << 20  # address space only: pages are allocated as records are written
_HEADER = struct.Struct("<Q")  # bytes in use, header included
_RECORD = struct.Struct("<QQ")  # blob length, writer pid


class SharedRenders:
    """A log of render blobs shared by the processes forked after it was made; each process keeps its own
    read position (the copy of this object each worker inherits)."""

    def __init__(self, lock: Any, size: int = LOG_BYTES) -> None:
        self._buf = mmap.mmap(-1, size)  # MAP_SHARED | MAP_ANONYMOUS: forked children see the same pages
        self._lock = lock
        _HEADER.pack_into(self._buf, 0, _HEADER.size)
        self._read_to = _HEADER.size

    @classmethod
    def made(cls, ctx: Any) -> SharedRenders | None:
        """A log for the workers ``ctx`` (a fork context) will start, or None where the system refuses the
        mapping (strict memory overcommit): the workers then render what they miss themselves."""
        try:
            return cls(ctx.Lock())
        except OSError as exc:
            log.info("caption renders are not shared between workers: %s", exc)
            return None

    def publish(self, blob: bytes, origin: int | None = None) -> bool:
        """Append ``blob`` (from process ``origin``, this one by default); False when the log is full."""
        if not blob:
            return True
        record = _RECORD.pack(len(blob), os.getpid() if origin is None else origin) + blob
        with self._lock:
            (used,) = _HEADER.unpack_from(self._buf, 0)
            if used + len(record) > len(self._buf):
                return False
            self._buf[used : used + len(record)] = record
            _HEADER.pack_into(self._buf, 0, used + len(record))
        return True

    def absorb(self, engine: Any) -> int:
        """Import into ``engine`` the blobs other processes appended since this process last looked; how
        many renders were new to it."""
        with self._lock:  # records below the bytes in use never change once published
            (used,) = _HEADER.unpack_from(self._buf, 0)
        me, at, added = os.getpid(), self._read_to, 0
        while at < used:
            size, origin = _RECORD.unpack_from(self._buf, at)
            start = at + _RECORD.size
            if origin != me:
                added += engine.import_renders(self._buf[start : start + size])
            at = start + size
        self._read_to = at
        return added

    def close(self) -> None:
        self._buf.close()
