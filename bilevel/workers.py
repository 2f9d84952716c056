"""Independent runs side by side: ``function(*task)`` for every task, in this process or in
worker processes (the benches and studies of ``problems/*``; each task writes its own folder);
and one function in a fresh process of its own (``value_from_child``, e.g. a peak-memory
measurement that must not see this process's heap)."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from contextlib import contextmanager
from queue import Empty
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
    ``jobs`` worker processes; either way at ``threads`` torch threads (None: as the parent).
    Here, the parent's count is restored afterwards, also when a task fails: a run's CPU time
    (``time.process_time``) sums every thread, so runs are comparable only at one count.

    The first task to fail, or a stop (Ctrl-C reaches the workers too), ends the queue: tasks
    not yet started are cancelled, those running finish or stop, and the failure is raised
    without waiting for tasks listed before it. More ``jobs`` than tasks start only one worker
    a task: the others would idle (and a count past a C int was a traceback from the pool)."""
    jobs = min(jobs, max(len(tasks), 1))
    if jobs == 1:
        with torch_threads(threads):
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


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """``threads`` torch threads inside (None: the count as it is), the previous count restored
    after (also on error)."""
    before = torch.get_num_threads()
    torch.set_num_threads(before if threads is None else threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def value_from_child(
    target: Callable[..., None],
    args: tuple[Any, ...],
    poll_s: float = 1.0,
    deadline_s: float = 3600,
) -> Any:
    """Run ``target(*args, queue)`` in a fresh spawned process and return what it puts on the
    queue; or None once the process has ended without putting anything (it crashed, was killed
    for memory, or found no ``/proc``), or is still at it after ``deadline_s`` (then killed),
    instead of waiting on the queue for ever."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    end = time.monotonic() + deadline_s
    try:
        while time.monotonic() < end:
            try:
                return queue.get(timeout=poll_s)
            except Empty:
                if not proc.is_alive():  # one last look: it may have put just before ending
                    return queue.get(timeout=poll_s) if not queue.empty() else None
        return None  # still at it: ended below
    finally:
        if time.monotonic() >= end:
            proc.kill()
        proc.join(timeout=60)
        if proc.is_alive():
            proc.kill()
