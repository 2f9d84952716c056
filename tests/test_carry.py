"""Carried decisions (ATTA): each example's follower starts from its last δ (``bilevel.carry``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import image_batch, linear_two_class, load_script, metrics_without_time
from typer.testing import CliRunner

from bilevel import SignGradientAscent
from bilevel.carry import CarriedDecisions
from bilevel.errors import UserError
from bilevel.followers import HandDesigned
from bilevel.loop import JointTrainer
from cli import app
from problems.adversarial.dro import AdversarialDRO
from problems.adversarial.dro_config import DROConfig
from problems.adversarial.evaluation.runs import load_learned_attacker
from problems.adversarial.gap import carried_gap, follower_gap, reference_followers
from problems.adversarial.models import SmallCNN

EPS = 0.3


def test_unseen_examples_start_fresh_and_seen_ones_where_they_stopped() -> None:
    carried = CarriedDecisions(4)
    z0 = torch.full((2, 1, 2, 2), 0.5)
    carried.select(torch.tensor([2, 0]))
    assert torch.equal(carried.start(z0), z0)  # nothing stored yet
    carried.remember(torch.stack([torch.full((1, 2, 2), 0.2), torch.full((1, 2, 2), -0.1)]))
    carried.select(torch.tensor([0, 1]))
    start = carried.start(z0)
    assert torch.allclose(start[0], torch.full((1, 2, 2), -0.1))  # example 0: its last δ
    assert torch.equal(start[1], z0[1])  # example 1: never seen, the usual start
    again = CarriedDecisions(4)
    again.load_state_dict(carried.state_dict())
    again.select(torch.tensor([2]))
    assert torch.allclose(again.start(z0[:1]), torch.full((1, 1, 2, 2), 0.2))
    with pytest.raises(ValueError, match="decisions"):
        carried.remember(torch.zeros(3, 1, 2, 2))


@pytest.mark.parametrize("restart", [0.0, 0.25, 1.0])
def test_a_restart_fraction_starts_that_share_of_seen_examples_afresh(restart: float) -> None:
    """--carry-restart p: of 4,000 seen examples about p start at z0, the rest at their carried
    δ; p = 0 is the plain carry and p = 1 is no carry at all."""
    torch.manual_seed(0)
    carried = CarriedDecisions(4000, restart)
    carried.select(torch.arange(4000))
    carried.remember(torch.full((4000, 1), 0.2))
    starts = carried.start(torch.zeros(4000, 1))
    fresh = (starts == 0).float().mean().item()
    assert bool(((starts == 0) | torch.isclose(starts, torch.tensor(0.2))).all())
    assert fresh == pytest.approx(restart, abs=0.025)  # binomial sd at p = 0.25: 0.007
    with pytest.raises(ValueError, match="fraction"):
        CarriedDecisions(4, 1.5)


def test_a_resumed_store_moves_to_the_decisions_device() -> None:
    """A checkpoint loads the store on the CPU; on a GPU run it must join the decisions there,
    not cost a host-device copy every batch (the "meta" device stands in for the GPU here)."""
    carried = CarriedDecisions(6)
    carried.load_state_dict({"store": torch.ones(6, 2), "seen": torch.arange(6) < 3})
    carried.select(torch.arange(4))
    start = carried.start(torch.zeros(4, 2, device="meta"))
    assert start.device.type == carried.store.device.type == carried.seen.device.type == "meta"
    resumed = CarriedDecisions(6)
    resumed.load_state_dict({"store": torch.ones(6, 2), "seen": torch.arange(6) < 3})
    resumed.select(torch.arange(4))
    resumed.remember(torch.zeros(4, 2, device="meta"))
    assert resumed.store.device.type == resumed.seen.device.type == "meta"


def test_a_jittered_carried_start_moves_by_alpha_times_the_fresh_start() -> None:
    """--carry-jitter α: a seen example starts at δ_i + α·z0_i, an unseen one at z0_i."""
    carried = CarriedDecisions(3, jitter=0.5)
    carried.select(torch.tensor([0, 1]))
    carried.remember(torch.tensor([[0.2], [-0.1]]))
    carried.select(torch.tensor([0, 2]))
    start = carried.start(torch.tensor([[0.1], [0.3]]))
    assert torch.allclose(start, torch.tensor([[0.25], [0.3]]))
    with pytest.raises(ValueError, match="jitter"):
        CarriedDecisions(3, jitter=-1.0)


def test_carry_restart_refuses_values_outside_0_1_and_runs_without_the_carry() -> None:
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        DROConfig(carry_restart=-0.1).resolve()
    with pytest.raises(UserError, match="--carry-decision"):
        DROConfig(follower="pgm", carry_restart=0.5).resolve()
    assert DROConfig(carry_restart=0.5).resolve().carry_restart == 0.5  # mnist5k L2L: carried
    # [0, 1] is closed: at 1 every seen example starts afresh, as the sentence allows
    assert DROConfig(carry_restart=1.0).resolve().carry_restart == 1.0
    with pytest.raises(UserError, match="--carry-jitter needs --carry-decision"):
        DROConfig(follower="fgsm", carry_jitter=0.5).resolve()
    with pytest.raises(UserError, match="--attacker-random-start"):  # z0 = 0: nothing to jitter by
        DROConfig(carry_jitter=0.5, attacker_random_start=False).resolve()


@pytest.mark.parametrize("carry", [False, True])
def test_a_carried_one_step_follower_climbs_one_step_per_visit(carry: bool) -> None:
    """FGSM of step ε/4 from δ = 0 on a fixed θ (lr 0): afresh it reaches |δ| = ε/4 on every
    visit; carried, its δ grows by ε/4 a visit until the ball stops it at ε (ATTA's accumulation)."""
    leader = linear_two_class()
    carried = CarriedDecisions(6) if carry else None
    problem = AdversarialDRO(leader, EPS, carried=carried)
    follower = SignGradientAscent(1, EPS / 4)
    trainer = JointTrainer(problem, follower, torch.optim.SGD(leader.parameters(), lr=0.0))
    x, y, rows = torch.full((6, 1, 4, 4), 0.5), torch.tensor([0, 1, 0, 1, 0, 1]), torch.arange(6)
    reached = []
    for _ in range(5):
        for half in (rows[:3], rows[3:]):
            if carried is not None:
                carried.select(half)
            trainer.step((x[half], y[half]))
        if carried is not None:
            assert carried.store is not None
            reached.append(round(carried.store.abs().amin().item(), 6))
    if carry:
        assert reached == pytest.approx([EPS / 4, EPS / 2, 3 * EPS / 4, EPS, EPS])
    else:
        z = follower.solve(problem, (x, y))
        assert z.abs().amin().item() == pytest.approx(EPS / 4)
        assert z.abs().amax().item() == pytest.approx(EPS / 4)


@pytest.mark.parametrize(
    ("learned", "update"), [(False, "alternating"), (True, "alternating"), (True, "fused")]
)  # the fused update needs a learned follower
def test_the_carried_delta_is_stored_detached_and_kept_feasible_when_eps_shrinks(
    learned: bool, update: str
) -> None:
    """What the carry stores is the follower's answer without its graph, inside the ball and the
    box; a δ carried at ε = 0.3 starts the next visit at ε = 0.05 (a run resumed at another ε)
    and the answer, and so the stored δ, lies in the smaller ball."""
    from helpers import TinyConvAttacker

    from bilevel.learned_follower import LearnedFollower
    from problems.adversarial.solve import set_eps

    leader, carried = linear_two_class(), CarriedDecisions(6)
    problem = AdversarialDRO(leader, EPS, carried=carried)
    follower = (
        LearnedFollower(TinyConvAttacker(2, 1, EPS), steps=2, lr=1e-2, sign_step=0.625)
        if learned
        else SignGradientAscent(1, EPS / 2)
    )
    trainer = JointTrainer(problem, follower, torch.optim.SGD(leader.parameters(), lr=0.0), update)
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    y, rows = torch.tensor([0, 1, 0, 1, 0, 1]), torch.arange(6)
    for eps in (EPS, EPS, 0.05):
        set_eps(problem, follower, eps)
        carried.select(rows)
        trainer.step((x, y))
        assert carried.store is not None and not carried.store.requires_grad
        assert carried.store.abs().max().item() <= eps + 1e-6
        assert (x + carried.store).min() >= -1e-6 and (x + carried.store).max() <= 1 + 1e-6
    assert carried.store.abs().max().item() == pytest.approx(0.05, abs=1e-3)  # pressed to ε


def test_carry_decision_refuses_augmented_batches_in_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--augment none"):
        DROConfig(carry_decision=True, augment="crop-flip").resolve()
    out = tmp_path / "run"
    args = ["solve", "adversarial-dro", "--carry-decision", "--augment", "crop-flip", "--out"]
    result = CliRunner().invoke(app, [*args, str(out)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert not out.exists()


def test_a_carrying_run_records_the_lever_and_resumes_exactly(tmp_path: Path) -> None:
    """The carried δ are in last.pt: a run stopped after epoch 1 and resumed ends as the unbroken
    run, and they differ from a run without carry (the lever changes what is trained)."""
    args = ["solve", "adversarial-dro", "--train-size", "64", "--eval-size", "16", "--batch-size",
            "32", "--epochs", "2", "--gap-size", "0", "--follower", "pgm", "--pgm-steps", "1"]  # fmt: skip
    runs = {}
    for name, extra in (("unbroken", ["--carry-decision"]), ("fresh", [])):
        runs[name] = tmp_path / name
        done = CliRunner().invoke(app, [*args, *extra, "--out", str(runs[name])])
        assert done.exit_code == 0, done.output
    stopped = tmp_path / "stopped"
    first = CliRunner().invoke(
        app, [*args, "--carry-decision", "--out", str(stopped), "--interrupt-after-epoch", "1"]
    )
    assert first.exit_code == 0, first.output
    assert json.loads((stopped / "config.json").read_text())["carry_decision"] is True
    resumed = CliRunner().invoke(app, [*args, "--out", str(stopped), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert metrics_without_time(stopped) == metrics_without_time(runs["unbroken"])
    assert metrics_without_time(runs["fresh"]) != metrics_without_time(runs["unbroken"])


def test_a_jittered_carry_resumes_without_its_options_repeated(tmp_path: Path) -> None:
    """--resume without the carry's levers continues a run trained with --carry-restart and
    --carry-jitter: the folder's values are taken (not the defaults of 0), and the run ends as an
    unbroken one."""
    args = ["solve", "adversarial-dro", "--train-size", "64", "--eval-size", "16", "--batch-size",
            "32", "--epochs", "2", "--gap-size", "0", "--follower", "pgm", "--pgm-steps", "1"]  # fmt: skip
    levers = ["--carry-decision", "--carry-restart", "0.5", "--carry-jitter", "0.5"]
    unbroken, stopped = tmp_path / "unbroken", tmp_path / "stopped"
    done = CliRunner().invoke(app, [*args, *levers, "--out", str(unbroken)])
    assert done.exit_code == 0, done.output
    cut = [*args, *levers, "--out", str(stopped), "--interrupt-after-epoch", "1"]
    assert CliRunner().invoke(app, cut).exit_code == 0
    resumed = CliRunner().invoke(app, [*args, "--out", str(stopped), "--resume"])  # no levers
    assert resumed.exit_code == 0, resumed.output
    config = json.loads((stopped / "config.json").read_text())
    assert (config["carry_restart"], config["carry_jitter"]) == (0.5, 0.5)
    assert metrics_without_time(stopped) == metrics_without_time(unbroken)


class StaysAtStart(HandDesigned):
    """A follower that takes no step: z = Π(z0)."""

    def solve(self, problem, batch):
        return problem.project(batch, problem.init_follower(batch))


@pytest.mark.parametrize("carried_is", ["pgd10", "zero"])
def test_the_carried_gap_scores_a_follower_by_where_its_carried_start_leads(carried_is) -> None:
    """A follower that stays at its start (0 steps) scores ratio 1 when the carried δ are PGD-10's
    own answers (same seed), and 0 when they are zero: it measures the carried start."""
    model = SmallCNN().eval()
    probe = image_batch(40)
    problem = AdversarialDRO(model, EPS)
    gap = follower_gap(model, StaysAtStart(), problem, {"probe": probe}, EPS, seed=3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        delta = reference_followers(EPS)["pgd10"].solve(problem, probe)
    carried = CarriedDecisions(40)
    carried.select(torch.arange(40))
    carried.remember(delta if carried_is == "pgd10" else torch.zeros_like(delta))
    out = carried_gap(model, StaysAtStart(), problem, carried, probe, gap, seed=3)
    expected = 1.0 if carried_is == "pgd10" else 0.0
    assert out["gap_probe_carried_ratio"] == pytest.approx(expected, abs=1e-5)
    assert problem.carried is None  # the probe problem is left as it was


def test_a_run_from_before_the_carry_rebuilds_its_attacker_as_it_trained(tmp_path: Path) -> None:
    """A run folder whose config.json predates --truncated-unroll, --plain-steps and
    --carry-decision is read with their old values (LEGACY_VALUES), not today's defaults: φ
    learned through every g_φ step."""
    out = tmp_path / "old"
    args = ["solve", "adversarial-dro", "--train-size", "32", "--eval-size", "16", "--batch-size",
            "32", "--epochs", "1", "--gap-size", "0", "--out", str(out)]  # fmt: skip
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert load_learned_attacker(out).truncated  # today's mnist5k default, as trained
    config = json.loads((out / "config.json").read_text())
    del config["truncated_unroll"], config["plain_steps"], config["carry_decision"]
    (out / "config.json").write_text(json.dumps(config))
    assert not load_learned_attacker(out).truncated


def test_carried_gap_script_reproduces_the_gap_solve_logged(tmp_path: Path) -> None:
    """benchmarks/carried_gap.py rebuilds the last epoch's gap as solve measured it: on θ̄ under
    --leader-ema and from a carried store with the run's --carry-restart and --carry-jitter. It
    built the store without them (0.65 where solve logged 0.63) and attacked θ (PGD-10 loss 2.347
    where solve's, on θ̄, was 2.372)."""
    out = tmp_path / "run"
    args = ["solve", "adversarial-dro", "--train-size", "64", "--eval-size", "16", "--batch-size",
            "32", "--epochs", "1", "--gap-size", "16", "--follower", "pgm", "--pgm-steps", "1",
            "--carry-decision", "--carry-restart", "0.5", "--carry-jitter", "0.5",
            "--leader-ema", "0.9", "--out", str(out)]  # fmt: skip
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    logged = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    found = load_script("benchmarks", "carried_gap").last_epoch_gap(out)
    keys = ["pgd10_loss", "follower_loss", "follower_ratio", "carried_loss", "carried_ratio"]
    for key in (f"gap_probe_{k}" for k in keys):
        assert found[key] == pytest.approx(logged[key], rel=1e-6), key


def test_an_unseen_probe_s_carried_gap_is_the_fresh_gap_from_the_same_seed() -> None:
    """Before any visit every probe example starts fresh: PGD-10 as the training follower then
    draws PGD-10's own random starts (the gap's seed) and scores carried ratio 1 exactly."""
    model = SmallCNN().eval()
    probe = image_batch(40)
    problem = AdversarialDRO(model, EPS)
    pgd10 = reference_followers(EPS)["pgd10"]
    gap = follower_gap(model, pgd10, problem, {"probe": probe}, EPS, seed=3)
    out = carried_gap(model, pgd10, problem, CarriedDecisions(40), probe, gap, seed=3)
    assert out["gap_probe_carried_loss"] == gap["gap_probe_pgd10_loss"]
    assert out["gap_probe_carried_ratio"] == 1.0
