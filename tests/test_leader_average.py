"""``--leader-ema``: θ̄ is the exponential moving average of θ over the leader's steps (Polyak
averaging), it is what validation selects and ``best.pt`` keeps, and a resumed run ends as an
unbroken one without the option repeated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import TinyConvAttacker, image_batch, metrics_without_time
from typer.testing import CliRunner

from bilevel import JointTrainer, LearnedFollower
from bilevel.averaging import LeaderAverage
from cli import app
from problems.adversarial.data import load_dataset, subset
from problems.adversarial.dro import AdversarialDRO
from problems.adversarial.models import SmallCNN, build_model

EPS = 0.3
BASE = ["solve", "adversarial-dro", "--follower", "grad", "--train-size", "64", "--eval-size",
        "16", "--batch-size", "32", "--eps", "0.1", "--gap-size", "8"]  # fmt: skip
TINY = [*BASE, "--epochs", "2"]


def _parts():
    """A DRO problem, a learned follower and the leader's SGD."""
    problem = AdversarialDRO(SmallCNN(), EPS)
    follower = LearnedFollower(TinyConvAttacker(2, 1, EPS), steps=1, lr=1e-3, weight_decay=0.0)
    optimizer = torch.optim.SGD(problem.leader.parameters(), lr=0.05)
    return problem, follower, optimizer


def test_the_average_is_the_closed_form_ema_of_the_leader_steps() -> None:
    """θ̄ after n steps: θ_1 after the first, then θ̄ ← d θ̄ + (1 − d) θ_k, for every tensor."""
    torch.manual_seed(0)
    problem, follower, optimizer = _parts()
    decay = 0.8
    trainer = JointTrainer(problem, follower, optimizer, leader_average=LeaderAverage(problem.leader, decay))  # fmt: skip
    expected = None
    for _ in range(3):
        trainer.step(image_batch(16))
        theta = {k: v.detach().clone().float() for k, v in problem.leader.state_dict().items()}
        if expected is None:
            expected = theta
        else:
            expected = {k: decay * expected[k] + (1 - decay) * theta[k] for k in theta}
    average = trainer.selected_leader().state_dict()
    assert average.keys() == expected.keys()
    for key, value in expected.items():
        if key.endswith("num_batches_tracked"):
            continue
        torch.testing.assert_close(average[key].float(), value, rtol=1e-5, atol=1e-6)
    weight = next(k for k in expected if k.endswith("weight"))
    assert not torch.equal(average[weight], problem.leader.state_dict()[weight])  # θ̄ ≠ θ


def test_without_the_option_the_selected_leader_is_theta_itself() -> None:
    problem, follower, optimizer = _parts()
    assert JointTrainer(problem, follower, optimizer).selected_leader() is problem.leader


def test_best_pt_keeps_the_average_not_theta(tmp_path: Path) -> None:
    """One epoch: its θ̄ is the selected leader, so best.pt holds last.pt's average, not θ."""
    one_epoch = [*BASE, "--epochs", "1"]
    out = tmp_path / "run"
    done = CliRunner().invoke(app, [*one_epoch, "--leader-ema", "0.5", "--out", str(out)])
    assert done.exit_code == 0, done.output
    last = torch.load(out / "last.pt", weights_only=False)["trainer"]
    best = torch.load(out / "best.pt", weights_only=False)["leader"]
    for key, value in best.items():
        assert torch.equal(value, last["leader_average"][f"module.{key}"]), key
    assert any(not torch.equal(last["leader"][k], best[k]) for k in best if "weight" in k)
    # validation judged θ̄ too: its clean loss is θ̄'s on the 16 validation digits
    splits = load_dataset("mnist5k", None)
    x, y = subset(splits.val, 16)
    info = splits.info
    model = build_model("small-cnn", info.num_classes, info.in_channels, info.mean, info.std)
    model.load_state_dict(best)
    with torch.no_grad():
        loss = F.cross_entropy(model.eval()(x), y).item()
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert row["gap_val_clean_loss"] == pytest.approx(loss, rel=1e-5)


def test_a_resume_ends_as_the_unbroken_run_without_the_option_repeated(tmp_path: Path) -> None:
    runner = CliRunner()
    unbroken, stopped = tmp_path / "unbroken", tmp_path / "stopped"
    done = runner.invoke(app, [*TINY, "--leader-ema", "0.5", "--out", str(unbroken)])
    assert done.exit_code == 0, done.output
    cut = [*TINY, "--leader-ema", "0.5", "--out", str(stopped), "--interrupt-after-epoch", "1"]
    assert runner.invoke(app, cut).exit_code == 0
    resumed = runner.invoke(app, [*TINY, "--out", str(stopped), "--resume"])  # no --leader-ema
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((stopped / "config.json").read_text())["leader_ema"] == 0.5
    assert metrics_without_time(stopped) == metrics_without_time(unbroken)


@pytest.mark.parametrize("decay", ["1.0", "-0.1"])
def test_a_decay_outside_0_1_is_one_sentence(tmp_path: Path, decay: str) -> None:
    result = CliRunner().invoke(app, [*TINY, "--leader-ema", decay, "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "--leader-ema must be in [0, 1)" in result.output
    assert not (tmp_path / "r").exists()


def test_batch_norm_statistics_are_averaged_too() -> None:
    """θ̄ of a network with batch norm is evaluated with its own running statistics: their
    average, not the statistics it was built with (SmallCNN has none, so no test saw them)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    average = LeaderAverage(net, 0.5)
    expected = None
    for _ in range(3):
        net.train()
        net(torch.randn(8, 3) + 2.0)
        average.update(net)
        mean = net[1].running_mean.clone()
        expected = mean if expected is None else 0.5 * expected + 0.5 * mean
    torch.testing.assert_close(average.module[1].running_mean, expected)


def test_evaluating_last_pt_evaluates_the_average_and_says_so(tmp_path: Path) -> None:
    """``evaluate --model last.pt`` of a one-epoch run: its θ̄ is best.pt's, so the two evaluations
    are one, and eval.json and eval.md name the weights; θ itself (≠ θ̄) would score otherwise."""
    out = tmp_path / "run"
    done = CliRunner().invoke(app, [*BASE, "--epochs", "1", "--leader-ema", "0.5", "--out", str(out)])  # fmt: skip
    assert done.exit_code == 0, done.output
    evals = {}
    for name in ("best.pt", "last.pt"):
        args = ["evaluate", str(out), "--model", str(out / name), "--attacks", "fgsm",
                "--noise-samples", "1", "--no-checklist", "--n-examples", "64"]  # fmt: skip
        done = CliRunner().invoke(app, args)
        assert done.exit_code == 0, done.output
        evals[name] = json.loads((out / "eval.json").read_text())
        assert evals[name]["weights"] == "θ̄, the --leader-ema average"
        assert "(θ̄, the --leader-ema average)" in (out / "eval.md").read_text()
    last, best = evals["last.pt"], evals["best.pt"]
    assert last["clean_correct"] == best["clean_correct"]  # example by example
    assert last["attacks"][0]["correct"] == best["attacks"][0]["correct"]
