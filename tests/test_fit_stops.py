"""``fit``'s bookkeeping around stops, on a toy problem in this process: what a resumed run counts
as its training time, what a stop or a non-finite loss says is kept, and where a stop asked for
outside a batch takes effect (mutation round 8 found these unpinned)."""

from __future__ import annotations

import math
import os
import signal
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from helpers import metrics_without_time
from torch import Tensor, nn

from bilevel import BilevelProblem, Experiment, JointTrainer, NoFollower, UserError, run_experiment
from bilevel import fit as fit_module
from bilevel.errors import Stopped
from bilevel.run import load_checkpoint
from bilevel.stopping import Interrupted, StopRequests

BATCHES = 4  # per epoch
CENTRE = torch.tensor([1.0, -1.0])


class Centre(BilevelProblem):
    """L = mean ½‖x − θ‖² over x near ``CENTRE``; plain training (z = 0, no follower)."""

    zero_sum = True

    def __init__(self) -> None:
        self.leader = nn.Module()
        self.leader.theta = nn.Parameter(torch.zeros(2))

    def init_follower(self, batch: Tensor, random_start: bool = False) -> Tensor:
        return torch.zeros_like(batch)

    def project(self, batch: Tensor, z: Tensor) -> Tensor:
        return z

    def follower_objective(self, batch: Tensor, z: Tensor) -> Tensor:
        return 0.5 * (batch + z - self.leader.theta).pow(2).sum(1).mean()

    leader_loss = follower_objective


def toy(
    epochs: int, validate: Callable[[], dict[str, float]] | None = None, jitter: float = 0.0
) -> Experiment:
    """``jitter``: each batch is moved by that times a draw of torch's global generator (as a
    random augmentation drawn there would be), besides its own generator's draws."""
    problem = Centre()
    optimizer = torch.optim.SGD(problem.leader.parameters(), lr=0.1)
    trainer = JointTrainer(problem, NoFollower(), optimizer)

    def batches(epoch: int):
        generator = torch.Generator().manual_seed(epoch)
        for _ in range(BATCHES):
            x = CENTRE + torch.rand(8, 2, generator=generator) - 0.5
            yield x + jitter * torch.randn(8, 2) if jitter else x

    def closeness() -> dict[str, float]:
        return {"val_closeness": -float((problem.leader.theta.detach() - CENTRE).norm())}

    return Experiment(
        trainer, batches, BATCHES, epochs, validate or closeness, "val_closeness", lambda *_: {}
    )


def patch_steps(monkeypatch, clock: list[float], signal_at: int | None = None, bad: float = 0.0):
    """Each training step of this process moves ``clock`` (fit's wall and CPU clock) on by 1 s;
    the ``signal_at``-th step first sends this process SIGINT; ``bad`` (NaN or inf) is added to
    every logged step metric."""
    step, count = JointTrainer.step, [0]

    def stepping(self: JointTrainer, batch: Any) -> dict[str, Any]:
        count[0] += 1
        if count[0] == signal_at:
            os.kill(os.getpid(), signal.SIGINT)
        clock[0] += 1.0
        return {k: v + bad for k, v in step(self, batch).items()}

    monkeypatch.setattr(JointTrainer, "step", stepping)
    now = SimpleNamespace(perf_counter=lambda: clock[0], process_time=lambda: clock[0])
    monkeypatch.setattr(fit_module, "time", now)


def test_a_run_stopped_twice_in_an_epoch_counts_every_stretch_of_its_training(
    tmp_path: Path, monkeypatch
) -> None:
    """Every step takes 1 s of the patched clock, so 2 epochs of 4 batches train for 8 s, wall
    and CPU, however often the run stops: here after batch 2, then after batch 3 of the same
    epoch (the second stop's checkpoint adds its stretch to the first's), then to the end."""
    clock = [0.0]
    patch_steps(monkeypatch, clock)
    unbroken = run_experiment(toy(2), tmp_path / "unbroken", {}, show_progress=False)
    assert unbroken is not None
    assert (unbroken["train_seconds"], unbroken["train_cpu_seconds"]) == (8.0, 8.0)

    out = tmp_path / "stopped"
    for signal_at, resume, batches in ((2, False, 2), (1, True, 3)):
        monkeypatch.undo()
        patch_steps(monkeypatch, clock, signal_at=signal_at)
        with pytest.raises(Stopped, match=f"after batch {batches} of 4 in epoch 1"):
            run_experiment(toy(2), out, {}, resume=resume, show_progress=False)
        partial = load_checkpoint(out / "last.pt")["partial"]
        assert (partial["seconds"], partial["cpu_seconds"]) == (batches, batches)
    monkeypatch.undo()
    patch_steps(monkeypatch, clock)
    resumed = run_experiment(toy(2), out, {}, resume=True, show_progress=False)
    assert resumed is not None
    assert (resumed["train_seconds"], resumed["train_cpu_seconds"]) == (8.0, 8.0)


def test_a_nan_in_the_epoch_a_resume_continued_names_the_checkpoint_it_continued_from(
    tmp_path: Path, monkeypatch
) -> None:
    """The resumed run has written nothing yet, but its folder keeps the last.pt of the stop: the
    error says so, and sends the user to a new --out (a rerun of this one would start over)."""
    out, clock = tmp_path / "nan", [0.0]
    patch_steps(monkeypatch, clock, signal_at=2)
    with pytest.raises(Stopped):
        run_experiment(toy(2), out, {}, show_progress=False)
    monkeypatch.undo()
    patch_steps(monkeypatch, clock, bad=math.nan)
    with pytest.raises(UserError) as err:
        run_experiment(toy(2), out, {}, resume=True, show_progress=False)
    assert str(err.value) == (
        f"The training loss became NaN or infinite in epoch 1; {out} keeps last.pt (after batch 2 "
        "of epoch 1); lower the learning rate or ε and start a new run with another --out."
    )


def test_an_infinite_loss_stops_the_run_as_a_nan_does(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "inf"
    patch_steps(monkeypatch, [0.0], bad=math.inf)
    with pytest.raises(UserError, match="NaN or infinite in epoch 1; no checkpoint was written"):
        run_experiment(toy(2), out, {}, show_progress=False)
    assert not (out / "last.pt").exists() and not (out / "metrics.jsonl").exists()


def test_a_stop_asked_for_during_validation_ends_the_run_after_that_epoch(
    tmp_path: Path, monkeypatch
) -> None:
    """A signal that comes after the epoch's last batch (here in its validation) stops the run
    at the epoch's end, with last.pt of the whole epoch, not after a batch of the next one."""
    out = tmp_path / "validating"
    patch_steps(monkeypatch, [0.0])

    def validate() -> dict[str, float]:
        os.kill(os.getpid(), signal.SIGINT)
        return {"val_closeness": 0.0}

    with pytest.raises(Stopped) as stopped:
        run_experiment(toy(2, validate), out, {}, show_progress=False)
    assert stopped.value.exit_code == 130
    assert stopped.value.message.startswith(f"Stopped by SIGINT after epoch 1; {out} keeps last.pt")
    last = load_checkpoint(out / "last.pt")
    assert last["epoch"] == 1 and last.get("partial") is None


def test_stop_requests_keep_the_first_signal_and_a_second_forces_only_if_asked() -> None:
    """A single process stops at once on a second signal; under torchrun (no forcing) the second
    is ignored, and the first one's name and exit code stand."""
    with StopRequests(force_on_second=False) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
    assert stop.signum == signal.SIGTERM and stop.name == "SIGTERM"
    with pytest.raises(Interrupted) as second, StopRequests() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
    assert stop.signum == signal.SIGTERM
    assert (second.value.name, second.value.exit_code) == ("SIGINT", 130)


def test_a_resume_inside_an_epoch_replays_its_batches_without_drawing_from_the_global_stream(
    tmp_path: Path, monkeypatch
) -> None:
    """The batches before the stop are replayed, not trained on, and what they draw from torch's
    global generator is given back: the resumed run trains on the jitter the unbroken run drew,
    and ends with its metrics."""
    patch_steps(monkeypatch, [0.0])
    torch.manual_seed(0)
    run_experiment(toy(2, jitter=0.5), tmp_path / "unbroken", {}, show_progress=False)
    out = tmp_path / "stopped"
    monkeypatch.undo()
    patch_steps(monkeypatch, [0.0], signal_at=2)
    torch.manual_seed(0)
    with pytest.raises(Stopped):
        run_experiment(toy(2, jitter=0.5), out, {}, show_progress=False)
    monkeypatch.undo()
    patch_steps(monkeypatch, [0.0])
    torch.manual_seed(123)  # last.pt sets the global generator, whatever it was
    run_experiment(toy(2, jitter=0.5), out, {}, resume=True, show_progress=False)
    assert metrics_without_time(out) == metrics_without_time(tmp_path / "unbroken")


def test_a_resume_rewrites_a_cut_metrics_line_before_it_trains(tmp_path: Path, monkeypatch):
    """metrics.jsonl is rewritten from last.pt as the resume starts: a line cut short (as a copy
    or an edit can leave it) is gone even if the resumed run stops before its first epoch ends."""
    out = tmp_path / "cut"
    patch_steps(monkeypatch, [0.0])
    run_experiment(toy(2), out, {}, interrupt_after_epoch=1, show_progress=False)
    whole = (out / "metrics.jsonl").read_text()
    (out / "metrics.jsonl").write_text(whole + whole[: len(whole) // 2])  # a second row, cut
    monkeypatch.undo()
    patch_steps(monkeypatch, [0.0], signal_at=1)
    with pytest.raises(Stopped, match="after batch 1 of 4 in epoch 2"):
        run_experiment(toy(2), out, {}, resume=True, show_progress=False)
    assert (out / "metrics.jsonl").read_text() == whole


def test_an_interrupt_after_the_last_epoch_is_no_stop(tmp_path: Path, monkeypatch) -> None:
    """--interrupt-after-epoch stops a run as a kill after that epoch's checkpoint would, so that
    --resume can be tested; after the last epoch nothing is left to resume: the run ends whole,
    with its results, as it does without the option."""
    patch_steps(monkeypatch, [0.0])
    out = tmp_path / "last"
    results = run_experiment(toy(2), out, {}, interrupt_after_epoch=2, show_progress=False)
    assert results is not None and results["best_epoch"] in (1, 2)
    assert (out / "results.json").is_file()


@pytest.mark.parametrize(
    ("stop_at", "where", "damage"),
    [
        (BATCHES + 2, "after batch 2 of 4 in epoch 2", "delete"),
        (BATCHES + 2, "after batch 2 of 4 in epoch 2", "epoch 2"),
        (None, "", "delete"),  # after epoch 2's end: the best, epoch 1, is trained on too
    ],
)
def test_a_resume_refuses_before_training_when_the_best_epoch_s_best_pt_is_lost(
    tmp_path: Path, monkeypatch, stop_at: int | None, where: str, damage: str
) -> None:
    """best.pt only ever holds the θ of the epoch it names, and last.pt holds a later θ, so a
    best.pt lost (deleted, or replaced by another epoch's) cannot be rebuilt: the resume says so
    in one sentence before it trains, and leaves the folder as it was (it used to train on and
    end, if no later epoch did better, on "No checkpoint at .../best.pt")."""
    out, scores = tmp_path / "lost", iter([-1.0, -2.0, -3.0])  # epoch 1 is the best
    patch_steps(monkeypatch, [0.0], signal_at=stop_at)
    experiment = toy(3, lambda: {"val_closeness": next(scores)})
    if stop_at:
        with pytest.raises(Stopped, match=where):
            run_experiment(experiment, out, {}, show_progress=False)
    else:
        run_experiment(experiment, out, {}, interrupt_after_epoch=2, show_progress=False)
    if damage == "delete":
        (out / "best.pt").unlink()
    else:
        torch.save(load_checkpoint(out / "best.pt") | {"epoch": 2}, out / "best.pt")
    kept = {f.name: f.read_bytes() for f in out.iterdir() if f.is_file() and f.name != ".lock"}
    with pytest.raises(UserError) as err:
        run_experiment(toy(3), out, {}, resume=True, show_progress=False)
    assert str(err.value).startswith(
        f"{out / 'best.pt'} is missing or does not hold epoch 1, the best so far by val_closeness"
    )
    assert {
        f.name: f.read_bytes() for f in out.iterdir() if f.is_file() and f.name != ".lock"
    } == kept


def test_a_resume_finds_the_best_epoch_by_the_run_s_own_rule_a_nan_is_never_the_best(
    tmp_path: Path,
) -> None:
    """A NaN validation score never becomes the best (NaN > x is false), so epoch 2 is; the
    resume after epoch 2 must find the same epoch in the history, not the NaN row first."""
    out, scores = tmp_path / "nan", iter([math.nan, -0.5, -0.9])
    validate = lambda: {"val_closeness": next(scores)}  # noqa: E731
    run_experiment(toy(3, validate), out, {}, interrupt_after_epoch=2, show_progress=False)
    results = run_experiment(toy(3, validate), out, {}, resume=True, show_progress=False)
    assert results is not None and results["best_epoch"] == 2
    assert load_checkpoint(out / "best.pt")["epoch"] == 2
