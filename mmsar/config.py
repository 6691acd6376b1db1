"""``mmsar.toml``: what an MMSAR build assembles and how (documented in ``docs/mmsar.md``).

Why a validating loader: a build runs for hours over many sources, so a typo must fail at once with the
key that is wrong (``sources[2].ratios: ...``), not halfway through. Paths are resolved against the config
file's folder so a config works from any working directory.
"""

from __future__ import annotations

import re
import tomllib
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from d2c.errors import UsageError
from d2c.model import SPLITS
from d2c.tiling import BELOW_POLICIES, DEFAULT_MIN_VISIBLE, DEFAULT_NEGATIVE_RATE

FORMATS = ("auto", "coco", "dota", "voc", "yolo")
DEFAULT_RATIOS = (0.8, 0.1, 0.1)
DEFAULT_COUNT_TEMPLATES = ("a SAR image with {n}.", "a radar image showing {n}.", "{n} in a SAR scene.")


@dataclass(frozen=True)
class InputSpec:
    """One annotation input of a source (a dataset root or COCO file), with an optional fixed split."""

    path: Path
    images: Path | None = None
    annotations: Path | None = None
    split: str | None = None


@dataclass(frozen=True)
class TileSpec:
    """A source's tiling (``d2c convert --tile``): tile size, overlap and how border-cut objects and empty
    tiles are treated (:func:`d2c.tiling.tile_scene`'s ``min_visible``, ``below``, ``negative_rate``)."""

    size: int
    overlap: int = 200
    min_visible: float = DEFAULT_MIN_VISIBLE
    below: str = "difficult"
    negative_rate: float = DEFAULT_NEGATIVE_RATE


@dataclass(frozen=True)
class SourceConfig:
    name: str
    format: str
    inputs: tuple[InputSpec, ...]
    class_map: Path | str | dict[str, Any] | None = None  # a TOML file, a bundled map's name, or a table
    split: str | None = None  # "train" | "val" | "test" | "source" (keep the reader's split) | None
    ratios: tuple[float, float, float] | None = None
    weight: float = 1.0
    licence: str = "unknown"
    tile: TileSpec | None = None
    keep_partial_scenes: bool = False  # d2c convert --keep-partial-scenes (see d2c.partial)


@dataclass(frozen=True)
class ExternalChips:
    """An ImageFolder-style classification set: ``path/<class name>/*.png|jpg|tif``."""

    name: str
    path: Path
    split: str | None = None
    licence: str = "unknown"


@dataclass(frozen=True)
class CaptionSettings:
    templates: Path | None = None
    per_image: int = 5
    seed: int = 0


@dataclass(frozen=True)
class ImageSettings:
    mode: str = "embed"  # "embed" | "reference"
    max_side: int | None = None
    stretch: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DedupeSettings:
    near_threshold: int = 2  # Hamming distance strictly below this makes a near-duplicate
    drop_near: bool = False
    label_iou: float = 0.5  # two label sets agree when every box pairs with one of the same class at this IoU


@dataclass(frozen=True)
class SplitSettings:
    ratios: tuple[float, float, float] = DEFAULT_RATIOS
    seed: int = 0


@dataclass(frozen=True)
class SarCountSettings:
    min_count: int = 1
    max_count: int = 10
    max_per_count: int = 50
    templates: tuple[str, ...] = DEFAULT_COUNT_TEMPLATES
    nouns: dict[str, tuple[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class ChipSettings:
    size: int = 128
    context: float = 0.5  # crop side = long side of the box * (1 + context), at least min_crop
    min_crop: int = 32
    external: tuple[ExternalChips, ...] = ()


@dataclass(frozen=True)
class BuildConfig:
    sources: tuple[SourceConfig, ...]
    out: Path
    work: Path
    name: str = "MMSAR"
    seed: int = 0
    shard_rows: int = 2000
    captions: CaptionSettings = field(default_factory=CaptionSettings)
    images: ImageSettings = field(default_factory=ImageSettings)
    dedupe: DedupeSettings = field(default_factory=DedupeSettings)
    splits: SplitSettings = field(default_factory=SplitSettings)
    sarcount: SarCountSettings = field(default_factory=SarCountSettings)
    chips: ChipSettings = field(default_factory=ChipSettings)
    base_dir: Path = Path(".")
    unit_scenes: int | None = None  # scenes per staging task (how the build runs: not in the manifest)
    remote_inputs: tuple[tuple[str, str], ...] = ()  # (URL, local path) of inputs given as URLs
    out_url: str | None = None  # the output as a URL: built in ``out`` (local), then uploaded

    def resolved(self) -> dict[str, Any]:
        """The config as plain JSON data, paths relative to the config folder where possible, inputs given
        as URLs as those URLs (so the record does not depend on where the output or the checkout lives)."""
        urls = {local: url for url, local in self.remote_inputs}
        return _jsonable(asdict(self), self.base_dir,
                         skip=("out", "work", "base_dir", "unit_scenes", "remote_inputs", "out_url"), urls=urls)


def _jsonable(obj: Any, base: Path, skip: tuple[str, ...] = (), urls: dict[str, str] | None = None) -> Any:
    urls = urls or {}
    if isinstance(obj, dict):
        return {k: _jsonable(v, base, urls=urls) for k, v in obj.items() if k not in skip}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, base, urls=urls) for v in obj]
    if isinstance(obj, Path) and str(obj) in urls:
        return urls[str(obj)]
    if isinstance(obj, Path):
        try:
            return obj.resolve().relative_to(base.resolve()).as_posix()
        except ValueError:
            import os

            return Path(os.path.relpath(obj.resolve(), base.resolve())).as_posix()
    return obj


_ERRORS: ContextVar[list[str] | None] = ContextVar("mmsar_config_errors", default=None)
# (URL, local path) of each remote input met by the parse (fetched by the build: mmsar.remote)
_REMOTE: ContextVar[list[tuple[str, str]] | None] = ContextVar("mmsar_config_remote", default=None)


def _soft(message: str) -> None:
    """Record a config problem and go on (every problem is listed at once), or raise outside a parse."""
    errors = _ERRORS.get()
    if errors is None:
        raise UsageError(message)
    errors.append(message)


def _did_you_mean(name: str, known: Any) -> str:
    import difflib

    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Table:
    """A TOML table with its dotted location, so every error names the key at fault. A wrong type or an
    unknown key is recorded (the parse goes on and lists them all); what the parse cannot go on without
    (a required key) raises."""

    def __init__(self, data: Any, where: str, base: Path) -> None:
        if not isinstance(data, dict):
            raise UsageError(f"{where}: expected a table, got {type(data).__name__}")
        self.data, self.where, self.base = data, where, base
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def get(self, name: str, typ: type | tuple[type, ...], default: Any = None, *, required: bool = False) -> Any:
        self.used.add(name)
        if name not in self.data:
            if required:
                raise UsageError(f"{self.key(name)}: required key is missing")
            return default
        v = self.data[name]
        if typ is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        problem = None
        if isinstance(v, bool) and typ is not bool and bool not in (typ if isinstance(typ, tuple) else (typ,)):
            problem = f"{self.key(name)}: expected {_tname(typ)}, got a boolean"
        elif not isinstance(v, typ):
            problem = f"{self.key(name)}: expected {_tname(typ)}, got {type(v).__name__} {v!r}"
        if problem is not None:
            if required:
                raise UsageError(problem)
            _soft(problem)
            return default
        return v

    def int(self, name: str, default: int | None, lo: int | None = None) -> int | None:
        v = self.get(name, int, default)
        if v is not None and lo is not None and v < lo:
            raise UsageError(f"{self.key(name)}: must be >= {lo}, got {v}")
        return v

    def path(self, name: str, *, required: bool = False) -> Path | None:
        """A local path (relative: from the config's folder; ``file://`` URLs are local paths); another URL
        (``s3://``, ``memory://``...) gives the local path it will be fetched to."""
        from mmsar import remote

        v = self.get(name, str, required=required)
        if v is None:
            return None
        if remote.is_url(v):
            local = remote.input_alias(v)
            found = _REMOTE.get()
            if found is not None:
                found.append((v, str(local)))
            return local
        return (self.base / remote.local_of_file_url(v)).resolve()

    def sub(self, name: str) -> _Table:
        return _Table(self.get(name, dict, {}), self.key(name), self.base)

    def check_unknown(self) -> None:
        for extra in sorted(set(self.data) - self.used):
            _soft(f"{self.key(extra)}: unknown key{_did_you_mean(extra, self.used)} "
                  f"(known: {', '.join(sorted(self.used))})")


def _tname(typ: type | tuple[type, ...]) -> str:
    types = typ if isinstance(typ, tuple) else (typ,)
    return " or ".join({"str": "a string", "int": "an integer", "float": "a number", "dict": "a table",
                        "list": "an array", "bool": "true/false"}.get(t.__name__, t.__name__) for t in types)


def _ratios(t: _Table, name: str, default: Any) -> tuple[float, float, float] | None:
    v = t.get(name, list, None)
    if v is None:
        return default
    if len(v) != 3 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0 for x in v):
        raise UsageError(f"{t.key(name)}: expected three non-negative numbers [train, val, test], got {v!r}")
    if sum(v) <= 0:
        raise UsageError(f"{t.key(name)}: ratios must not all be zero")
    s = float(sum(v))
    return (v[0] / s, v[1] / s, v[2] / s)


def _split(t: _Table, name: str, allow_source: bool) -> str | None:
    v = t.get(name, str, None)
    allowed = (*SPLITS, "source") if allow_source else SPLITS
    if v is not None and v not in allowed:
        raise UsageError(f"{t.key(name)}: must be one of {', '.join(allowed)}, got {v!r}")
    return v


def _inputs(t: _Table) -> tuple[InputSpec, ...]:
    raw = t.get("input", (str, list, dict), None, required=True)
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise UsageError(f"{t.key('input')}: at least one input is needed")
    out = []
    for i, item in enumerate(items):
        where = f"{t.key('input')}[{i}]"
        if isinstance(item, str):
            item = {"path": item}
        it = _Table(item, where, t.base)
        spec = InputSpec(it.path("path", required=True), it.path("images"), it.path("annotations"),
                         _split(it, "split", allow_source=False))
        it.check_unknown()
        if len(items) == 1 and spec.images is None and spec.annotations is None:
            spec = InputSpec(spec.path, t.path("images"), t.path("annotations"), spec.split)
        out.append(spec)
    return tuple(out)


def _class_map(t: _Table) -> Path | str | dict[str, Any] | None:
    v = t.get("class_map", (str, dict), None)
    if isinstance(v, str):
        p = (t.base / v).resolve()
        return p if (p.is_file() or "/" in v or v.endswith(".toml")) else v
    return v


def _tile(t: _Table) -> TileSpec:
    tt = t.sub("tile")
    size = tt.int("size", None, lo=16)
    if size is None:
        raise UsageError(f"{tt.key('size')}: required key is missing")
    overlap = tt.int("overlap", 200, lo=0) or 0
    if overlap >= size:
        raise UsageError(f"{tt.key('overlap')}: must be smaller than tile.size ({size})")
    min_visible = tt.get("min_visible", float, DEFAULT_MIN_VISIBLE)
    if not 0.0 < min_visible <= 1.0:
        raise UsageError(f"{tt.key('min_visible')}: must be in (0, 1], got {min_visible}")
    below = tt.get("below", str, "difficult")
    if below not in BELOW_POLICIES:
        raise UsageError(f"{tt.key('below')}: must be one of {', '.join(BELOW_POLICIES)}, got {below!r}")
    negative_rate = tt.get("negative_rate", float, DEFAULT_NEGATIVE_RATE)
    if not 0.0 <= negative_rate <= 1.0:
        raise UsageError(f"{tt.key('negative_rate')}: must be in [0, 1], got {negative_rate}")
    tt.check_unknown()
    return TileSpec(size, overlap, min_visible, below, negative_rate)


def _source(t: _Table) -> SourceConfig:
    name = t.get("name", str, required=True)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise UsageError(f"{t.key('name')}: use letters, digits, '_', '-' or '.', got {name!r}")
    fmt = t.get("format", str, "auto")
    if fmt not in FORMATS:
        raise UsageError(f"{t.key('format')}: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    weight = t.get("weight", float, 1.0)
    if weight <= 0:
        raise UsageError(f"{t.key('weight')}: must be positive, got {weight}")
    src = SourceConfig(
        name=name, format=fmt, inputs=_inputs(t), class_map=_class_map(t),
        split=_split(t, "split", allow_source=True), ratios=_ratios(t, "ratios", None), weight=weight,
        licence=t.get("licence", str, "unknown"), tile=_tile(t) if "tile" in t.data else None,
        keep_partial_scenes=t.get("keep_partial_scenes", bool, False),
    )
    t.get("images", str)
    t.get("annotations", str)
    t.check_unknown()
    return src


def _sarcount(t: _Table) -> SarCountSettings:
    lo, hi = t.int("min_count", 1, lo=1), t.int("max_count", 10, lo=1)
    if hi < lo:
        raise UsageError(f"{t.key('max_count')}: must be >= min_count ({lo}), got {hi}")
    templates = tuple(t.get("templates", list, list(DEFAULT_COUNT_TEMPLATES)))
    for i, tpl in enumerate(templates):
        if not isinstance(tpl, str) or tpl.count("{n}") != 1 or tpl.replace("{n}", "").count("{") > 0:
            raise UsageError(f"{t.key('templates')}[{i}]: needs exactly one '{{n}}' slot and no other braces")
    nouns = {}
    for cls, pair in t.get("nouns", dict, {}).items():
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) and p for p in pair)):
            raise UsageError(f"{t.key('nouns')}.{cls}: expected [singular, plural], got {pair!r}")
        nouns[cls] = (pair[0], pair[1])
    s = SarCountSettings(lo, hi, t.int("max_per_count", 50, lo=1), templates, nouns)
    t.check_unknown()
    return s


def _chips(t: _Table) -> ChipSettings:
    context = t.get("context", float, 0.5)
    if context < 0:
        raise UsageError(f"{t.key('context')}: must be >= 0, got {context}")
    ext = []
    for i, item in enumerate(t.get("external", list, [])):
        et = _Table(item, f"{t.key('external')}[{i}]", t.base)
        ext.append(ExternalChips(et.get("name", str, required=True), et.path("path", required=True),
                                 _split(et, "split", allow_source=False), et.get("licence", str, "unknown")))
        et.check_unknown()
    c = ChipSettings(t.int("size", 128, lo=8), context, t.int("min_crop", 32, lo=1), tuple(ext))
    t.check_unknown()
    return c


def _section(fn: Any, *args: Any, default: Any = None) -> Any:
    """``fn(*args)``, its first hard error recorded (the other sections are still checked)."""
    try:
        return fn(*args)
    except UsageError as exc:
        _soft(str(exc))
        return default


def parse_config(data: dict[str, Any], base_dir: Path, *, out: Path | str | None = None) -> BuildConfig:
    """Validate the parsed TOML ``data``; relative paths are taken from ``base_dir``. Every problem is
    reported at once, one line each naming its key. ``out`` (overriding the ``out`` key) may be a URL."""
    errors: list[str] = []
    remote_found: list[tuple[str, str]] = []
    token, rtoken = _ERRORS.set(errors), _REMOTE.set(remote_found)
    try:
        cfg = _parse(data, base_dir, out)
        cfg = replace(cfg, remote_inputs=tuple(dict.fromkeys(remote_found)))
    except UsageError as exc:  # a table that is not one: nothing below it can be read
        errors.append(str(exc))
    finally:
        _ERRORS.reset(token)
        _REMOTE.reset(rtoken)
    if errors:
        # unknown keys first: a typo (``[[source]]``) explains the "missing" key that follows from it
        errors.sort(key=lambda e: "unknown key" not in e)
        raise UsageError("\n".join(dict.fromkeys(errors)))
    return cfg


def _sources(top: _Table, base_dir: Path) -> tuple[SourceConfig, ...]:
    raw_sources = top.get("sources", list, None, required=True)
    if not raw_sources:
        raise UsageError("sources: at least one [[sources]] table is needed")
    sources = tuple(s for s in (_section(_source, _Table(s, f"sources[{i}]", base_dir))
                                for i, s in enumerate(raw_sources)) if s is not None)
    seen: set[str] = set()
    for i, s in enumerate(sources):
        if s.name in seen:
            _soft(f"sources[{i}].name: duplicate source name {s.name!r}")
        seen.add(s.name)
    return sources


def _captions(cap: _Table) -> CaptionSettings:
    captions = CaptionSettings(cap.path("templates"), cap.int("per_image", 5, lo=1), cap.int("seed", 0))
    cap.check_unknown()
    return captions


def _images(im: _Table) -> ImageSettings:
    mode = im.get("mode", str, "embed")
    if mode not in ("embed", "reference"):
        raise UsageError(f"{im.key('mode')}: must be 'embed' or 'reference', got {mode!r}")
    images = ImageSettings(mode, im.int("max_side", None, lo=16), im.get("stretch", dict, {}))
    im.check_unknown()
    return images


def _dedupe(dd: _Table) -> DedupeSettings:
    label_iou = dd.get("label_iou", float, 0.5)
    if not 0 < label_iou <= 1:
        raise UsageError(f"{dd.key('label_iou')}: must be in (0, 1], got {label_iou}")
    dedupe = DedupeSettings(dd.int("near_threshold", 2, lo=0), dd.get("drop_near", bool, False), label_iou)
    dd.check_unknown()
    return dedupe


def _splits(sp: _Table) -> SplitSettings:
    splits = SplitSettings(_ratios(sp, "ratios", DEFAULT_RATIOS), sp.int("seed", 0))
    sp.check_unknown()
    return splits


def _shard_rows(out_t: _Table) -> int:
    shard_rows = out_t.int("shard_rows", 2000, lo=1)
    out_t.check_unknown()
    return shard_rows


def _parse(data: dict[str, Any], base_dir: Path, out: Path | str | None) -> BuildConfig:
    from mmsar import remote

    top = _Table(data, "", base_dir)
    sources = _section(_sources, top, base_dir, default=())
    raw_out = top.get("out", str)
    if out is not None:
        raw_out = str(out)
    out_url = raw_out if raw_out is not None and remote.is_url(raw_out) else None
    if out_url is not None:
        out_dir = remote.output_alias(out_url)
    elif raw_out is not None:
        out_dir = (base_dir / remote.local_of_file_url(raw_out)).resolve() if out is None else \
            Path(remote.local_of_file_url(raw_out)).resolve()
    else:
        out_dir = (base_dir / "mmsar-out").resolve()
    # staging beside the output, not in it: the output folder is what gets published (and staging is
    # reused by the next build, so it is kept)
    raw_work = top.get("work", str)
    if raw_work is not None and remote.is_url(raw_work):
        raise UsageError(f"work: {raw_work}: staging must be a local folder (it is read and written row by row)")
    work = top.path("work") or out_dir.with_name(out_dir.name + ".work")
    parts = {
        "captions": _section(lambda: _captions(top.sub("captions"))),
        "images": _section(lambda: _images(top.sub("images"))),
        "dedupe": _section(lambda: _dedupe(top.sub("dedupe"))),
        "splits": _section(lambda: _splits(top.sub("splits"))),
        "shard_rows": _section(lambda: _shard_rows(top.sub("output"))),
        "sarcount": _section(lambda: _sarcount(top.sub("sarcount"))),
        "chips": _section(lambda: _chips(top.sub("chips"))),
    }
    name, seed = top.get("name", str, "MMSAR"), _section(top.int, "seed", 0, default=0)
    unit_scenes = _section(top.int, "unit_scenes", None, 1, default=None)
    top.check_unknown()
    if _ERRORS.get():
        raise UsageError(_ERRORS.get()[0])  # listed with the others by parse_config
    return BuildConfig(sources=sources, out=out_dir, work=work, name=name, seed=seed, base_dir=base_dir.resolve(),
                       unit_scenes=unit_scenes, out_url=out_url, **parts)


def check_inputs(cfg: BuildConfig) -> None:
    """Refuse a build whose inputs are not there, naming the config key (before any work starts; inputs
    given as URLs are fetched first: :func:`mmsar.remote.fetch_all`)."""
    for i, src in enumerate(cfg.sources):
        for j, spec in enumerate(src.inputs):
            for what, p in (("path", spec.path), ("images", spec.images), ("annotations", spec.annotations)):
                if p is not None and not p.exists():
                    raise UsageError(f"sources[{i}].input[{j}].{what}: {p} not found (source {src.name!r})")
    for i, ext in enumerate(cfg.chips.external):
        if not ext.path.is_dir():
            raise UsageError(f"chips.external[{i}].path: {ext.path} is not a folder")


def load_config(path: Path | str, *, out: Path | str | None = None) -> BuildConfig:
    """Read and validate ``mmsar.toml``; ``out`` overrides the file's ``out`` key."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{p}: config file not found") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{p}: invalid TOML: {exc}") from None
    try:
        return parse_config(data, p.resolve().parent, out=out)
    except UsageError as exc:  # every line names the file
        raise UsageError("\n".join(f"{p}: {line}" for line in str(exc).splitlines())) from None
