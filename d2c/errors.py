"""Errors a user can act on. The CLIs print them as one line (no traceback) and exit with ``exit_code``."""

from __future__ import annotations


class D2CError(Exception):
    """Base class: a clear, one-line message naming the file, line or id at fault."""

    exit_code = 1


class UsageError(D2CError):
    """The command line or config asks for something impossible (exit code 2)."""

    exit_code = 2


class UnsafePathError(D2CError):
    """An annotation names a path outside its dataset root (``..``, absolute, or a symlink leaving it)."""


class ImageTooLargeError(D2CError):
    """An image's declared size exceeds the pixel cap (a decompression bomb is refused before decoding)."""


def error_code(exc: Exception) -> str:
    """A Reject code from an error's class: ``ImageReadError`` -> ``imageread``, ``UnsafePathError`` ->
    ``unsafepath``."""
    return type(exc).__name__.removesuffix("Error").lower() or "image"
