"""Run accounting: what was read, written, clipped and rejected, and the invariant that ties them.

``instances_in == instances_out + instances_rejected``: every annotated object read ends up written or in
the rejects report. Stats from parallel workers are combined with :meth:`Stats.merge`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from d2c.model import Reject, Scene
from d2c.partial import PARTIAL_CODE


@dataclass
class Stats:
    scenes_read: int = 0
    scenes_written: int = 0
    instances_in: int = 0
    instances_out: int = 0
    instances_rejected: int = 0
    instances_clipped: int = 0
    rejects: Counter = field(default_factory=Counter)  # code -> number of Reject records
    rejected_instances: Counter = field(default_factory=Counter)  # code -> instances they dropped

    def add_scene(self, scene: Scene) -> None:
        """A Scene came out of a reader: its instances are now "in"."""
        self.scenes_read += 1
        self.instances_in += scene.num_instances
        self.instances_clipped += scene.clipped

    def add_written(self, scene: Scene) -> None:
        """The scene (and its instances) reached the output."""
        self.scenes_written += 1
        self.instances_out += scene.num_instances

    def add_reject(self, reject: Reject, *, already_in: bool = False) -> None:
        """A Reject; ``already_in`` when its instances belong to a Scene counted by :meth:`add_scene`
        (a later stage refused the scene), so they are not counted "in" twice."""
        self.rejects[reject.code] += 1
        self.rejected_instances[reject.code] += reject.instances
        if reject.code == PARTIAL_CODE and not already_in:  # a scene read, then refused whole (d2c.partial)
            self.scenes_read += 1
        self.instances_rejected += reject.instances
        if not already_in:
            self.instances_in += reject.instances

    def add(self, item: Scene | Reject) -> None:
        """Count a reader's output item (a Scene as read, or a Reject)."""
        if isinstance(item, Scene):
            self.add_scene(item)
        else:
            self.add_reject(item)

    @classmethod
    def of(cls, items: Iterable[Scene | Reject], *, written: bool = True) -> Stats:
        """Stats of a reader's stream; ``written`` counts every Scene as written (read-only runs)."""
        st = cls()
        for it in items:
            st.add(it)
            if written and isinstance(it, Scene):
                st.add_written(it)
        return st

    @property
    def rejects_total(self) -> int:
        return sum(self.rejects.values())

    def merge(self, other: Stats) -> Stats:
        for name in ("scenes_read", "scenes_written", "instances_in", "instances_out", "instances_rejected", "instances_clipped"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.rejects.update(other.rejects)
        self.rejected_instances.update(other.rejected_instances)
        return self

    def invariant_problems(self) -> list[str]:
        """Empty when ``instances_in == instances_out + instances_rejected``; else what is off."""
        if self.instances_in == self.instances_out + self.instances_rejected:
            return []
        return [
            f"instances in ({self.instances_in}) != out ({self.instances_out}) + rejected "
            f"({self.instances_rejected}): {self.instances_in - self.instances_out - self.instances_rejected} unaccounted"
        ]

    def check_invariant(self) -> None:
        problems = self.invariant_problems()
        if problems:
            raise AssertionError(problems[0])

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenes_read": self.scenes_read,
            "scenes_written": self.scenes_written,
            "instances_in": self.instances_in,
            "instances_out": self.instances_out,
            "instances_rejected": self.instances_rejected,
            "instances_clipped": self.instances_clipped,
            "rejects": dict(sorted(self.rejects.items())),
            "rejected_instances": dict(sorted(self.rejected_instances.items())),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Stats:
        st = cls(**{k: int(data.get(k, 0)) for k in (
            "scenes_read", "scenes_written", "instances_in", "instances_out", "instances_rejected", "instances_clipped"
        )})
        st.rejects.update(data.get("rejects", {}))
        st.rejected_instances.update(data.get("rejected_instances", {}))
        return st


# reject codes that refuse every object of a class, with the fix to suggest
_CLASS_FIXES = {
    "numeric_class": "their class names are digits only: name them with a class map, e.g. --class-map ssdd "
                     "(SSDD's class \"0\" is a ship) or --class-map FILE ([aliases] \"0\" = \"ship\")",
    "unknown_class": "their classes are not in the class map: add them ([aliases] or classes = [...]) or keep "
                     "unknown classes",
}


def advice(stats: Stats) -> list[str]:
    """One line per thing the user should know about a run's rejects, with the fix where there is one: a
    whole class refused, scenes left out because some of their objects were, nothing written at all."""
    lines = []
    if stats.instances_rejected:
        why = ", ".join(f"{code} {n}" for code, n in sorted(stats.rejected_instances.items()) if n)
        lines.append(f"{stats.instances_rejected} of {stats.instances_in} annotated objects were rejected ({why}); "
                     "see the rejects report")
    for code, fix in _CLASS_FIXES.items():
        if stats.rejected_instances.get(code):
            lines.append(f"{stats.rejected_instances[code]} objects rejected as {code}: {fix}")
    scenes = stats.rejects.get("partial_scene", 0)
    if scenes:
        lines.append(f"{scenes} scenes left out whole (partial_scene, taking {stats.rejected_instances['partial_scene']} "
                     "valid objects with them) because some of their objects were rejected, so that no caption "
                     "claims a total it cannot know: fix those objects, or pass --keep-partial-scenes to keep "
                     "them flagged objects_rejected")
    if stats.instances_in and not stats.instances_out:
        lines.append("no annotated object was written at all")
    return lines


def summary_table(stats: Stats, title: str = "d2c summary"):
    """A rich Table of the run: counts, then rejects by reason."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("what")
    table.add_column("count", justify="right")
    for label, value in (
        ("scenes read", stats.scenes_read),
        ("scenes written", stats.scenes_written),
        ("instances read", stats.instances_in),
        ("instances written", stats.instances_out),
        ("instances clipped", stats.instances_clipped),
        ("instances rejected", stats.instances_rejected),
    ):
        table.add_row(label, str(value))
    for code, n in sorted(stats.rejects.items()):
        table.add_row(f"rejected: {code}", f"{n} ({stats.rejected_instances.get(code, 0)} instances)")
    return table


def render_summary(stats: Stats, console=None, title: str = "d2c summary") -> str:
    """The summary table as plain text; also printed to ``console`` when one is given."""
    from rich.console import Console

    text_console = Console(record=True, width=80, file=_Null())
    text_console.print(summary_table(stats, title))
    if console is not None:
        console.print(summary_table(stats, title))
    return text_console.export_text()


class _Null:
    def write(self, _s: str) -> int:
        return 0

    def flush(self) -> None:
        pass
