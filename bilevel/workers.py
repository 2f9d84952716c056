"""Independent runs side by side: ``function(*task)`` for every task, in this process or in
worker processes (the benches and studies of ``problems/*``; each task writes its own folder)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
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
    ``jobs`` worker processes, each set to ``threads`` torch threads (None: as the parent).

    The first task to fail, or a stop (Ctrl-C reaches the workers too), ends the queue: tasks
    not yet started are cancelled, those running finish or stop, and the failure is raised
    without waiting for tasks listed before it."""
    if jobs == 1:
        return [function(*task) for task in tasks]
    thread_setting = {"initializer": torch.set_num_threads, "initargs": (threads,)}
    with ProcessPoolExecutor(jobs, **(thread_setting if threads is not None else {})) as pool:
        futures = [pool.submit(function, *task) for task in tasks]
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for future in futures:
                if future in done and future.exception() is not None:
                    future.result()  # raises it, with the worker's traceback as its cause
            return [future.result() for future in futures]
        finally:
            for future in futures:
                future.cancel()  # only those not started yet
