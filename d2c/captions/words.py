"""Wording helpers behind the template filters: plurals, articles, number phrases, synonyms.

Everything here turns a discretised fact into words; nothing decides what is true. The vocabulary comes
from ``templates/synonyms.toml`` (merged with a user folder's ``synonyms.toml``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from d2c.number_words import number_words

DOZENS_MIN = 24  # "dozens of" is said only from two full dozens up


def join_and(items: Any) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    items = [str(i) for i in items]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def capfirst(text: str) -> str:
    """Upper-case the first character only (``capitalize`` would lower-case 'SAR'); ``text`` itself when
    that changes nothing (most texts: this runs on every render)."""
    first = text[:1]
    upper = first.upper()
    return text if upper == first else upper + text[1:]


@dataclass
class Vocabulary:
    """Synonyms, plurals, cell phrases, modality nouns, sensor names and article exceptions."""

    nouns: dict[str, list[str]] = field(default_factory=dict)
    plurals: dict[str, str] = field(default_factory=dict)
    modality: list[str] = field(default_factory=list)
    cells: dict[str, list[str]] = field(default_factory=dict)
    sensors: dict[str, str] = field(default_factory=dict)
    article_a: list[str] = field(default_factory=list)
    article_an: list[str] = field(default_factory=list)
    source_text: str = ""

    @classmethod
    def load(cls, *paths: Path) -> Vocabulary:
        """Merge the TOML files in order (later tables override earlier keys)."""
        data: dict[str, dict[str, Any]] = {}
        texts = []
        for p in paths:
            text = p.read_text(encoding="utf-8")
            texts.append(text)
            try:
                loaded = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                from d2c.captions.templates import TemplateError

                raise TemplateError(f"{p}: invalid TOML: {exc}") from exc
            for table, values in loaded.items():
                data.setdefault(table, {}).update(values)
        arts = data.get("articles", {})
        return cls(
            nouns={k: list(v) for k, v in data.get("nouns", {}).items()},
            plurals=dict(data.get("plurals", {})),
            modality=list(data.get("modality", {}).get("nouns", ["SAR image"])),
            cells={k: list(v) for k, v in data.get("cells", {}).items()},
            sensors={k.lower(): v for k, v in data.get("sensors", {}).items()},
            article_a=list(arts.get("a", [])),
            article_an=list(arts.get("an", [])),
            source_text="\n".join(texts),
        )

    # ---- words ----

    def synonyms(self, cls_name: str) -> list[str]:
        return self.nouns.get(cls_name) or [cls_name.replace("_", " ")]

    def plural(self, word: str) -> str:
        if word in self.plurals:
            return self.plurals[word]
        head, _, last = word.rpartition(" ")
        if last in self.plurals:
            return f"{head} {self.plurals[last]}".strip()
        if last.endswith(("s", "x", "z", "ch", "sh")):
            return word + "es"
        if len(last) > 1 and last.endswith("y") and last[-2] not in "aeiou":
            return word[:-1] + "ies"
        return word + "s"

    def noun(self, cls_name: str, syn: int, n: int = 1) -> str:
        options = self.synonyms(cls_name)
        word = options[syn % len(options)]
        return word if n == 1 else self.plural(word)

    def article(self, phrase: str) -> str:
        low = phrase.lower()
        if any(low.startswith(p) for p in self.article_an):
            return f"an {phrase}"
        if any(low.startswith(p) for p in self.article_a):
            return f"a {phrase}"
        return f"{'an' if low[:1] in 'aeiou' else 'a'} {phrase}"

    def cell(self, cell: str, syn: int) -> str:
        options = self.cells.get(cell) or [f"in the {cell} part"]
        return options[syn % len(options)]

    # ---- numbers ----

    def number(self, n: int, *, digits: bool, syn: int, threshold: int, dozens: bool = False) -> str:
        """Digits or words up to ``threshold``; above it a quantifier that is true of ``n`` ("dozens of"
        only before a noun, i.e. from :meth:`quantity`)."""
        if n > threshold:
            options = ["many"]
            tens = (n - 1) // 10 * 10
            if tens >= 10:
                options.append(f"more than {tens if digits else number_words(tens)}")
            if dozens and n >= DOZENS_MIN:
                options.append("dozens of")
            return options[syn % len(options)]
        if n == 1:
            return "1" if digits else "one"
        return str(n) if digits else number_words(n)

    def quantity(
        self, group: Any, *, digits: bool, syn: int, threshold: int, adjective: str | None = None,
        at_least: bool = False,
    ) -> str:
        """``three ships``, ``a single small ship``, ``at least three ships`` (some difficult, or
        ``at_least``: a lower bound, for scenes some of whose objects were rejected), ``many ships``."""
        cls_name, n, difficult = group
        n = int(n)
        hedge = "at least " if (difficult or at_least) and n <= threshold else ""
        if n == 1 and not digits and not hedge:
            phrase = ("a single", "one")[syn % 2]
        else:
            phrase = self.number(n, digits=digits, syn=syn, threshold=threshold, dozens=True)
        noun = self.noun(cls_name, syn, n)
        adj = f"{adjective} " if adjective else ""
        return f"{hedge}{phrase} {adj}{noun}"

    def metres(self, m: int, syn: int) -> str:
        return f"{m} m" if syn % 2 == 0 else f"{m} metres"
