"""The epoch loop around ``JointTrainer``: progress bar, validation, model selection on the
validation split, checkpoints and ``--resume``.

Resume is exact: ``last.pt`` holds θ, φ, both optimizers, the learning-rate schedule, the torch RNG
states and the metric rows so far; data order is drawn from a generator seeded by (seed, epoch), so
a resumed run ends with the metrics of the unbroken run. ``last.pt`` is written at the end of every
epoch, and also after any batch when SIGINT or SIGTERM asks the run to stop; it then also holds the
position in the epoch and the epoch's running sums (``bilevel.checkpoint``).

Every stop for a known reason says what is kept: a stop request (``Stopped``: exit code 130 or
143), a NaN loss or a failed write (``UserError``: exit code 2).
"""

from __future__ import annotations

import itertools
import math
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bilevel import distributed
from bilevel.checkpoint import Saved, Scheduler, State, load_state, position_state, write_state
from bilevel.errors import Stopped, UserError
from bilevel.loop import JointTrainer
from bilevel.protocol import Batch
from bilevel.run import RunDir, atomic_torch_save
from bilevel.seeding import seeded
from bilevel.stopping import Interrupted, StopRequests

# the advice that ends a stop's message (``_Loop.stop_message``), for the single run command whose
# ``--resume`` continues it; a command that runs many (``gail-stability``) says its own instead
RESUME_ADVICE = "to continue, rerun the same command with --resume"
RESTART_ADVICE = "rerun the same command to start over"


@dataclass
class FitResult:
    """What ``fit`` returns: one metrics row per epoch, whether a stop request ended the run
    early, and the training loop's wall-clock and CPU seconds."""

    history: list[dict[str, Any]]
    interrupted: bool
    train_seconds: float
    train_cpu_seconds: float = 0.0  # CPU time of this process in the training loops (all threads)


def trained_threads(history: list[dict[str, Any]]) -> int | None:
    """The torch thread count every epoch of ``history`` trained at (its CPU seconds sum every
    thread's, so only runs at one count compare); None if the epochs differ (a run resumed at
    another count) or some were trained before the count was recorded."""
    counts = {row.get("torch_threads") for row in history}
    return counts.pop() if len(counts) == 1 else None


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        disable=not enabled,
    )


def _remaining_batches(
    train_batches: Callable[[int], Iterable[Batch]], epoch: int, done: int
) -> Iterator[Batch]:
    """The epoch's batches after the first ``done``. Those are replayed, not trained on, so the
    epoch's own generator reaches the same state; the global RNG is left as ``last.pt`` set it."""
    batches = iter(train_batches(epoch))
    with seeded(None):
        for _ in itertools.islice(batches, done):
            pass
    return batches


def fit(
    trainer: JointTrainer,
    scheduler: Scheduler | None,
    train_batches: Callable[[int], Iterable[Batch]],
    batches_per_epoch: int,
    validate: Callable[[], dict[str, float]],
    run: RunDir,
    epochs: int,
    select_key: str,
    resume: bool = False,
    interrupt_after_epoch: int | None = None,
    show_progress: bool = True,
    is_main: bool = True,
) -> FitResult:
    """Train for ``epochs``; keep ``best.pt`` (the selected leader only: θ, or θ̄ when averaged)
    at the highest ``validate()[select_key]``.

    ``scheduler`` (optional) is stepped once at the end of every epoch.
    ``train_batches(epoch)`` yields that epoch's minibatches, drawing randomness only from its own
    generator (seeded from the epoch), so that a resumed epoch can replay the batches before its
    stop. ``resume`` continues from ``last.pt`` when there is one (else starts afresh). Under
    torchrun every process but rank 0 then draws its training noise from a stream of its own
    (``distributed.draw_own_noise``), and a resume gives each process its own generator state.
    ``interrupt_after_epoch`` stops the run as a kill would, right after that epoch's checkpoint
    (used to test ``--resume``). Only the main process (``is_main``, rank 0 under torchrun) writes
    files and shows progress; under torchrun every process stops after the same batch.
    """
    # θ and φ are drawn, the same on every process: from here each draws its own training
    # noise, or takes its own generator state from last.pt
    distributed.draw_own_noise()
    state = State()
    if resume and run.last_checkpoint.is_file():
        state = load_state(run, trainer, scheduler)
        if is_main:
            run.write_metrics(state.history)  # drop any row written after the checkpoint
    saved = Saved.from_state(state) if state.epoch or state.partial else None
    loop = _Loop(
        trainer, scheduler, train_batches, batches_per_epoch, validate, run, select_key, is_main,
        saved,
    )  # fmt: skip
    best = _best_epoch(state.history, select_key)
    if best is not None and run.best_epoch() != best:
        if state.partial is None and best == state.epoch:  # killed between last.pt and best.pt
            if is_main:
                loop.keep_best(best)
        else:  # that epoch's θ is trained on: every process refuses alike, before any training
            raise UserError(
                f"{run.best_checkpoint} is missing or does not hold epoch {best}, the best so far "
                f"by {select_key}, and last.pt cannot rebuild it (θ has trained on since); put "
                "the file back, or train the run afresh in a new folder."
            )
    with (
        StopRequests(force_on_second=not distributed.active()) as stop,
        _progress(show_progress and is_main) as progress,
    ):
        loop.stop, loop.progress = stop, progress
        try:
            return loop.run(state, epochs, interrupt_after_epoch)
        except Interrupted as err:  # a second signal: at once, where the process stood
            raise Stopped(
                loop.stop_message(f"at once by a second {err.name}"), err.exit_code
            ) from None


def _best_epoch(history: list[dict[str, Any]], select_key: str) -> int | None:
    """The epoch ``_end_epoch`` kept as the best, by its own rule: the first with the highest
    ``select_key`` (a NaN is never higher); None where no epoch was kept."""
    best, epoch = -math.inf, None
    for row in history:
        if row[select_key] > best:
            best, epoch = row[select_key], row["epoch"]
    return epoch


@dataclass
class _Loop:
    """The loop's parts, and what the last checkpoint written holds (``saved``)."""

    trainer: JointTrainer
    scheduler: Scheduler | None
    train_batches: Callable[[int], Iterable[Batch]]
    per_epoch: int
    validate: Callable[[], dict[str, float]]
    folder: RunDir
    select_key: str
    is_main: bool
    saved: Saved | None
    stop: StopRequests = field(default_factory=StopRequests)
    progress: Progress | None = None
    signum: int | None = None

    def run(self, state: State, epochs: int, interrupt_after_epoch: int | None) -> FitResult:
        partial = state.partial
        for epoch in range(state.epoch + 1, epochs + 1):
            done = partial["batches"] if partial else 0
            sums: dict[str, torch.Tensor] = dict(partial["sums"]) if partial else {}
            by_rank = partial.get("sums_by_rank") if partial else None  # older: rank 0's alone
            if by_rank and all(len(v) > distributed.rank() for v in by_rank.values()):
                sums = {k: v[distributed.rank()] for k, v in by_rank.items()}  # this process's own
            seconds = float(partial["seconds"]) if partial else 0.0
            cpu_seconds = float(partial.get("cpu_seconds", 0.0)) if partial else 0.0
            partial = None
            task = self.progress.add_task("", total=self.per_epoch, epoch=epoch, stats="")
            self.progress.update(task, completed=done)
            tic, cpu_tic = time.perf_counter(), time.process_time()
            for batch in _remaining_batches(self.train_batches, epoch, done):
                out = self.trainer.step(batch)
                for key, value in out.items():
                    sums[key] = sums.get(key, 0.0) + value
                done += 1
                if done % 10 == 0 or done == self.per_epoch:  # one host sync per 10 batches
                    stats = "  ".join(f"{k} {float(v) / done:.3f}" for k, v in sums.items())
                    self.progress.update(task, completed=done, stats=stats)
                if self._agreed_stop():
                    position = {"epoch": epoch, "batches": done, "sums": sums}
                    # rank 0 writes the checkpoint: it keeps every process's own sums
                    position["sums_by_rank"] = distributed.gather_values(sums)
                    position["seconds"] = seconds + time.perf_counter() - tic
                    position["cpu_seconds"] = cpu_seconds + time.process_time() - cpu_tic
                    self._save(position_state(self.trainer, self.scheduler, state, position))
                    raise self._stopped(f"after batch {done} of {self.per_epoch} in epoch {epoch}")
            if self.scheduler is not None:
                self.scheduler.step()
            state.train_seconds += seconds + time.perf_counter() - tic
            state.train_cpu_seconds += cpu_seconds + time.process_time() - cpu_tic
            sums = distributed.mean_over_processes(sums)  # every share, not rank 0's alone
            means = {key: float(value) / max(done, 1) for key, value in sums.items()}
            if not all(math.isfinite(v) for v in means.values()):
                raise UserError(
                    f"The training loss became NaN or infinite in epoch {epoch}; "
                    f"{self.kept_sentence()}; lower the learning rate or ε and "
                    f"{'start a new run with another --out' if self.saved else 'rerun'}."
                )
            self._end_epoch(state, epoch, means)
            shown = "  ".join(f"{k} {v:.3f}" for k, v in state.history[-1].items() if k.startswith("val_"))  # fmt: skip
            self.progress.update(task, stats=shown)
            if self._agreed_stop():
                raise self._stopped(f"after epoch {epoch}")
            if interrupt_after_epoch is not None and epoch == interrupt_after_epoch < epochs:
                return FitResult(state.history, True, state.train_seconds, state.train_cpu_seconds)
        return FitResult(state.history, False, state.train_seconds, state.train_cpu_seconds)

    def _end_epoch(self, state: State, epoch: int, means: dict[str, float]) -> None:
        """Validate, keep ``best.pt`` if it is the best epoch, write ``last.pt`` and the metrics."""
        row = {"epoch": epoch, **means, **self.validate()}
        row["train_seconds"] = round(state.train_seconds, 3)
        row["train_cpu_seconds"] = round(state.train_cpu_seconds, 3)
        row["torch_threads"] = torch.get_num_threads()  # CPU seconds sum every thread's
        state.history.append(row)
        state.epoch = epoch
        improved = row[self.select_key] > state.best
        if improved:
            state.best = row[self.select_key]
        # last.pt first: it records the best epoch, so a kill before best.pt is written is
        # mended at the resume (``keep_best``); the other order left a best.pt the rerun
        # epoch's history might not match
        self._save(position_state(self.trainer, self.scheduler, state, None))
        if improved and self.is_main:
            self._write(lambda: self.keep_best(epoch))

    def keep_best(self, epoch: int) -> None:
        """``best.pt``: the selected leader (θ̄ when the leader is averaged) of ``epoch``."""
        leader = self.trainer.selected_leader().state_dict()
        atomic_torch_save({"epoch": epoch, "leader": leader}, self.folder.best_checkpoint)

    def _save(self, checkpoint: dict[str, Any]) -> None:
        """``last.pt`` (and, at an epoch's end, ``metrics.jsonl``) from rank 0; the others wait."""
        if self.is_main:
            self._write(lambda: write_state(self.folder, checkpoint))
        self.saved = Saved.from_checkpoint(checkpoint)
        distributed.barrier()

    def _write(self, write: Callable[[], None]) -> None:
        try:
            write()
        except UserError as err:  # a full disk, a folder made read-only meanwhile
            raise UserError(f"{str(err).rstrip('.')}; {self.kept_sentence()}.") from None

    def kept_sentence(self) -> str:
        """What the run folder holds now, in words."""
        if self.saved is None:
            return f"no checkpoint was written yet, so {self.folder.path} holds only config.json"
        return (
            f"{self.folder.path} keeps {self.saved.describe(self.folder.best_checkpoint.is_file())}"
        )

    def stop_message(self, how: str) -> str:
        if not self.is_main:
            return ""
        advice = RESUME_ADVICE if self.saved is not None else RESTART_ADVICE
        return f"Stopped {how}; {self.kept_sentence()}; {advice}."

    def _agreed_stop(self) -> bool:
        """Whether a stop was asked for here or, under torchrun, on any process (all agree)."""
        self.signum = distributed.agree_on_signal(self.stop.signum)
        return self.signum is not None

    def _stopped(self, where: str) -> Stopped:
        name = signal.Signals(self.signum).name
        return Stopped(self.stop_message(f"by {name} {where}"), 128 + int(self.signum))
