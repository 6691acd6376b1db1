"""How d2c's hot loops treat Python's cyclic garbage collector.

Reading and captioning a large dataset allocate millions of small, acyclic objects; the collector's passes
over them (and over long-lived plans and caches) cost a fifth to a third of a conversion. Reference
counting frees all of them as usual; these context managers only make the cyclic passes rarer or skip
objects that will live for the whole block.

Why it stays (issue 23, measured, docs/benchmarks.md): with all of it switched off, the 116k-image
annotation-only benchmark took 21% longer on one worker (4.94 s against 4.09 s) and 17% longer on two
(5.69 s against 4.88 s), best of 3 on a loaded 2-core machine; the other two speed modules bought under
10% and were removed.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic collector around a stretch that allocates millions of acyclic objects and yields
    nothing (parsing, building instances): its repeated full passes cost a third of the time on large
    files. The collector's state is restored on exit."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextmanager
def gc_frozen() -> Iterator[None]:
    """Put every object alive now (a plan: a million small objects on a large file) out of the cyclic
    collector's sight for the block. Each collection triggered while scenes are built would walk them all
    again, and in workers forked from this process it would write to them, copying the shared pages.
    Reference counting still frees them as usual. Only done when nothing is frozen yet, so that leaving
    the block gives back no one else's frozen objects."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def age_young_objects() -> None:
    """Move every object the collector tracks into its oldest generation, without walking them.

    Why: a plan of a large file is a million young containers (two tuples per annotation, a few objects
    per image), and the first collection after the collector is re-enabled would walk them all and the
    numbers they hold: a sixth of planning (0.25 s of 1.5 s CPU on a 116k-image COCO file). They are
    acyclic and live as long as the plan; a full collection still sees them. Skipped when objects are
    frozen already: unfreezing would give back someone else's."""
    if not gc.get_freeze_count():
        gc.freeze()
        gc.unfreeze()  # the frozen objects go back to the oldest generation


GC_THRESHOLDS = (20_000, 50, 50)  # Python's defaults are (700, 10, 10)


def relaxed_thresholds() -> tuple[int, int, int]:
    """The current thresholds raised to at least :data:`GC_THRESHOLDS`."""
    return tuple(max(a, b) for a, b in zip(gc.get_threshold(), GC_THRESHOLDS, strict=True))  # type: ignore[return-value]


@contextmanager
def gc_relaxed() -> Iterator[None]:
    """Run the cyclic collector less often for the block (never more often than it was set to). Reading
    and captioning allocate millions of short-lived, acyclic objects (scenes, instances, rows) while a
    chunk's worth of them is alive: at Python's default thresholds the collections that walk them, and
    the long-lived caches, took about a fifth of a conversion's time (measured: 12 s -> 9.5 s CPU on a
    116k-image COCO file). Cycles are still collected, at the higher thresholds."""
    old = gc.get_threshold()
    gc.set_threshold(*relaxed_thresholds())
    try:
        yield
    finally:
        gc.set_threshold(*old)
