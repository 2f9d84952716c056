"""Adversarial interpolation training (Eq. 5-6, Algorithms 2 and 4): the label mixing, the partners,
the follower's direction and feasibility, the signs of one joint step in each update order, and
``cli.py solve adversarial-ait`` end to end on a slice of mnist5k with an exact resume."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import TinyConvAttacker, metrics_without_time
from typer.testing import CliRunner

from bilevel import JointTrainer, LearnedFollower, SignGradientAscent
from bilevel.protocol import follower_gradient
from bilevel.run import load_checkpoint
from cli import app
from problems.adversarial.ait import (
    AdversarialInterpolation,
    interpolated_labels,
    pair_batch,
    partners,
)
from problems.adversarial.ait_config import AITConfig
from problems.adversarial.data import dataset_info, load_dataset
from problems.adversarial.followers import build_follower
from problems.adversarial.models import SmallCNN

EPS = 0.3


def _digits(n: int = 64):
    x, y = load_dataset("mnist5k").test
    return pair_batch(x[:n], y[:n], "reversed")


def _problem(direction: str = "toward", eps_y: float = 0.5) -> AdversarialInterpolation:
    torch.manual_seed(0)
    return AdversarialInterpolation(SmallCNN().eval(), EPS, 10, eps_y, direction)


@pytest.mark.parametrize("classes", [10, 100])
def test_label_mixing_sums_to_one_and_matches_algorithm_2(classes: int) -> None:
    eps_y = 0.5
    y = torch.tensor([0, 3, 7, 7])
    y_partner = torch.tensor([5, 3, 1, 7])  # samples 1 and 3 share their partner's class
    mixed = interpolated_labels(y, y_partner, classes, eps_y)
    torch.testing.assert_close(mixed.sum(1), torch.ones(4))
    share = eps_y / (classes - 1)
    for i in range(4):
        expected = torch.full((classes,), share)
        expected[y_partner[i]] = 0.0  # (1 − y_j) removes the partner's class
        expected[y[i]] += 1 - eps_y
        torch.testing.assert_close(mixed[i], expected)
    # closed forms: different classes → 1 − ε_y + ε_y/(C−1) on y_i; same class → 1 − ε_y
    assert mixed[0, 0] == pytest.approx(1 - eps_y + share) and mixed[0, 5] == 0
    assert mixed[1, 3] == pytest.approx(1 - eps_y)


def test_leader_loss_is_soft_label_cross_entropy_and_hard_ce_at_eps_y_zero() -> None:
    """ỹ_i = (1 − ε_y) y_i + ε_y (1 − y_j)/(C − 1), built by hand from each example's partner j
    (not by the code under test), then the soft-label cross-entropy."""
    x, y, _ = _digits(16)
    y = y.clone()  # the data set's own tensor is shared with other tests
    y[:3] = torch.tensor([0, 1, 2])
    j = torch.arange(16).roll(1)  # partner of i: i − 1, so the first three differ in class
    j[:3] = torch.tensor([2, 0, 1])
    batch = (x, y, j)
    z = torch.zeros_like(x)
    problem = _problem(eps_y=0.5)
    with torch.no_grad():  # the small CNN starts with a zero head: every soft label scores log 10
        for p in problem.leader.parameters():
            p.add_(0.1 * torch.randn_like(p))
    soft = torch.full((16, 10), 0.5 / 9)
    for i in range(16):
        soft[i, y[j[i]]] = 0.0
        soft[i, y[i]] += 0.5
    manual = -(soft * F.log_softmax(problem.leader(x), dim=1)).sum(1).mean()
    torch.testing.assert_close(problem.leader_loss(batch, z), manual)
    hard = _problem(eps_y=0.0)
    torch.testing.assert_close(
        hard.leader_loss(batch, z), F.cross_entropy(hard.leader(batch[0]), batch[1])
    )


def test_partners_reversed_and_random_cycle() -> None:
    assert partners(5, "reversed").tolist() == [4, 3, 2, 1, 0]
    j = partners(32, "permutation", torch.Generator().manual_seed(3))
    assert sorted(j.tolist()) == list(range(32))  # a permutation
    assert (j != torch.arange(32)).all()  # nobody is their own partner
    again = partners(32, "permutation", torch.Generator().manual_seed(3))
    assert torch.equal(j, again)  # drawn from the generator only (exact resume)


def test_a_permutation_pairing_uses_the_epoch_generator_alike_for_any_share_size() -> None:
    """Under torchrun a batch of 128 over 3 processes gives shares of 43, 43 and 42; each pairs
    its share from the epoch's generator, which also draws the later batches' crops and flips, so
    that generator must be left in the same state by every share size (randperm(43) and
    randperm(42) leave it in different ones)."""
    after = []
    for share in (43, 42):
        generator = torch.Generator().manual_seed(5)
        partners(share, "permutation", generator)
        after.append(generator.get_state())
    assert torch.equal(after[0], after[1])


@pytest.mark.parametrize("direction", ["toward", "away"])
def test_ait_follower_moves_features_toward_or_away_inside_the_ball(direction: str) -> None:
    problem = _problem(direction)
    batch = _digits(64)
    x = batch[0]
    with torch.random.fork_rng():
        torch.manual_seed(1)
        start = problem.project(batch, problem.init_follower(batch))
        torch.manual_seed(1)  # the same uniform start for the one signed step of size ε
        delta = SignGradientAscent(1, EPS, random_start=True).solve(problem, batch)
    assert delta.abs().max() <= EPS + 1e-6
    assert (x + delta).min() >= 0 and (x + delta).max() <= 1
    with torch.no_grad():
        before = problem.cosine_distance(batch, start)
        after = problem.cosine_distance(batch, delta)
        clean = problem.cosine_distance(batch, torch.zeros_like(x))
    closer = (after < before).float().mean()
    if direction == "toward":
        assert after.mean() < before.mean() and after.mean() < clean.mean() and closer > 0.9
    else:
        assert after.mean() > before.mean() and after.mean() > clean.mean() and closer < 0.1
    # q is what the follower maximises: −mean(1 − cos) toward, +mean(1 − cos) away
    sign = -1.0 if direction == "toward" else 1.0
    torch.testing.assert_close(problem.follower_objective(batch, delta), sign * after.mean())


def _interior_batch(n: int = 32):
    """Images in [0.35, 0.65]: the [0, 1] box never binds within ε = 0.3."""
    torch.manual_seed(3)
    return pair_batch(0.35 + 0.3 * torch.rand(n, 1, 28, 28), torch.randint(0, 10, (n,)), "reversed")


@pytest.mark.parametrize("random_start", [False, True])
def test_ait_starts_uniformly_in_the_ball_whatever_is_asked(random_start: bool) -> None:
    """δ0 ~ U(−ε, ε) per pixel (the AIT Net's and L2L-AIT's start), with or without random_start:
    mean |δ0| = ε/2, mean δ0 = 0, and a new draw under another seed."""
    problem, batch = _problem(), _interior_batch()
    start = problem.init_follower(batch, random_start=random_start)
    assert start.abs().max() <= EPS
    assert abs(float(start.abs().mean()) / EPS - 0.5) < 0.02 and abs(float(start.mean())) < 0.01
    assert not torch.equal(problem.init_follower(batch, random_start=random_start), start)
    net = TinyConvAttacker(2, 1, EPS)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()  # g_φ ≡ 0: the learned follower answers its start
    delta = LearnedFollower(net, random_start=False).solve(problem, batch)
    assert abs(float(delta.abs().mean()) / EPS - 0.5) < 0.02


def test_the_ait_follower_takes_one_signed_step_of_size_eps_from_its_uniform_start() -> None:
    """--follower ait: δ = Π(δ0 + ε sign ∇q(δ0)), δ0 ~ U(−ε, ε). Where ∇q ≠ 0 and the box does not
    bind, δ·sign ∇q = min(δ0·sign ∇q + ε, ε) ∈ [0, ε]: at the corner ε exactly when δ0·sign ∇q ≥ 0
    (about half the pixels: ∇q(δ0) depends a little on δ0), else in [0, ε), so mean |δ|/ε is
    about 3/4 (a step of 2ε puts every such pixel at the corner)."""
    problem, batch = _problem(), _interior_batch()
    follower = build_follower(AITConfig(follower="ait").resolve(), dataset_info("mnist5k"))
    torch.manual_seed(7)
    start = problem.init_follower(batch)
    torch.manual_seed(7)
    delta = follower.solve(problem, batch)
    sign = follower_gradient(problem, batch, start).sign()
    moved = sign != 0
    assert moved.float().mean() > 0.5
    torch.testing.assert_close(delta, (start + EPS * sign).clamp(-EPS, EPS), rtol=0, atol=1e-6)
    along = (delta * sign)[moved] / EPS
    assert along.min() >= -1e-6 and along.max() <= 1 + 1e-6
    assert 0.3 < float((along > 1 - 1e-6).float().mean()) < 0.7
    assert 0.6 < float(along.mean()) < 0.9


@pytest.mark.parametrize(
    ("update", "direction"),
    [("follower-first", "toward"), ("follower-first", "away"), ("alternating", "toward")],
)
def test_one_joint_step_moves_leader_down_L_and_learned_follower_up_q(
    update: str, direction: str
) -> None:
    problem = _problem(direction)
    follower = LearnedFollower(TinyConvAttacker(2, 1, EPS), steps=1, lr=1e-2, weight_decay=0.0)
    optimizer = torch.optim.SGD(problem.leader.parameters(), lr=0.05)
    batch = _digits(32)

    def follower_q(p: AdversarialInterpolation) -> tuple[float, torch.Tensor]:
        with torch.random.fork_rng():
            torch.manual_seed(2)  # the same uniform start before and after
            z = follower.solve(p, batch)
            return float(p.follower_objective(batch, z).detach()), z

    q_before, z_before = follower_q(problem)
    with torch.no_grad():
        L_before = float(problem.leader_loss(batch, z_before))
    old_leader = copy.deepcopy(problem.leader)
    JointTrainer(problem, follower, optimizer, update).step(batch)
    with torch.no_grad():
        assert float(problem.leader_loss(batch, z_before)) < L_before  # θ went down L
    old = AdversarialInterpolation(old_leader.eval(), EPS, 10, 0.5, direction)
    assert follower_q(old)[0] > q_before  # φ went up q against the same leader


def test_follower_first_steps_phi_before_theta() -> None:
    """Algorithm 4's order: φ's step sees the leader before θ's step, alternating's sees it after,
    so the same start gives different φ; with a zero leader learning rate the two agree."""

    def phi_after(update: str, leader_lr: float) -> list[torch.Tensor]:
        problem = _problem("toward")
        torch.manual_seed(5)
        follower = LearnedFollower(TinyConvAttacker(2, 1, EPS), lr=1e-2, weight_decay=0.0)
        optimizer = torch.optim.SGD(problem.leader.parameters(), lr=leader_lr)
        torch.manual_seed(6)
        JointTrainer(problem, follower, optimizer, update).step(_digits(32))
        return [p.detach().clone() for p in follower.net.parameters()]

    for a, b in zip(phi_after("follower-first", 0.0), phi_after("alternating", 0.0), strict=True):
        torch.testing.assert_close(a, b)
    differs = [
        not torch.allclose(a, b)
        for a, b in zip(
            phi_after("follower-first", 1.0), phi_after("alternating", 1.0), strict=True
        )
    ]
    assert any(differs)


# ---- CLI end to end -------------------------------------------------------------------------

SMALL = ["--train-size", "192", "--eval-size", "32", "--batch-size", "32", "--epochs", "2"]
SMALL += ["--eps", "0.1", "--lr", "0.1", "--follower", "grad", "--pairing", "permutation"]
runner = CliRunner()


def _solve(out: Path, *extra: str):
    args = ["solve", "adversarial-ait", *SMALL, "--out", str(out), *extra]
    return runner.invoke(app, args, catch_exceptions=False)


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ait") / "unbroken"
    result = _solve(out)
    assert result.exit_code == 0, result.output
    return out


def test_cli_run_folder_has_the_dro_layout_and_records_the_options(unbroken: Path) -> None:
    for name in ("config.json", "metrics.jsonl", "last.pt", "best.pt", "report.md", "curves.png"):
        assert (unbroken / name).is_file(), name
    config = json.loads((unbroken / "config.json").read_text())
    assert config["model"] == "small-cnn" and config["dataset"] == "mnist5k"
    assert config["eps"] == 0.1 and config["eps_y"] == 0.5 and config["follower"] == "grad"
    assert config["ait_direction"] == "toward" and config["update"] == "follower-first"
    assert config["attacker_random_start"] is True  # as AIT.init_follower starts, always
    assert set(load_checkpoint(unbroken / "best.pt")) == {"epoch", "leader"}
    rows = metrics_without_time(unbroken)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(r["follower_objective"] <= 0 for r in rows)  # toward: q = −mean(1 − cos) ≤ 0
    results = json.loads((unbroken / "results.json").read_text())
    assert 0.0 <= results["test_pgd20_acc"] <= results["test_clean_acc"] <= 1.0
    assert results["test_clean_acc"] > 0.2  # learned something in 2 small epochs (chance: 0.1)


def test_cli_resume_ends_with_the_unbroken_metrics(unbroken: Path, tmp_path: Path) -> None:
    out = tmp_path / "broken"
    first = _solve(out, "--interrupt-after-epoch", "1")
    assert first.exit_code == 0 and "resume" in first.output
    # a folder from before AIT recorded its uniform start wrote False for the same start
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps(config | {"attacker_random_start": False}))
    assert _solve(out, "--resume").exit_code == 0
    assert metrics_without_time(out) == metrics_without_time(unbroken)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--ait-direction", "sideways"], "Unknown --ait-direction"),
        (["--pairing", "random"], "Unknown --pairing"),
        (["--eps-y", "1.5"], "--eps-y must be in [0, 1]"),
        (["--update", "fused"], "zero-sum"),
        (["--follower", "pgm"], "Unknown --follower"),
        (["--eps-warmup", "5"], "--eps-warmup must be between 0 and --epochs"),
        # AIT's start is uniform whatever is asked: a "no" was recorded, and not honoured
        (["--no-attacker-random-start"], "AIT always starts δ uniformly in the ε-ball"),
    ],
)
def test_cli_bad_input_gives_one_sentence_and_exit_2(tmp_path: Path, args, words) -> None:
    result = _solve(tmp_path / "run", *args)
    assert result.exit_code == 2 and words in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def test_bench_ait_rows_order_the_attacks_and_refuse_unknown_directions(tmp_path: Path) -> None:
    args = ["bench", "ait", "--epochs", "1", "--methods", "ait,grad", "--directions", "away"]
    args += ["--train-size", "32", "--eval-size", "16", "--out", str(tmp_path / "runs")]
    args += ["--no-autoattack"]
    result = runner.invoke(app, [*args, "--json", str(tmp_path / "bench.json")])
    assert result.exit_code == 0, result.output
    row, learned = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert (row["method"], learned["method"]) == ("AIT, away", "L2L-AIT (grad), away")
    assert 0.0 <= row["pgd40_acc"] <= row["clean_acc"] and row["cw_pgd40_acc"] <= row["clean_acc"]
    # training seconds are compared with AIT's in the same direction
    assert row["ratio_to_ait"] == 1.0 and row["cpu_ratio_to_ait"] == 1.0
    ratio = learned["train_seconds"] / row["train_seconds"]
    assert learned["ratio_to_ait"] == pytest.approx(ratio, abs=1e-3)
    config = tmp_path / "runs" / "AIT_away" / "seed-0" / "config.json"
    assert json.loads(config.read_text())["eps"] == 0.3
    bad = runner.invoke(app, [*args[:7], "sideways", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "--directions" in bad.output


def test_bench_ait_json_records_what_each_row_trained(tmp_path: Path) -> None:
    """Two bench JSON files had rows of one label with other results and nothing in them said
    that --levers differed: each label's options are now in the file, seeds aside."""
    path = tmp_path / "bench.json"
    args = ["bench", "ait", "--epochs", "1", "--methods", "ait,grad", "--directions", "toward",
            "--seeds", "0,1", "--train-size", "32", "--eval-size", "16", "--no-autoattack",
            "--levers", '{"lr": 0.02}', "--out", str(tmp_path / "runs"), "--json", str(path)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    trained = json.loads(path.read_text())["trained"]
    ait, learned = trained["AIT, toward"], trained["L2L-AIT (grad), toward"]
    assert learned["lr"] == 0.02 and ait["lr"] != 0.02  # the levers shape the learned rows only
    for options in (ait, learned):
        assert (options["epochs"], options["train_size"], options["eval_size"]) == (1, 32, 16)
        assert "seed" not in options  # one entry for the row's two seeds


def test_the_milestones_help_names_the_default_ait_resolves_on_cifar() -> None:
    """AIT's CIFAR schedule drops the rate at 60 and 90 of 200 epochs, not at 1/2 and 3/4."""
    assert AITConfig(dataset="cifar10", follower="ait").resolve().milestones == [60, 90]
    (field,) = [f for f in dataclasses.fields(AITConfig) if f.name == "milestones"]
    assert "60,90 for AIT's 200 CIFAR epochs" in field.metadata["help"]
