"""``--ascent-loss margin``: the follower's steps climb the CW margin max_{j≠y} Z_j − Z_y instead
of the cross-entropy, while φ still ascends q = CE and θ still descends L = CE."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import TinyConvAttacker
from torch import nn
from typer.testing import CliRunner

from bilevel import LearnedFollower, SignGradientAscent
from bilevel.protocol import follower_gradient
from cli import app
from problems.adversarial.data import dataset_info
from problems.adversarial.dro import AdversarialDRO
from problems.adversarial.dro_config import DROConfig
from problems.adversarial.solve import PROBLEMS

EPS = 0.1


def _linear_problem(ascent: str) -> tuple[AdversarialDRO, torch.Tensor, tuple]:
    """A linear classifier Z = W (x + δ) on 4×4 one-channel images, 3 classes, and a batch."""
    torch.manual_seed(0)
    leader = nn.Sequential(nn.Flatten(), nn.Linear(16, 3, bias=False))
    x, y = torch.full((5, 1, 4, 4), 0.5), torch.tensor([0, 1, 2, 0, 1])
    return AdversarialDRO(leader, EPS, ascent=ascent), leader[1].weight.detach(), (x, y)


def test_the_margin_gradient_is_the_closed_form_w_runner_up_minus_w_true() -> None:
    """∇_δ of mean_i (Z_j* − Z_y) for a linear leader is (W_j* − W_y) / B per example, j* the
    runner-up class; the CE gradient is another direction (softmax-weighted)."""
    problem, w, (x, y) = _linear_problem("margin")
    logits = problem.leader(x)
    runner_up = logits.scatter(1, y[:, None], float("-inf")).argmax(1)
    expected = (w[runner_up] - w[y]).reshape(5, 1, 4, 4) / len(y)
    z = torch.zeros_like(x)
    assert torch.allclose(follower_gradient(problem, (x, y), z), expected, atol=1e-6)
    ce = follower_gradient(_linear_problem("ce")[0], (x, y), z)
    assert not torch.allclose(ce, expected, atol=1e-4)


def test_fgsm_under_the_margin_steps_along_the_sign_of_the_margin_gradient() -> None:
    """One L∞ sign step of size ε from δ = 0 is ε · sign(W_j* − W_y), and it raises the margin."""
    problem, w, (x, y) = _linear_problem("margin")
    delta = SignGradientAscent(1, EPS).solve(problem, (x, y))
    logits = problem.leader(x)
    runner_up = logits.scatter(1, y[:, None], float("-inf")).argmax(1)
    expected = EPS * torch.sign(w[runner_up] - w[y]).reshape(5, 1, 4, 4)
    assert torch.allclose(delta, expected)
    before = problem.ascent_objective((x, y), torch.zeros_like(x))
    assert problem.ascent_objective((x, y), delta) > before


def test_phi_and_theta_keep_the_cross_entropy() -> None:
    """The surrogate changes the steps only: q and L (what φ ascends, what θ descends) stay CE,
    and a learned follower's ``learn`` returns the CE of its answer."""
    problem, _, (x, y) = _linear_problem("margin")
    delta = torch.full_like(x, 0.05)
    ce = F.cross_entropy(problem.leader(x + delta), y)
    assert torch.allclose(problem.follower_objective((x, y), delta), ce)
    assert torch.allclose(problem.leader_loss((x, y), delta), ce)
    assert torch.allclose(problem.meta_objective((x, y), delta), ce)
    assert not torch.allclose(problem.ascent_objective((x, y), delta), ce)
    follower = LearnedFollower(TinyConvAttacker(2, 1, EPS), steps=1, lr=1e-3, weight_decay=0.0)
    torch.manual_seed(1)
    answer = follower.solve(problem, (x, y))  # before φ's step, from the same random start
    torch.manual_seed(1)
    q = follower.learn(problem, (x, y))
    assert torch.allclose(q, F.cross_entropy(problem.leader(x + answer), y))
    assert not torch.allclose(q, problem.ascent_objective((x, y), answer))


def test_the_option_reaches_the_problem_and_config_json(tmp_path: Path) -> None:
    info = dataset_info("mnist5k")
    for asked, built in ((None, "ce"), ("margin", "margin")):
        cfg = DROConfig(follower="pgm", ascent_loss=asked).resolve()
        assert cfg.ascent_loss == built
        problem, _ = PROBLEMS[DROConfig](cfg, nn.Linear(1, 1), info)
        assert problem.ascent == built
    out = tmp_path / "run"
    args = ["solve", "adversarial-dro", "--follower", "fgsm", "--train-size", "64", "--eval-size",
            "16", "--batch-size", "32", "--epochs", "1", "--gap-size", "0", "--ascent-loss",
            "margin", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["ascent_loss"] == "margin"


@pytest.mark.parametrize("value", ["hinge", "CE "])
def test_an_unknown_ascent_loss_is_one_sentence_and_exit_2(tmp_path: Path, value: str) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["solve", "adversarial-dro", "--ascent-loss", value,
                                      "--out", str(out)])  # fmt: skip
    assert result.exit_code == 2
    assert "--ascent-loss" in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_evaluate_feeds_a_margin_runs_attacker_the_margin_gradient(tmp_path: Path) -> None:
    """``evaluate``'s ``learned`` attack runs g_φ on the loss whose gradient it was trained on:
    the CW margin for a run of ``--ascent-loss margin``, the CE otherwise."""
    runner = CliRunner()
    for ascent, loss in (("margin", "cw"), ("ce", "ce")):
        out = tmp_path / ascent
        args = ["solve", "adversarial-dro", "--follower", "grad", "--train-size", "64",
                "--eval-size", "16", "--batch-size", "32", "--epochs", "1", "--gap-size", "0",
                "--ascent-loss", ascent, "--out", str(out)]  # fmt: skip
        assert runner.invoke(app, args).exit_code == 0
        args = ["evaluate", str(out), "--attacks", "learned", "--n-examples", "8", "--no-checklist"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        (attack,) = json.loads((out / "eval.json").read_text())["attacks"]
        assert attack["params"]["loss"] == loss
