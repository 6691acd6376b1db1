"""Tasks that take earlier tasks' results (mmsar.taskgraph): the start order, the schedule, and the local
pool and inline distributor running such tasks (the Dask path: tests/test_mmsar_distributed.py)."""

from __future__ import annotations

import os

import pytest

from mmsar.distributor import Distributor, LocalDistributor
from mmsar.taskgraph import Result, Schedule, critical_path_order, dependencies, needs, resolve


def test_needs_and_resolve_look_through_tuples_and_lists_only():
    args = ("out", [Result(0), Result(2)], (1, [Result(1)]), {"not searched": Result(3)})
    assert needs(args) == {0, 1, 2}
    got = resolve(args, ["r0", "r1", "r2"])
    assert got == ("out", ["r0", "r2"], (1, ["r1"]), {"not searched": Result(3)})
    plain = ("x", [1, 2, 3])
    assert resolve(plain, []) is plain  # nothing to replace: not copied


def test_only_earlier_tasks_can_be_named():
    assert dependencies([(), (Result(0),), ([Result(0), Result(1)],)]) == [set(), {0}, {0, 1}]
    with pytest.raises(ValueError, match=r"task 1 takes the result of task\(s\) \[1, 2\]"):
        dependencies([(), (Result(1), Result(2)), ()])


def test_the_critical_path_starts_first():
    # task 3 (cost 1) waits for 0 (cost 4): their chain (5) outranks the lone task 1 (cost 4.5); task 2 last
    order = critical_path_order([4, 4.5, 0.5, 1], [set(), set(), set(), {0}])
    assert order == [0, 1, 3, 2]
    assert critical_path_order([1, 1, 1], [set(), set(), set()]) == [0, 1, 2]  # ties: index order


def test_a_small_part_of_a_big_join_ranks_with_its_siblings():
    """Parts 0-2 (7 s, 7 s, 2 s) feed join 4 (1 s); task 3 (5 s) is on its own. The join can only start
    after its slowest part, so the 2 s part goes before task 3, and the join overlaps task 3."""
    order = critical_path_order([7, 7, 2, 5, 1], [set(), set(), set(), set(), {0, 1, 2}])
    assert order == [0, 1, 2, 3, 4]


def test_the_schedule_holds_a_task_until_its_needs_are_done():
    s = Schedule([set(), set(), {0, 1}], order=[2, 1, 0])
    assert s.pop() == 1 and s.pop() == 0 and s.pop() is None  # 2 comes first in order but is not ready
    s.finish(0)
    assert s.pop() is None
    s.retry(0)  # a retried task is ready again, at its place in the order
    s.finish(1)
    assert s.pop() == 2 and s.pop() == 0 and s.pop() is None
    with pytest.raises(ValueError, match="every task once"):
        Schedule([set(), set()], order=[0, 0])


def _pid_and(*xs: object) -> tuple[int, tuple[object, ...]]:
    return os.getpid(), xs


def _total(parts: list[tuple[int, tuple[int, ...]]], extra: int) -> int:
    return sum(sum(xs) for _, xs in parts) + extra


def _dispatch(kind: str, args: tuple) -> object:
    return _pid_and(*args) if kind == "pid" else _total(*args)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [1, 2])
def test_a_task_gets_its_needs_results_whatever_the_start_order(workers):
    """Task 3 is asked to start first, but runs after tasks 0 and 2, with their results in its arguments;
    with two workers the parts ran in the pool's processes."""
    with LocalDistributor(workers) as dist:
        got = dist.map(_dispatch, [("pid", (1, 2)), ("pid", (10,)), ("pid", (3,)),
                                   ("total", ([Result(0), Result(2)], 100))], order=[3, 2, 1, 0])
    assert [xs for _, xs in got[:3]] == [(1, 2), (10,), (3,)]
    assert got[3] == 1 + 2 + 3 + 100
    assert ({pid for pid, _ in got[:3]} == {os.getpid()}) == (workers == 1)


def test_the_inline_distributor_refuses_a_task_naming_a_later_one():
    with pytest.raises(ValueError, match="only earlier tasks"):
        Distributor().map(_dispatch, [("total", ([Result(1)], 0)), ("pid", (1,))])


def _stamp(kind: str, args: tuple) -> object:
    import time

    return time.time() if kind == "stamp" else sum(args[0]) + args[1]


@pytest.mark.timeout(60)
def test_dask_starts_ready_tasks_in_order_and_gives_results_to_the_tasks_naming_them():
    pytest.importorskip("dask.distributed")
    from mmsar.distributor import DaskDistributor

    with DaskDistributor(None, workers=1) as dist:
        got = dist.map(_stamp, [("stamp", ()), ("stamp", ()), ("stamp", ()), ("sum", ([Result(0), Result(2)], 1))],
                       order=[3, 2, 0, 1])
    assert got[2] < got[0] < got[1]  # the order asked for (task 3 first, but it waits for 0 and 2)
    assert got[3] == pytest.approx(got[0] + got[2] + 1)
