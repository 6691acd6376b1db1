"""Tasks that take other tasks' results, and the order to start them in.

Why: the chips of a split are joined from its parts' summaries, and the gallery is drawn from the written
split folders. With ``Result(i)`` standing in a task's arguments for task ``i``'s result, a distributor
starts such a task as soon as the tasks it names have finished, with their results in their places, while
the other workers go on with the rest; before, every join waited for every writing task, and one worker
idled through the largest join. A task may only name tasks listed before it, so there is never a cycle.

The start order is the critical path first (:func:`critical_path_order`), so all the parts of the biggest
join start early, the join overlaps the other work, and the small independent tasks fill the gaps at the
end. Order never changes results, only wall time.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Result:
    """Placeholder for the result of task ``task`` of the same map."""

    task: int


def needs(obj: Any) -> set[int]:
    """The tasks whose results ``obj`` (a task's arguments) names, in tuples and lists at any depth
    (dicts and other objects are not searched: a task's records stay cheap to look through)."""
    if isinstance(obj, Result):
        return {obj.task}
    if isinstance(obj, (tuple, list)):
        found: set[int] = set()
        for x in obj:
            if isinstance(x, (Result, tuple, list)):
                found |= needs(x)
        return found
    return set()


def resolve(obj: Any, results: Sequence[Any]) -> Any:
    """``obj`` with every :class:`Result` replaced by that task's result; containers without one are
    returned as they are (not copied)."""
    if isinstance(obj, Result):
        return results[obj.task]
    if isinstance(obj, (tuple, list)):
        new = [resolve(x, results) if isinstance(x, (Result, tuple, list)) else x for x in obj]
        if all(a is b for a, b in zip(new, obj, strict=True)):
            return obj
        return tuple(new) if isinstance(obj, tuple) else new
    return obj


def dependencies(args: Sequence[Any]) -> list[set[int]]:
    """Per task, the tasks it waits for; ValueError when a task names itself, a later task or none."""
    out = []
    for i, a in enumerate(args):
        mine = needs(a)
        bad = sorted(j for j in mine if not 0 <= j < i)
        if bad:
            raise ValueError(f"task {i} takes the result of task(s) {bad}: only earlier tasks can be named")
        out.append(mine)
    return out


def critical_path_order(costs: Sequence[float], deps: Sequence[set[int]]) -> list[int]:
    """Tasks by descending rank, ties in index order. A task's rank is its own cost, or, when tasks wait
    for it, the largest rank among them plus the cost of the slowest task each waits for: a task that
    waits for several starts when the slowest is done, so a small part of a big join ranks with its big
    siblings (started with them, not after unrelated work that the join could have overlapped)."""
    rank = [float(c) for c in costs]
    for i in range(len(costs) - 1, -1, -1):  # dependents come after what they need: their rank is final
        if deps[i]:
            slowest = max(costs[j] for j in deps[i])
            for j in deps[i]:
                rank[j] = max(rank[j], slowest + rank[i])
    return sorted(range(len(costs)), key=lambda i: (-rank[i], i))


class Schedule:
    """Which task to start next: of those whose needs have all finished, the first in ``order``.
    ``pop()`` -> a task index or None (nothing ready now); ``finish(i)`` frees its dependents;
    ``retry(i)`` makes a started task ready again."""

    def __init__(self, deps: Sequence[set[int]], order: Sequence[int] | None = None) -> None:
        order = list(order) if order is not None else list(range(len(deps)))
        if sorted(order) != list(range(len(deps))):
            raise ValueError("order must list every task once")
        self._rank = {i: k for k, i in enumerate(order)}
        self._waiting = {i: set(d) for i, d in enumerate(deps) if d}
        self._dependents: dict[int, list[int]] = {}
        for i, d in enumerate(deps):
            for j in d:
                self._dependents.setdefault(j, []).append(i)
        self._ready = [(self._rank[i], i) for i in range(len(deps)) if not deps[i]]
        heapq.heapify(self._ready)

    def pop(self) -> int | None:
        return heapq.heappop(self._ready)[1] if self._ready else None

    def finish(self, i: int) -> None:
        for k in self._dependents.get(i, ()):
            left = self._waiting[k]
            left.discard(i)
            if not left:
                del self._waiting[k]
                heapq.heappush(self._ready, (self._rank[k], k))

    def retry(self, i: int) -> None:
        heapq.heappush(self._ready, (self._rank[i], i))

    def place(self, i: int) -> int:
        """Task ``i``'s position in the start order (0: first)."""
        return self._rank[i]
