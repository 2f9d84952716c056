"""The problem-neutral parts of the framework: the ``BilevelProblem`` base with its declared defaults,
the ``Follower`` protocol, one experiment runner (``run_experiment``) and one report layer."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from bilevel import (
    BilevelProblem,
    Experiment,
    Follower,
    GradientAscent,
    JointTrainer,
    LearnedFollower,
    NoFollower,
    SignGradientAscent,
    UserError,
    markdown_table,
    run_experiment,
)
from bilevel.run import load_checkpoint


class Centre(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(2))


class CountingQuadratic(BilevelProblem):
    """q = L = mean ½‖x + z − θ‖², z in the L∞ ball of radius ½ (z* = ½ sign(x − θ)); it counts
    its steps as problem state (checkpointed beyond θ) and reports the count as a step metric."""

    zero_sum = True

    def __init__(self) -> None:
        self.leader, self.eps, self.steps = Centre(), 0.5, 0

    def init_follower(self, batch: Tensor, random_start: bool = False) -> Tensor:
        return torch.zeros_like(batch)

    def project(self, batch: Tensor, z: Tensor) -> Tensor:
        return z.clamp(-self.eps, self.eps)

    def follower_objective(self, batch: Tensor, z: Tensor) -> Tensor:
        return 0.5 * (batch + z - self.leader.theta).pow(2).sum(1).mean()

    leader_loss = follower_objective

    def begin_step(self, batch: Tensor) -> None:
        self.steps += 1

    def step_metrics(self) -> dict[str, float]:
        return {"steps_seen": float(self.steps)}

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])


def test_the_base_declares_every_optional_capability_with_its_default() -> None:
    class Minimal(BilevelProblem):
        leader = Centre()

        def follower_objective(self, batch: Tensor, z: Tensor) -> Tensor:
            return (z * batch).sum()

    p = Minimal()
    assert p.zero_sum is False and p.hypergradient is None
    assert p.state_dict() == {} and p.step_metrics() == {}
    assert p.begin_step(None) is None
    z, x = torch.ones(3), torch.arange(3.0)
    assert p.meta_objective(x, z) == p.follower_objective(x, z)  # φ ascends q by default
    parts = [torch.zeros(2, 1, 3), torch.ones(2, 2, 3)]
    assert p.follower_input(None, parts).shape == (2, 3, 3)  # channels, in order
    with pytest.raises(NotImplementedError, match="needs them"):
        p.follower_features(x, z)


def test_every_generic_follower_satisfies_the_protocol() -> None:
    followers: list[Follower] = [
        NoFollower(),
        SignGradientAscent(3, 0.2),
        GradientAscent(3, 0.2, random_start=True),
        LearnedFollower(nn.Linear(2, 2), input_mode="grad-only"),
    ]
    problem, batch = CountingQuadratic(), torch.randn(5, 2)
    for follower in followers:
        z = follower.solve(problem, batch)
        assert z.shape == batch.shape and not z.requires_grad
        assert (z.abs() <= 0.5 + 1e-6).all()
        assert follower.learnable == isinstance(follower, LearnedFollower)
    assert followers[1].solve(problem, batch).allclose(0.5 * torch.sign(batch))  # z* in 3 steps


def test_joint_step_calls_the_problems_hooks_and_checkpoints_its_state() -> None:
    problem = CountingQuadratic()
    trainer = JointTrainer(problem, SignGradientAscent(2, 0.5), torch.optim.SGD(problem.leader.parameters(), lr=0.1))  # fmt: skip
    out = [trainer.step(torch.randn(8, 2)) for _ in range(3)]
    assert [float(o["steps_seen"]) for o in out] == [1.0, 2.0, 3.0]
    state = trainer.state_dict()
    assert state["problem"] == {"steps": 3}
    fresh = CountingQuadratic()
    JointTrainer(fresh, SignGradientAscent(2, 0.5), torch.optim.SGD(fresh.leader.parameters(), lr=0.1)).load_state_dict(state)  # fmt: skip
    assert fresh.steps == 3 and torch.equal(fresh.leader.theta, problem.leader.theta)


def test_fused_update_rule_is_checked_in_one_place() -> None:
    problem = CountingQuadratic()
    opt = torch.optim.SGD(problem.leader.parameters(), lr=0.1)
    with pytest.raises(UserError, match="needs a learned follower"):
        JointTrainer(problem, SignGradientAscent(1, 0.5), opt, update="fused")
    problem.zero_sum = False
    with pytest.raises(UserError, match="needs a zero-sum problem"):
        JointTrainer(problem, LearnedFollower(nn.Linear(2, 2), input_mode="grad-only"), opt, update="fused")  # fmt: skip


def _experiment(problem: CountingQuadratic, epochs: int) -> Experiment:
    trainer = JointTrainer(problem, SignGradientAscent(2, 0.5), torch.optim.SGD(problem.leader.parameters(), lr=0.2))  # fmt: skip
    centre = torch.tensor([1.0, -1.0])

    def batches(epoch: int):
        generator = torch.Generator().manual_seed(epoch)
        for _ in range(4):
            yield centre + 2 * torch.rand(64, 2, generator=generator) - 1

    def validate() -> dict[str, float]:
        return {"val_closeness": -float((problem.leader.theta.detach() - centre).norm())}

    def test(leader: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
        return {"test_distance": float((leader["theta"] - centre).norm()), "epochs": len(history)}

    return Experiment(trainer, batches, 4, epochs, validate, "val_closeness", test)


def test_one_runner_trains_any_problem_into_a_run_folder_and_resumes_it(tmp_path: Path) -> None:
    out = tmp_path / "toy"
    first, again = [], []  # the epochs each run asks train_batches for

    def recorded(problem: CountingQuadratic, epochs: list[int]) -> Experiment:
        experiment = _experiment(problem, 3)
        batches = experiment.train_batches

        def train_batches(epoch: int):
            epochs.append(epoch)
            return batches(epoch)

        return replace(experiment, train_batches=train_batches)

    assert run_experiment(recorded(CountingQuadratic(), first), out, {"lr": 0.2}, interrupt_after_epoch=2, show_progress=False) is None  # fmt: skip
    assert first == [1, 2]
    assert load_checkpoint(out / "last.pt")["trainer"]["problem"] == {"steps": 8}
    resumed = CountingQuadratic()
    results = run_experiment(recorded(resumed, again), out, {"lr": 0.2}, resume=True, show_progress=False)  # fmt: skip
    # the problem's state came back from last.pt, then only epoch 3 ran: 4 more steps (12 steps
    # alone would also come from a resume that ignored last.pt and trained all 3 epochs afresh)
    assert again == [3] and resumed.steps == 12
    assert results is not None and results["epochs"] == 3 and results["test_distance"] < 0.2
    assert results["best_epoch"] in (1, 2, 3) and results["train_seconds"] >= 0
    assert json.loads((out / "results.json").read_text()) == results
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["steps_seen"] for row in history] == [2.5, 6.5, 10.5]  # epoch means of the metric
    report = (out / "report.md").read_text()
    assert "| test_distance |" in report and "| lr | 0.2 |" in report
    assert (out / "curves.png").stat().st_size > 0
    assert "scheduler" in load_checkpoint(out / "last.pt")  # None: no schedule was asked for


@pytest.mark.parametrize(
    ("scores", "stop_after", "best_epoch"),
    [
        ([0.2, 0.9, 0.5], None, 2),
        ([0.2, 0.9, 0.5], 2, 2),
        ([0.5, 0.9, 0.9], None, 2),  # a tie: the first epoch with the highest value
        ([0.2, 0.9, 0.5, 0.1], 3, 2),  # stopped after an epoch that is not the best
        ([0.5, 0.9, 0.9, 0.1], 3, 2),  # stopped after a tie: the resume keeps the first
    ],
)
def test_best_pt_and_the_test_get_the_epoch_of_the_highest_validation_value(
    tmp_path: Path, scores: list[float], stop_after: int | None, best_epoch: int
) -> None:
    """best.pt keeps the first epoch with the highest validation score and its θ, and the test
    gets that θ, not the last epoch's; also when the run stops (after the best epoch or after a
    later one) and resumes: the resume checks best.pt against the best epoch, not the last."""
    epochs, values, thetas, tested = len(scores), iter(scores), [], []

    def experiment() -> Experiment:
        problem = CountingQuadratic()

        def validate() -> dict[str, float]:
            thetas.append(problem.leader.theta.detach().clone())
            return {"val_closeness": next(values)}

        def test(leader: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
            tested.append(leader["theta"].clone())
            return {}

        return replace(_experiment(problem, epochs), validate=validate, test=test)

    out = tmp_path / "toy"
    if stop_after:
        run_experiment(experiment(), out, {}, interrupt_after_epoch=stop_after, show_progress=False)
    results = run_experiment(experiment(), out, {}, resume=bool(stop_after), show_progress=False)
    best = load_checkpoint(out / "best.pt")
    assert results["best_epoch"] == best["epoch"] == best_epoch
    assert len(thetas) == epochs
    assert all(not torch.equal(thetas[best_epoch - 1], t) for t in thetas[best_epoch:])  # θ moved
    assert torch.equal(best["leader"]["theta"], thetas[best_epoch - 1])
    assert len(tested) == 1 and torch.equal(tested[0], thetas[best_epoch - 1])


def test_the_schedule_steps_once_per_epoch_and_a_resume_continues_it(tmp_path: Path) -> None:
    """Cosine annealing over T = 3 epochs from lr 0.2: epoch e trains every batch at
    0.2·(1 + cos(π(e − 1)/3))/2, i.e. 0.2, 0.15, 0.05, and ends at 0; stopped after epoch 1 and
    resumed from last.pt, epochs 2 and 3 train at the same rates."""
    expected = [0.2 * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)]

    def scheduled(seen: dict[int, list[float]]) -> tuple[Experiment, torch.optim.Optimizer]:
        experiment = _experiment(CountingQuadratic(), 3)
        optimizer = experiment.trainer.leader_optimizer
        batches = experiment.train_batches

        def recorded(epoch: int):
            for batch in batches(epoch):
                seen.setdefault(epoch, []).append(optimizer.param_groups[0]["lr"])
                yield batch

        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=3)
        return replace(experiment, train_batches=recorded, scheduler=schedule), optimizer

    unbroken: dict[int, list[float]] = {}
    experiment, optimizer = scheduled(unbroken)
    run_experiment(experiment, tmp_path / "unbroken", {}, show_progress=False)
    assert unbroken.keys() == {1, 2, 3}
    for epoch, lr in zip((1, 2, 3), expected, strict=True):
        assert unbroken[epoch] == pytest.approx([lr] * 4, rel=1e-9), epoch
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)

    out, first, resumed = tmp_path / "stopped", {}, {}
    run_experiment(scheduled(first)[0], out, {}, interrupt_after_epoch=1, show_progress=False)
    experiment, optimizer = scheduled(resumed)
    run_experiment(experiment, out, {}, resume=True, show_progress=False)
    assert first | resumed == unbroken and resumed.keys() == {2, 3}
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_a_run_records_the_torch_thread_count_its_cpu_seconds_were_trained_at(
    tmp_path: Path,
) -> None:
    """train_cpu_seconds sums every thread's CPU time, so results.json and each metrics row say
    the count; a run resumed at another count, or with epochs from before the count was
    recorded (an older folder), has none in results.json rather than a wrong one."""
    before = torch.get_num_threads()
    try:
        _threads_recorded(tmp_path)
    finally:
        torch.set_num_threads(before)
    from bilevel.fit import trained_threads  # here, so the checks above also run on older code

    older = {"epoch": 1, "train_cpu_seconds": 1.0}
    assert trained_threads([older, {"epoch": 2, "torch_threads": 1}]) is None
    assert trained_threads([older]) is None


def _threads_recorded(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    results = run_experiment(_experiment(CountingQuadratic(), 2), tmp_path / "one", {}, show_progress=False)  # fmt: skip
    assert results is not None and results["torch_threads"] == 1
    assert json.loads((tmp_path / "one" / "results.json").read_text())["torch_threads"] == 1
    rows = [json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]  # fmt: skip
    assert [row["torch_threads"] for row in rows] == [1, 1]

    out = tmp_path / "mixed"
    torch.set_num_threads(2)
    run_experiment(_experiment(CountingQuadratic(), 2), out, {}, interrupt_after_epoch=1, show_progress=False)  # fmt: skip
    torch.set_num_threads(1)
    results = run_experiment(_experiment(CountingQuadratic(), 2), out, {}, resume=True, show_progress=False)  # fmt: skip
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["torch_threads"] for row in rows] == [2, 1]
    assert results is not None and results["torch_threads"] is None


def test_markdown_table_has_one_column_per_key_and_blanks_for_missing_values() -> None:
    lines = markdown_table([{"a": 1.0, "b": "x"}, {"a": 2}, {"c": True}])
    assert lines[0] == "| a | b | c |" and lines[1] == "|---|---|---|"
    assert lines[2:] == ["| 1.0000 | x |  |", "| 2 |  |  |", "|  |  | True |"]
