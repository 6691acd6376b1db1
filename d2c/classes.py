"""Class unification: raw category names as written in annotations -> the canonical SAR taxonomy.

Class maps are TOML files (``templates/classmaps/*.toml``)::

    name = "ssdd"
    extends = "default"        # optional: start from another map (a name in templates/classmaps or a path)
    classes = ["ship", ...]    # optional: extra canonical classes
    [aliases]
    "0" = "ship"

Raw names match case-insensitively, with ``_`` and spaces read as ``-`` (``Small_Vehicle`` = ``small-vehicle``).
A name that is only digits (``0``, ``"3"``) is never used as a word in a caption: without a map entry it is
refused, with a message that says how to give a map.
"""

from __future__ import annotations

import logging
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from d2c.errors import UsageError

log = logging.getLogger(__name__)

CLASSMAP_DIR = Path(__file__).resolve().parents[1] / "templates" / "classmaps"
DEFAULT_CLASSES = ("ship", "aircraft", "car", "tank", "bridge", "harbor")
POLICIES = ("keep", "reject")
_SEP = re.compile(r"[\s_]+")

MAP_HINT = (
    "give a class map: --class-map FILE (or `class_map` in the config), a TOML file with "
    '[aliases] "0" = "ship"; the built-in --class-map ssdd is one'
)


def normalise(raw: Any) -> str:
    """The lookup form of a raw name: stripped, lower case, ``_`` and spaces as ``-``."""
    return _SEP.sub("-", str(raw).strip().lower())


@dataclass
class ClassMap:
    """Canonical classes and the aliases that lead to them."""

    name: str = "default"
    classes: tuple[str, ...] = DEFAULT_CLASSES
    aliases: dict[str, str] = field(default_factory=dict)

    @classmethod
    def default(cls) -> ClassMap:
        return cls.load(None)

    @classmethod
    def load(cls, path_or_name: str | Path | None) -> ClassMap:
        """Load a TOML map by path, or by name from ``templates/classmaps`` (None = ``default``)."""
        path = _locate(path_or_name)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"{path}: cannot read class map: {exc}") from exc
        return cls.from_dict(data, origin=str(path), base_dir=path.parent)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, origin: str = "<dict>", base_dir: Path | None = None) -> ClassMap:
        base = None
        if data.get("extends"):
            ext = str(data["extends"])
            near = (base_dir / ext) if base_dir else None
            base = cls.load(near if near is not None and near.is_file() else ext)
        classes = list(base.classes) if base else []
        for c in data.get("classes", [] if base else DEFAULT_CLASSES):
            if normalise(c) not in classes:
                classes.append(normalise(c))
        aliases = dict(base.aliases) if base else {}
        raw_aliases = data.get("aliases", {})
        if not isinstance(raw_aliases, dict):
            raise UsageError(f"{origin}: [aliases] must be a table of raw name = canonical name")
        for raw, canon in raw_aliases.items():
            target = normalise(canon)
            if target not in classes:
                raise UsageError(f"{origin}: alias {raw!r} -> {canon!r}: expected one of {classes}, got {canon!r}")
            aliases[normalise(raw)] = target
        return cls(name=str(data.get("name", Path(origin).stem)), classes=tuple(classes), aliases=aliases)

    def canonical(self, raw: Any) -> str | None:
        """The canonical class of ``raw``, or None when the map does not know it."""
        key = normalise(raw)
        if key in self.aliases:
            return self.aliases[key]
        return key if key in self.classes else None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "classes": list(self.classes), "aliases": dict(sorted(self.aliases.items()))}


def _locate(path_or_name: str | Path | None) -> Path:
    if path_or_name is None:
        return CLASSMAP_DIR / "default.toml"
    p = Path(path_or_name)
    if p.is_file():
        return p
    named = CLASSMAP_DIR / f"{path_or_name}.toml"
    if named.is_file():
        return named
    known = sorted(q.stem for q in CLASSMAP_DIR.glob("*.toml"))
    raise UsageError(f"class map {str(path_or_name)!r} not found: give a TOML file or one of {known}")


@dataclass(frozen=True, slots=True)
class Resolved:
    """A class decision: ``category`` when accepted, else ``code``/``reason`` for the Reject."""

    category: str | None
    code: str | None = None
    reason: str | None = None


class ClassResolver:
    """Applies a map and the unknown-class policy, caching per raw name and warning once per new class."""

    def __init__(self, class_map: ClassMap | None = None, unknown: str = "keep") -> None:
        if unknown not in POLICIES:
            raise UsageError(f"unknown_classes must be one of {POLICIES}, got {unknown!r}")
        self.map = class_map if class_map is not None else ClassMap.default()
        self.unknown = unknown
        self._cache: dict[str, Resolved] = {}
        self.new_classes: list[str] = []

    def resolve(self, raw: Any) -> Resolved:
        text = str(raw)
        hit = self._cache.get(text)
        if hit is None:
            hit = self._cache[text] = self._decide(text)
        return hit

    def _decide(self, raw: str) -> Resolved:
        canon = self.map.canonical(raw)
        if canon is not None:
            return Resolved(canon)
        key = normalise(raw)
        if not key:
            return Resolved(None, "bad_class", "empty class name")
        if key.isdigit():
            return Resolved(
                None, "numeric_class", f"class {raw!r} is only digits and class map {self.map.name!r} has no entry: {MAP_HINT}"
            )
        if self.unknown == "reject":
            return Resolved(None, "unknown_class", f"class {raw!r} is not in class map {self.map.name!r}")
        log.warning("class %r is not in class map %r: kept as a new class %r", raw, self.map.name, key)
        self.new_classes.append(key)
        return Resolved(key)
