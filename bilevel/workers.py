"""Independent runs side by side: ``function(*task)`` for every task, in this process or in
worker processes (the benches and studies of ``problems/*``; each task writes its own folder)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

import torch

Result = TypeVar("Result")


def map_tasks(
    function: Callable[..., Result],
    tasks: Sequence[tuple[Any, ...]],
    jobs: int,
    threads: int | None = 1,
) -> list[Result]:
    """``[function(*task) for task in tasks]``, in order: here when ``jobs`` is 1, else in
    ``jobs`` worker processes, each set to ``threads`` torch threads (None: torch's default)."""
    if jobs == 1:
        return [function(*task) for task in tasks]
    thread_setting = {"initializer": torch.set_num_threads, "initargs": (threads,)}
    with ProcessPoolExecutor(jobs, **(thread_setting if threads is not None else {})) as pool:
        return list(pool.map(_call, [function] * len(tasks), tasks))


def _call(function: Callable[..., Result], task: tuple[Any, ...]) -> Result:
    return function(*task)
