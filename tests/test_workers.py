"""``bilevel.workers.map_tasks``: every task's result, in the tasks' order, here or in workers of
one torch thread each."""

from __future__ import annotations

import torch

from bilevel.workers import map_tasks


def test_results_keep_the_tasks_order_here_and_in_workers() -> None:
    tasks = [(2, 3), (3, 2), (2, 5)]
    assert map_tasks(pow, tasks, jobs=1) == [8, 9, 32]
    assert map_tasks(pow, tasks, jobs=2) == [8, 9, 32]


def test_workers_take_one_torch_thread_unless_told_otherwise() -> None:
    torch.set_num_threads(2)
    assert map_tasks(torch.get_num_threads, [(), ()], jobs=2) == [1, 1]
    assert map_tasks(torch.get_num_threads, [(), ()], jobs=2, threads=None) == [2, 2]
