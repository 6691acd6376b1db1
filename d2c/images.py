"""Finding image files that annotations name, safely, and reading their size from the header only.

Annotations often name images loosely (``x.jpg`` for a file stored as ``x.png``, no extension at all), and
files often lie about their format (JPEG bytes in ``.png``): we look up by name, then by stem, and trust
the bytes over the extension. Every path an annotation names stays inside the dataset root.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from d2c.errors import ImageTooLargeError, UnsafePathError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
EXT_FORMAT = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff", ".bmp": "bmp"}


def _clean_rel(rel: str) -> str:
    """``rel`` as a posix string, refusing absolute paths and ``..`` (pure string work: this runs per image)."""
    text = str(rel).replace("\\", "/")
    if text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        raise UnsafePathError(f"path {rel!r} is absolute: annotation paths must be relative to the dataset root")
    if "\x00" in text:  # the OS would refuse it with a ValueError deep in a path call
        raise UnsafePathError(f"path {rel!r} contains a NUL byte")
    if ".." in text and ".." in text.split("/"):
        raise UnsafePathError(f"path {rel!r} climbs out of the dataset root with '..'")
    return text


def _within(real: str, real_root: str) -> bool:
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def safe_join(root: Path, rel: str) -> Path:
    """``root / rel``, refusing absolute paths, ``..`` and symlinks that lead outside ``root``."""
    joined = Path(root) / _clean_rel(rel)
    if not _within(os.path.realpath(joined), os.path.realpath(root)):
        raise UnsafePathError(f"path {rel!r} resolves outside the dataset root {root}")
    return joined


@dataclass(frozen=True, slots=True)
class ResolvedImage:
    path: Path | None
    found_by_stem: bool = False


NOT_FOUND = ResolvedImage(None, False)


_PLAIN_NAME = re.compile(r"[^/\\:\x00]+")  # a name with no folder part, drive or NUL (see ImageFinder.absent)


def _split_name(name: str) -> tuple[str, str, str]:
    """A checked relative name as (its folder part, its file name, the stem to look up by)."""
    sub, _, base = _clean_rel(name).rpartition("/")
    return sub, base, _stem(base)


def _stem(base: str) -> str:
    """The stem a file name is looked up by: without its extension, if it has a plausible one."""
    stem, ext = os.path.splitext(base)
    return stem if ext and len(ext) <= 5 else base


@dataclass(slots=True)
class _Listing:
    names: set[str]
    links: set[str]
    stems: dict[str, list[str]]


class ImageFinder:
    """Looks images up in a few folders, listing each folder once (cheap for 100k-image datasets).

    Every folder and symlinked file it returns is checked to lie inside ``root`` after resolving links.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._real_root = os.path.realpath(root)
        self._listing: dict[str, _Listing] = {}

    def _list(self, folder: str) -> _Listing:
        hit = self._listing.get(folder)
        if hit is None:
            if not _within(os.path.realpath(folder), self._real_root):
                raise UnsafePathError(f"folder {folder} resolves outside the dataset root {self.root}")
            hit = _Listing(set(), set(), {})
            try:
                with os.scandir(folder) as it:
                    for entry in it:
                        if entry.is_file():
                            hit.names.add(entry.name)
                            if entry.is_symlink():
                                hit.links.add(entry.name)
                            stem, ext = os.path.splitext(entry.name)
                            if ext.lower() in IMAGE_EXTS:
                                hit.stems.setdefault(stem, []).append(entry.name)
            except OSError:
                pass
            for v in hit.stems.values():
                v.sort(key=lambda n: (IMAGE_EXTS.index(os.path.splitext(n)[1].lower()), n))
            self._listing[folder] = hit
        return hit

    def prime(self, folders: list[Path] | list[str]) -> None:
        """List ``folders`` now (those that exist and lie inside the root): worker processes forked
        afterwards share the listings instead of each listing a folder of 100,000 images again."""
        for folder in folders:
            with contextlib.suppress(UnsafePathError):
                self._list(str(folder))

    def _checked(self, folder: str, listing: _Listing, name: str) -> Path:
        path = os.path.join(folder, name)
        if name in listing.links and not _within(os.path.realpath(path), self._real_root):
            raise UnsafePathError(f"image {path} is a link that leaves the dataset root {self.root}")
        return Path(path)

    def find(self, folder: Path | str, name: str) -> ResolvedImage:
        """``folder/name`` if it exists, else a file with the same stem and an image extension."""
        return self._find_split(str(folder), *_split_name(name))

    def _find_split(self, folder: str, sub: str, base: str, stem: str) -> ResolvedImage:
        """:meth:`find` of a name already checked and split by :func:`_split_name`."""
        parent = os.path.join(folder, sub) if sub else folder
        listing = self._list(parent)
        if base in listing.names:
            return ResolvedImage(self._checked(parent, listing, base), False)
        for cand in listing.stems.get(stem, ()):
            return ResolvedImage(self._checked(parent, listing, cand), True)
        return NOT_FOUND

    def find_in(self, folders: list[Path] | list[str], name: str) -> tuple[ResolvedImage, Path | str]:
        """Search several folders: the exact name in each first, then by stem; returns the folder too."""
        split = _split_name(name)  # checked once, not per folder: this runs per image
        stem_hit: tuple[ResolvedImage, Path | str] | None = None
        for folder in folders:
            found = self._find_split(str(folder), *split)
            if found.path is not None and not found.found_by_stem:
                return found, folder
            if found.path is not None and stem_hit is None:
                stem_hit = (found, folder)
        return stem_hit or (NOT_FOUND, folders[0])

    def absent(self, folders: list[Path] | list[str], name: str) -> bool:
        """True when ``name`` is a plain file name (no folder part, drive, ``.`` or ``..``) that none of
        ``folders`` holds, by name or by stem: what :meth:`find_in` reports as not found, at a fraction of
        its cost (a reader asks for each of 100,000 images, most of them missing in annotation-only runs)."""
        return self.absent_names(folders, [name])[0]

    def absent_names(self, folders: list[Path] | list[str], names: Sequence[Any]) -> list[bool]:
        """:meth:`absent` of each of ``names`` (a name that is not a string never is), in one pass per folder
        rather than a call per name. A folder that cannot be listed safely makes every answer False: those
        names go to :meth:`find_in`, which raises the same UnsafePathError where it matters."""
        try:
            listings = [self._list(str(folder)) for folder in folders]
        except UnsafePathError:
            return [False] * len(names)
        plain = _PLAIN_NAME.fullmatch
        out = [type(n) is str and n != "." and n != ".." and plain(n) is not None for n in names]
        for listing in listings:
            held, stems = listing.names, listing.stems
            if stems:  # the stem only where the folder holds images: in annotation-only runs none does
                out = [a and n not in held and _stem(n) not in stems for a, n in zip(out, names, strict=True)]
            elif held:
                out = [a and n not in held for a, n in zip(out, names, strict=True)]
        return out

    def find_stem(self, folder: Path | str, stem: str) -> Path | None:
        """The image in ``folder`` whose stem is ``stem`` (preferring .png, .jpg, ... in that order)."""
        _clean_rel(stem)
        listing = self._list(str(folder))
        found = listing.stems.get(stem)
        return self._checked(str(folder), listing, found[0]) if found else None


def resolve_image(root: Path, images_dir: Path | None, name: str, finder: ImageFinder | None = None) -> ResolvedImage:
    """Find the image ``name`` (relative to ``images_dir``, default ``root``): by name, then by stem."""
    finder = finder or ImageFinder(root)
    return finder.find(Path(images_dir) if images_dir is not None else Path(root), name)


def sniff_format(head: bytes) -> str | None:
    """The image format from its first bytes: "png" | "jpeg" | "tiff" | "bmp" | None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head.startswith(b"BM"):
        return "bmp"
    return None


def sniff_file(path: Path) -> str | None:
    with open(path, "rb") as fh:
        return sniff_format(fh.read(16))


def image_size(path: Path, max_pixels: int = 1 << 30) -> tuple[int, int]:
    """``(width, height)`` from the header only; raises ImageTooLargeError over ``max_pixels``.

    TIFFs go through rasterio (GeoTIFFs, many bands, float data); everything else through a lazy PIL open.
    Unreadable files raise OSError or ValueError.
    """
    path = Path(path)
    fmt = sniff_file(path)
    if fmt == "tiff":
        import rasterio
        from rasterio.errors import RasterioIOError

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with rasterio.open(path) as ds:
                    w, h = int(ds.width), int(ds.height)
        except RasterioIOError as exc:
            raise OSError(f"{path}: cannot read TIFF header: {exc}") from exc
    else:
        from PIL import Image

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    w, h = im.size
        except Image.DecompressionBombError as exc:
            raise ImageTooLargeError(f"{path}: image exceeds PIL's pixel cap: {exc}") from exc
    check_pixels(path, w, h, max_pixels)
    return w, h


def check_pixels(path: Path | str, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{path}: {width} x {height} = {width * height} pixels exceeds the cap of {max_pixels}"
        )
