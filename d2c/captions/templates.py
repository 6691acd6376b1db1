"""Caption template files: front matter, validation and loading (a later folder overrides an id).

A template is data: a ``.j2`` file whose leading ``{# ... #}`` comment gives its ``id``, ``family``,
``weight``, ``requires`` (attribute names) and ``scenes`` (which scenes it may caption: ``complete``, the
default, ``partial`` or ``any``); see docs/templates.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from d2c.captions import attributes
from d2c.errors import D2CError

REPO_TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
DEFAULT_TEMPLATES_DIR = REPO_TEMPLATES / "captions"
DEFAULT_SYNONYMS = REPO_TEMPLATES / "synonyms.toml"
FAMILIES = ("count", "position", "size", "orientation", "arrangement", "multi-class", "empty", "sensor")
_FRONT = re.compile(r"\A\{#-?(.*?)-?#\}", re.DOTALL)
_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
# Which scenes a template may caption. A *partial* scene is one some of whose annotated objects were rejected
# (flagged ``objects_rejected``, see d2c.partial): a caption of it must not claim a total, emptiness or
# "only", since the rejected objects are unknown. ``complete`` (default): scenes with every object kept;
# ``partial``: only partial scenes; ``any``: both (the template makes no such claim).
SCENES = ("complete", "partial", "any")


class TemplateError(D2CError):
    """A template file is malformed or did something the sandbox forbids; the message names it."""


@dataclass(frozen=True)
class TemplateInfo:
    id: str
    family: str
    weight: float
    requires: tuple[str, ...]
    path: Path
    scenes: str = "complete"  # one of SCENES

    def captions(self, partial: bool) -> bool:
        """Whether this template may caption a partial scene (``partial``) or a complete one."""
        return self.scenes == "any" or (self.scenes == "partial") == partial


def parse_front_matter(source: str, path: Path) -> dict[str, Any]:
    """Read ``key: value`` lines from the leading ``{# ... #}`` comment; raise naming file and line."""
    m = _FRONT.match(source.lstrip("\ufeff"))
    if not m:
        raise TemplateError(f"{path}:1: missing front-matter comment '{{# id: ... family: ... #}}'")
    meta: dict[str, Any] = {}
    for lineno, line in enumerate(m.group(1).splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise TemplateError(f"{path}:{lineno}: expected 'key: value' in front matter, got {line!r}")
        meta[key.strip()] = value.strip()
    return meta


def template_info(source: str, path: Path) -> TemplateInfo:
    """Validate a template's metadata: id, family, weight and requires (known attribute names)."""
    meta = parse_front_matter(source, path)
    missing = [k for k in ("id", "family", "requires") if k not in meta]
    if missing:
        raise TemplateError(f"{path}: front matter lacks {', '.join(missing)}")
    tid, family = meta["id"], meta["family"]
    if not _ID.match(tid):
        raise TemplateError(f"{path}: id {tid!r} must be lower-case letters, digits, '.', '_' or '-'")
    if family not in FAMILIES:
        raise TemplateError(f"{path}: family {family!r} is not one of {', '.join(FAMILIES)}")
    try:
        weight = float(meta.get("weight", "1"))
    except ValueError:
        raise TemplateError(f"{path}: weight {meta['weight']!r} is not a number") from None
    if not weight > 0:
        raise TemplateError(f"{path}: weight must be positive, got {weight}")
    requires = tuple(r.strip() for r in meta["requires"].strip("[]").split(",") if r.strip())
    unknown = [r for r in requires if r not in attributes.REGISTRY]
    if unknown:
        known = ", ".join(sorted(attributes.REGISTRY))
        raise TemplateError(f"{path}: requires unknown attribute(s) {', '.join(unknown)} (known: {known})")
    if not requires:
        raise TemplateError(f"{path}: requires must name at least one attribute (the claims it makes)")
    scenes = meta.get("scenes", "complete")
    if scenes not in SCENES:
        raise TemplateError(f"{path}: scenes {scenes!r} is not one of {', '.join(SCENES)}")
    return TemplateInfo(tid, family, weight, requires, path, scenes)


def load_sources(dirs: list[Path]) -> dict[str, tuple[TemplateInfo, str]]:
    """Templates by id from ``dirs`` in order; a later folder overrides an earlier one's id."""
    found: dict[str, tuple[TemplateInfo, str]] = {}
    for d in dirs:
        if not d.is_dir():
            raise TemplateError(f"{d}: templates folder not found")
        local: dict[str, Path] = {}
        for path in sorted(d.glob("*.j2")):
            try:
                source = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise TemplateError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
            info = template_info(source, path)
            if info.id in local:
                raise TemplateError(f"{path}: id {info.id!r} already used by {local[info.id]}")
            local[info.id] = path
            found[info.id] = (info, source)
    return found
