"""``bilevel.workers``: ``map_tasks`` gives every task's result, in the tasks' order, here or in
workers of one torch thread each; ``value_from_child`` gives one function's result from a fresh
process, or None when that process ends without one or overruns its deadline."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import put_at_once, sleep_without_putting

from bilevel.errors import UserError
from bilevel.workers import map_tasks, value_from_child


def test_results_keep_the_tasks_order_here_and_in_workers() -> None:
    tasks = [(2, 3), (3, 2), (2, 5)]
    assert map_tasks(pow, tasks, jobs=1) == [8, 9, 32]
    assert map_tasks(pow, tasks, jobs=2) == [8, 9, 32]


def test_one_job_runs_every_task_here_in_no_worker() -> None:
    """jobs=1 is no pool at all: a task may be a closure no worker could be sent, and sees what
    this process holds."""
    here = os.getpid()
    assert map_tasks(os.getpid, [(), ()], jobs=1) == [here, here]
    seen = {"mark": 7}
    assert map_tasks(lambda k: seen[k], [("mark",)], jobs=1) == [7]


def test_more_jobs_than_tasks_start_one_worker_a_task() -> None:
    """`--jobs 99999999999999999999` (bench l2l, dro, ait) was an OverflowError from the pool;
    each task still runs in a worker, not here."""
    here = os.getpid()
    assert here not in map_tasks(os.getpid, [(), ()], jobs=10**20)
    assert map_tasks(pow, [(2, 3), (3, 2)], jobs=10**20) == [8, 9]


def test_workers_take_one_torch_thread_unless_told_otherwise() -> None:
    torch.set_num_threads(2)
    assert map_tasks(torch.get_num_threads, [(), ()], jobs=2) == [1, 1]
    assert map_tasks(torch.get_num_threads, [(), ()], jobs=2, threads=None) == [2, 2]


def _fail() -> None:
    raise UserError("this task fails.")


def test_tasks_run_here_take_the_thread_count_and_the_parent_gets_its_own_back() -> None:
    """jobs=1 ran its tasks at the parent's count, though studies promise one thread a run:
    a run's CPU seconds (all threads) were then not comparable with a one-thread run's."""
    torch.set_num_threads(2)
    assert map_tasks(torch.get_num_threads, [(), ()], jobs=1) == [1, 1]
    assert torch.get_num_threads() == 2
    assert map_tasks(torch.get_num_threads, [()], jobs=1, threads=None) == [2]
    with pytest.raises(UserError, match="this task fails"):
        map_tasks(_fail, [()], jobs=1)
    assert torch.get_num_threads() == 2


def _task(marker: str, seconds: float, fail: bool) -> None:
    """Fails at once, or waits and leaves a marker file."""
    if fail:
        raise UserError(f"task {marker} cannot run.")
    time.sleep(seconds)
    Path(marker).touch()


def test_the_first_failure_ends_the_queue(tmp_path) -> None:
    """The second task fails at once while the first runs for 1.5 s: of the 22 tasks queued
    behind, those not yet handed to a worker never start (the pool keeps a few in its call
    queue, and hands more on while the failure travels back, so a handful run). All 22 ran
    before, and a study's Ctrl-C likewise waited for queued training runs."""
    tasks = [(str(tmp_path / f"{i}"), 1.5 if i == 0 else 0.5, i == 1) for i in range(24)]
    with pytest.raises(UserError, match="task .*1 cannot run"):
        map_tasks(_task, tasks, jobs=2)
    assert len(list(tmp_path.iterdir())) <= 10


def _fail_after(seconds: float, words: str) -> None:
    time.sleep(seconds)
    raise UserError(words)


def test_the_failure_raised_is_the_first_to_happen_not_the_first_listed() -> None:
    """The first task fails after 1 s, the second at once: the second's failure is the one
    raised, without waiting on the first's result."""
    tasks = [(1.0, "the listed-first task failed late."), (0.0, "the second failed at once.")]
    with pytest.raises(UserError, match="the second failed at once"):
        map_tasks(_fail_after, tasks, jobs=2)


MARK = "as imported"


def _put_mark(queue) -> None:
    queue.put(MARK)


def test_the_child_is_a_fresh_process_not_a_copy_of_this_one(monkeypatch) -> None:
    """A forked child would start from this process's memory (the heap a peak-memory measurement
    must not see); a spawned one imports what it runs afresh."""
    monkeypatch.setattr(sys.modules[__name__], "MARK", "changed in the parent")
    assert value_from_child(_put_mark, (), poll_s=0.2) == "as imported"


def test_a_child_that_ends_without_a_value_gives_none_instead_of_a_wait() -> None:
    # the child calls os._exit(3, queue), a TypeError: it ends at once and puts nothing; before,
    # bench speed's memory measurement waited an hour on the queue
    assert value_from_child(os._exit, (3,), poll_s=0.2) is None
    # a child that puts and ends at once is read, however the polls fall
    assert value_from_child(put_at_once, (2.5,), poll_s=0.01) == 2.5
    # one still at work after the deadline is ended, and gives none
    tic = time.monotonic()
    assert value_from_child(sleep_without_putting, (60,), 0.1, deadline_s=1) is None
    assert time.monotonic() - tic < 30
