"""Keep open_clip's log lines out of our output while it builds or loads a model.

open_clip logs through the root logger (``logging.info`` / ``logging.warning``): nine INFO lines per model
(one giving its default OpenAI mean/std, which a model trained from scratch does not use) and, for every
model whose weights we load ourselves from a SARCLIP checkpoint, "No pretrained weights loaded ... Model
initialized randomly". Both are wrong or noise for this toolkit, which says what it loaded itself. Its
ERROR lines precede an exception that the toolkit turns into its own one-line error, so they go too; only
CRITICAL passes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _open_clip_dir() -> str:
    import open_clip

    return str(Path(open_clip.__file__).resolve().parent)


class _DropOpenClip(logging.Filter):
    def __init__(self, folder: str) -> None:
        super().__init__()
        self.folder = folder

    def filter(self, record: logging.LogRecord) -> bool:
        inside = str(Path(record.pathname).resolve()).startswith(self.folder)
        return not inside or record.levelno >= logging.CRITICAL


@contextmanager
def quiet_open_clip() -> Iterator[None]:
    """Drop open_clip's INFO, WARNING and ERROR records from the root logger for the duration of the block."""
    filt = _DropOpenClip(_open_clip_dir())
    root = logging.getLogger()
    root.addFilter(filt)
    try:
        yield
    finally:
        root.removeFilter(filt)
