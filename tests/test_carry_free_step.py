"""``--carry-free-step s``: after the fused backward, each carried δ takes one more step of s·ε
along the gradient that backward left on it (at θ before its step), before its next visit."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import TinyConvAttacker, linear_two_class
from torch import Tensor, nn
from typer.testing import CliRunner

from bilevel import LearnedFollower
from bilevel.carry import CarriedDecisions
from bilevel.loop import JointTrainer
from cli import app
from problems.adversarial.bench_runs import finished_results
from problems.adversarial.dro import AdversarialDRO, ImageBatch
from problems.adversarial.dro_config import DROConfig
from problems.adversarial.perturbation import Perturbation

EPS = 0.3


def _frozen_pgm_follower(sign_step: float) -> LearnedFollower:
    """A one-step learned follower whose g_φ is zero and stays zero (lr 0): PGM-1 of step s·ε."""
    net = TinyConvAttacker(2, 1, EPS)
    with torch.no_grad():
        net.body[2].weight.zero_()
        net.body[2].bias.zero_()
    return LearnedFollower(net, steps=1, lr=0.0, weight_decay=0.0, sign_step=sign_step)


@pytest.mark.parametrize("free_step, per_visit", [(0.0, EPS / 4), (0.25, EPS / 2)])
def test_the_free_step_adds_its_climb_to_every_visit(free_step: float, per_visit: float) -> None:
    """θ fixed (lr 0), g_φ ≡ 0, sign step ε/4: carried δ grows by ε/4 a visit, and by ε/4 more
    with a free step of ε/4, until the ball stops it at ε."""
    leader = linear_two_class()
    carried = CarriedDecisions(6, free_step=free_step)
    problem = AdversarialDRO(leader, EPS, carried=carried)
    follower = _frozen_pgm_follower(0.25)
    optimizer = torch.optim.SGD(leader.parameters(), lr=0.0)
    trainer = JointTrainer(problem, follower, optimizer, update="fused")
    x, y, rows = torch.full((6, 1, 4, 4), 0.5), torch.tensor([0, 1, 0, 1, 0, 1]), torch.arange(6)
    reached = []
    for _ in range(5):
        for half in (rows[:3], rows[3:]):
            carried.select(half)
            trainer.step((x[half], y[half]))
        assert carried.store is not None
        reached.append(round(carried.store.abs().amin().item(), 6))
        assert carried.store.abs().amax().item() <= EPS + 1e-6  # still in the ball
    expected = [min(EPS, k * per_visit) for k in range(1, 6)]
    assert reached == pytest.approx(expected)


class RecordingDRO(AdversarialDRO):
    """Keeps what the fused step hands to ``decision_gradient``."""

    wants_decision_gradient = True

    def decision_gradient(self, batch: ImageBatch, z: Tensor, grad: Tensor) -> None:
        self.seen = (z.clone(), grad.clone())


def test_the_gradient_is_the_leaders_at_theta_before_its_step() -> None:
    """The gradient handed over is ∇_δ L(θ, δ) at the θ before the leader's step (lr > 0 here, so
    the two θ differ), with δ the follower's answer; φ and θ still step."""
    torch.manual_seed(0)
    leader = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    before = copy.deepcopy(leader)
    problem = RecordingDRO(leader, EPS)
    follower = LearnedFollower(TinyConvAttacker(2, 1, EPS), steps=1, lr=1e-2, weight_decay=0.0)
    phi_before = [p.detach().clone() for p in follower.parameters()]
    optimizer = torch.optim.SGD(leader.parameters(), lr=0.5)
    x, y = torch.rand(5, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1])
    JointTrainer(problem, follower, optimizer, update="fused").step((x, y))
    z, grad = problem.seen
    delta = z.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(F.cross_entropy(before(x + delta), y), delta)
    assert torch.allclose(grad, expected, atol=1e-7)
    (after,) = torch.autograd.grad(F.cross_entropy(leader(x + delta), y), delta)
    assert not torch.allclose(grad, after, atol=1e-5)  # not the gradient at the new θ
    assert any(
        not torch.equal(p, q) for p, q in zip(follower.parameters(), phi_before, strict=True)
    )


def _l2_step(z: Tensor, direction: Tensor, size: float, x: Tensor) -> Tensor:
    """Π_Z(z + size · d / ‖d‖₂) per sample, written out: the L2 ball's rescale, then the box."""
    z = z + size * direction / direction.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    z = z * (EPS / z.flatten(1).norm(dim=1)).clamp(max=1.0).view(-1, 1, 1, 1)
    return (x + z).clamp(0.0, 1.0) - x


def test_under_l2_the_free_step_goes_along_the_gradient_over_its_l2_norm() -> None:
    """θ fixed (lr 0), g_φ ≡ 0, L2 ball: the follower's δ1 is one L2 step of ε/2 from 0, and the
    stored δ is Π(δ1 + s·ε·g/‖g‖₂), g = ∇_δ L(θ, δ1) (the L2 steepest direction, not sign g)."""
    torch.manual_seed(0)
    leader = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    carried = CarriedDecisions(5, free_step=0.25)
    problem = AdversarialDRO(leader, EPS, norm="l2", carried=carried)
    net = TinyConvAttacker(2, 1, EPS)
    with torch.no_grad():
        net.body[2].weight.zero_()
        net.body[2].bias.zero_()
    follower = LearnedFollower(net, lr=0.0, weight_decay=0.0, sign_step=0.5, norm="l2")
    optimizer = torch.optim.SGD(leader.parameters(), lr=0.0)
    x, y = torch.rand(5, 1, 4, 4) * 0.4 + 0.3, torch.tensor([0, 1, 2, 0, 1])  # the box never binds
    carried.select(torch.arange(5))
    JointTrainer(problem, follower, optimizer, update="fused").step((x, y))

    def grad_at(delta: Tensor) -> Tensor:
        delta = delta.clone().requires_grad_(True)
        return torch.autograd.grad(F.cross_entropy(leader(x + delta), y), delta)[0]

    zero = torch.zeros_like(x)
    delta1 = _l2_step(zero, grad_at(zero), 0.5 * EPS, x)
    expected = _l2_step(delta1, grad_at(delta1), 0.25 * EPS, x)
    assert carried.store is not None
    torch.testing.assert_close(carried.store, expected, rtol=0, atol=1e-6)
    assert (expected.flatten(1).norm(dim=1) < EPS * 0.99).all()  # inside: the step's length shows


BASE = ["solve", "adversarial-dro", "--train-size", "64", "--eval-size", "16", "--batch-size",
        "32", "--epochs", "1", "--gap-size", "0"]  # fmt: skip


def test_the_option_reaches_training_and_config_json(tmp_path: Path, monkeypatch) -> None:
    """``solve --carry-free-step s`` steps every batch's carried δ by s·ε (every training batch
    calls the problem's step, each with ε·s), and config.json records s; without it none does."""
    calls: list[float] = []
    original = Perturbation.decision_gradient

    def counting(self, batch, z, grad):
        calls.append(self.carried.free_step)
        original(self, batch, z, grad)

    monkeypatch.setattr(Perturbation, "decision_gradient", counting)
    for free_step, expected in ((None, []), ("0.25", [0.25, 0.25])):  # 64 digits, batches of 32
        calls.clear()
        out = tmp_path / f"run-{free_step}"
        args = [*BASE, "--out", str(out)]
        args += [] if free_step is None else ["--carry-free-step", free_step]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert calls == expected
        recorded = json.loads((out / "config.json").read_text())["carry_free_step"]
        assert recorded == (float(free_step) if free_step else 0.0)


def test_a_folder_older_than_both_options_is_reused_as_trained(tmp_path: Path) -> None:
    """A finished run whose config.json predates --ascent-loss and --carry-free-step trained as
    their defaults do (ce, 0): ``bench`` reuses it for a configuration at those defaults."""
    out = tmp_path / "old"
    assert CliRunner().invoke(app, [*BASE, "--out", str(out)]).exit_code == 0
    config = json.loads((out / "config.json").read_text())
    old = {k: v for k, v in config.items() if k not in ("ascent_loss", "carry_free_step")}
    (out / "config.json").write_text(json.dumps(old))
    args = dict(train_size=64, eval_size=16, batch_size=32, epochs=1, gap_size=0)
    assert finished_results(DROConfig(**args).resolve(), out) is not None
    assert finished_results(DROConfig(**args, carry_free_step=0.25).resolve(), out) is None


def test_bad_values_are_one_sentence(tmp_path: Path) -> None:
    bad = {
        "at least 0": ["--carry-free-step", "-0.1"],
        "needs --carry-decision": ["--carry-free-step", "0.25", "--no-carry-decision"],
        "needs --update fused": ["--carry-free-step", "0.25", "--update", "alternating"],
    }
    ait = CliRunner().invoke(app, ["solve", "adversarial-ait", "--carry-free-step", "0.25"])
    assert ait.exit_code == 2 and "No such option" in ait.output  # DRO's option alone
    for words, args in bad.items():
        out = tmp_path / words.replace(" ", "-")
        result = CliRunner().invoke(app, [*BASE, *args, "--out", str(out)])
        assert result.exit_code == 2 and words in result.output, result.output
        assert "Traceback" not in result.output and not out.exists()
