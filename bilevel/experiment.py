"""One experiment runner for every problem: a run folder, the joint training loop with model
selection on validation, the selected leader's test, ``results.json`` and the report.

A problem describes its run as an ``Experiment`` (what to train, on which batches, how to validate
and test, which curves to draw) and nothing here knows what the batches hold; ``run_experiment``
does the rest, the same way for DRO, AIT and any new problem (docs/architecture.md, "Runs").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bilevel import distributed
from bilevel.checkpoint import Scheduler
from bilevel.fit import fit, trained_threads
from bilevel.loop import JointTrainer
from bilevel.protocol import Batch
from bilevel.report import DEFAULT_PANELS, Panel, Rows, write_report
from bilevel.run import RunDir, load_checkpoint


@dataclass
class Experiment:
    """A run, problem-neutral.

    ``train_batches(epoch)`` yields that epoch's batches from its own generator (exact resume);
    ``validate()`` gives the metrics of an epoch's row, ``select_key`` among them picks ``best.pt``;
    ``test(leader_state, history)`` loads the selected θ and returns the test split's results
    (``history``: every epoch's metrics row, for results that quote the last epoch).
    ``panels(history)`` (the plot hook) are the panels of ``curves.png``; ``notes(history)`` are
    extra lines of ``report.md``. ``scheduler`` is optional (stepped once per epoch).
    """

    trainer: JointTrainer
    train_batches: Callable[[int], Iterable[Batch]]
    batches_per_epoch: int
    epochs: int
    validate: Callable[[], dict[str, float]]
    select_key: str
    test: Callable[[dict[str, Any], Rows], dict[str, Any]]
    scheduler: Scheduler | None = None
    panels: Callable[[Rows], Sequence[Panel]] = field(default=lambda history: DEFAULT_PANELS)
    notes: Callable[[Rows], list[str]] = field(default=lambda history: [])


def run_experiment(
    experiment: Experiment,
    out: str | Path,
    config: dict[str, Any],
    resume: bool = False,
    legacy: dict[str, Any] | None = None,
    interrupt_after_epoch: int | None = None,
    show_progress: bool = True,
    is_main: bool = True,
) -> dict[str, Any] | None:
    """Train ``experiment`` into the run folder ``out`` (``config`` is its ``config.json``;
    ``legacy``: values of options newer than an older folder, for ``--resume``), test the
    best-on-validation leader and write ``results.json``, ``report.md`` and ``curves.png``.

    Returns the results; None when stopped on purpose (``interrupt_after_epoch``) and on every
    process but rank 0 under torchrun (``is_main``), which write nothing.
    """
    run = RunDir(out)
    if is_main:
        run.prepare(config, resume, legacy)
    distributed.barrier()
    e = experiment
    result = fit(
        e.trainer, e.scheduler, e.train_batches, e.batches_per_epoch, e.validate, run, e.epochs,
        e.select_key, resume=resume, interrupt_after_epoch=interrupt_after_epoch,
        show_progress=show_progress, is_main=is_main,
    )  # fmt: skip
    distributed.barrier()  # best.pt is written
    if result.interrupted or not is_main:
        return None
    best = load_checkpoint(run.best_checkpoint)
    tic = time.perf_counter()
    results = {"best_epoch": int(best["epoch"]), **e.test(best["leader"], result.history)}
    results["train_seconds"] = round(result.train_seconds, 2)
    results["train_cpu_seconds"] = round(result.train_cpu_seconds, 2)
    results["torch_threads"] = trained_threads(result.history)
    results["eval_seconds"] = round(time.perf_counter() - tic, 2)
    run.write_json("results.json", results)
    history = result.history
    write_report(run, config, history, results, e.panels(history), e.notes(history))
    return results
