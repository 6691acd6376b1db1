"""Reading in parallel: a reader whose input splits into independent units can hand out a :class:`ReadPlan`.

Why: with ``--workers N`` the scenes are built where they are captioned, so the main process only plans
(parses the file list or the COCO JSON once), counts and writes, instead of building every Scene and
shipping it to a worker. Workers are forked after planning and read their units from the shared plan.

The contract: ``head`` (the Rejects found while planning), then ``read_units(0, a)``, ``read_units(a, b)``,
... ``read_units(k, units)`` give exactly the items, in the same order, that the reader's ``read`` gives.
A reader offers a plan through an optional ``plan(path, options)`` method that returns one or None.
With ``blocks=True`` a plan whose ``gives_blocks`` is true may give a run of Scenes as one
:class:`d2c.blocks.SceneBlock` (the same scenes as columns, for annotation-only conversion); plans that
cannot ignore it. A plan may also offer ``release_units(start, stop)``: units that will not be
read again, whose memory the planning process may free.

Units are independent unless the plan says ``keys_across_units = True`` (COCO: an image whose scene key an
earlier image has is a Reject). Such a plan's ``read_units`` takes ``taken`` (scene key -> first unit, -1
for keys of units before ``start``) and adds the keys it locates; a reader in parallel passes its own and
the caller checks the keys of each span against the spans before it (:func:`d2c.convert_worker.run_units`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

from d2c.blocks import SceneBlock
from d2c.classes import ClassResolver
from d2c.images import ImageFinder
from d2c.model import Reject, Scene
from d2c.readers.base import NOT_REGULAR_FILE, FileReader, Layout, ReadOptions, rel_to


@runtime_checkable
class ReadPlan(Protocol):
    head: list[Reject]  # found while planning; they come before every unit's items
    units: int  # independent pieces, in reading order (COCO: images; DOTA/VOC: annotation files)

    def read_units(self, start: int, stop: int, *, blocks: bool = False) -> Iterator[Scene | Reject | SceneBlock]:
        """The items of units ``start`` .. ``stop - 1``, in order (runs of Scenes as blocks, if asked and able)."""
        ...


def plan_items(plan: ReadPlan) -> Iterator[Scene | Reject]:
    """Everything the plan reads, in order: what the reader's ``read`` yields."""
    yield from plan.head
    yield from plan.read_units(0, plan.units)


class SpanPlan:
    """Units ``start`` .. ``stop - 1`` of ``plan`` as a plan of their own (``convert(span=...)``).

    Why a view and not a new reading: each span then gives exactly the items the whole reading gives for
    those units, so the spans of a plan, converted apart and joined in order, are the whole conversion.
    ``head`` (Rejects found while planning) belongs to the span that starts at 0. For a plan with
    ``keys_across_units`` (COCO) a span is read as if no earlier unit had its keys, except ``taken`` (keys
    located before the span, which the caller passes), and :meth:`located` gives back the keys its units
    located: the caller, joining spans in order, checks them against the earlier spans' keys and reads a
    span that meets one again with those keys taken (rare), as :func:`d2c.convert_worker.run_units` does
    with its own spans. Why not locate every earlier unit's keys up front: that made each span cost the
    whole input before it (the n-th of n spans located n - 1 spans' images), so the spans of one input did
    not scale."""

    def __init__(self, plan: ReadPlan, start: int, stop: int, taken: Iterable[str] = ()) -> None:
        stop = min(stop, plan.units)
        start = min(start, stop)
        self.plan, self.start, self.stop = plan, start, stop
        self.head = list(plan.head) if start == 0 else []
        self.units = stop - start
        self.gives_blocks = getattr(plan, "gives_blocks", False)
        self.keys_across_units = getattr(plan, "keys_across_units", False)
        self.taken = tuple(taken)
        self._handed: list[dict[str, int]] = []  # every ``taken`` map given to the plan: what it located
        self._noted: set[str] = set()  # what spans read by forked workers located (they tell run_units)

    def read_units(self, start: int, stop: int, *, blocks: bool = False, taken: dict[str, int] | None = None
                   ) -> Iterator[Scene | Reject | SceneBlock]:
        """The plan's units ``self.start + start`` .. ``self.start + stop - 1``."""
        extra: dict[str, Any] = {}
        if self.keys_across_units:
            taken = {} if taken is None else taken
            for key in self.taken:
                taken.setdefault(key, -1)
            self._handed.append(taken)
            extra["taken"] = taken
        return self.plan.read_units(self.start + start, self.start + min(stop, self.units), blocks=blocks, **extra)

    def note_located(self, keys: Iterable[str]) -> None:
        """Keys located by a reading of these units in another process (forked workers)."""
        self._noted.update(keys)

    def located(self) -> list[str]:
        """The scene keys the span's units located, sorted (none for a plan whose units are independent)."""
        return sorted(self._noted.union(*({k for k, unit in t.items() if unit >= 0} for t in self._handed)))

    def release_units(self, start: int, stop: int) -> None:
        release = getattr(self.plan, "release_units", None)
        if release is not None:
            release(self.start + start, self.start + stop)


class LayoutPlan:
    """A dataset with one annotation file per image (DOTA, VOC): one unit per annotation file, read by
    the format's ``read_file(f, fname, layout, finder, classes, options)``; anything not a regular file is
    a Reject, never opened.
    The image finder and class resolver are made once, so their caches serve every unit."""

    def __init__(self, lay: Layout, options: ReadOptions, read_file: FileReader) -> None:
        self.lay, self.options, self.read_file = lay, options, read_file
        self.finder = ImageFinder(lay.root)
        self.classes = ClassResolver(options.class_map, options.unknown_classes)
        self.head: list[Reject] = []
        self.units = len(lay.files)

    def read_units(self, start: int, stop: int, *, blocks: bool = False) -> Iterator[Scene | Reject]:
        """The items of annotation files ``start`` .. ``stop - 1`` (always as Scenes: ``blocks`` is ignored)."""
        for f in self.lay.files[start:stop]:
            fname = rel_to(f, self.lay.root)
            if not f.is_file():  # a pipe or folder named like an annotation file is never opened
                yield Reject(fname, None, NOT_REGULAR_FILE, "parse_error")
                continue
            yield from self.read_file(f, fname, self.lay, self.finder, self.classes, self.options)
