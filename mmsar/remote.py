"""Inputs and outputs as fsspec URLs (``s3://``, ``gs://``, ``memory://``, ``file://``...).

Why staged copies and not streaming: the readers, ``d2c.convert`` and the shard writer work on local
files (Parquet footers, COCO JSON, image look-ups), so a remote input is fetched once into a local
folder named after its URL (the same URL, the same local path, so the manifest and the staging
fingerprint do not depend on where it was fetched), and a remote output is built locally and uploaded
when complete, ``_manifest.json`` last (its presence marks a finished build there too). ``file://`` URLs
are plain local paths. Other schemes need their fsspec backend installed (s3fs, gcsfs).
"""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

from d2c.errors import UsageError

log = logging.getLogger(__name__)

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(text: str) -> bool:
    """A URL other than ``file://`` (those are local paths: :func:`local_of_file_url`)."""
    return bool(_URL.match(text)) and not text.startswith("file://")


def local_of_file_url(text: str) -> str:
    """``file:///a/b`` -> ``/a/b``; anything else unchanged."""
    return text[len("file://"):] if text.startswith("file://") else text


def _cache(kind: str, url: str) -> Path:
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    name = url.rstrip("/").rsplit("/", 1)[-1] or "root"
    return Path(tempfile.gettempdir()) / f"mmsar-{kind}" / digest / name


def input_alias(url: str) -> Path:
    """The local path a remote input is fetched to."""
    return _cache("remote", url)


def output_alias(url: str) -> Path:
    """The local folder a remote output is built in (its staging lies beside it and is reused)."""
    return _cache("out", url)


def _fs(url: str):  # noqa: ANN202 (fsspec has no public type for the pair)
    try:
        import fsspec
    except ImportError:
        raise UsageError(f"{url}: URLs need fsspec: pip install fsspec") from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise UsageError(f"{url}: no fsspec filesystem for it ({exc})") from None


def fetch(url: str, local: Path) -> None:
    """Copy the file or folder at ``url`` to ``local`` (replacing what was there)."""
    import shutil

    fs, path = _fs(url)
    if not fs.exists(path):
        raise UsageError(f"{url}: not found")
    if local.is_dir():
        shutil.rmtree(local)
    elif local.exists():
        local.unlink()
    if fs.isdir(path):
        root = path.rstrip("/")
        files = sorted(fs.find(root))
        for f in files:
            dest = local / f[len(root):].lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(f, str(dest))
        log.info("fetched %s (%d files) to %s", url, len(files), local)
    else:
        local.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(path, str(local))
        log.info("fetched %s to %s", url, local)


def fetch_all(pairs: Iterable[tuple[str, str]]) -> None:
    for url, local in pairs:
        fetch(url, Path(local))


def upload(local: Path, url: str, replace: Iterable[str], last: str) -> None:
    """Upload the folder ``local`` to ``url``: the names in ``replace`` are removed there first (an older
    build's), then every file is put, ``last`` at the end."""
    fs, root = _fs(url)
    root = root.rstrip("/")
    for name in replace:
        target = f"{root}/{name}"
        if fs.exists(target):
            fs.rm(target, recursive=True)
    files = sorted(p for p in local.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.relative_to(local).as_posix() == last)
    for p in files:
        target = f"{root}/{p.relative_to(local).as_posix()}"
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        fs.put_file(str(p), target)
    log.info("uploaded %d files to %s", len(files), url)
