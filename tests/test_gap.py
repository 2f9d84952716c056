"""The follower gap (``problems.adversarial.gap``): z = 0 shows the whole gap to PGD-10, PGD-10 as
the follower closes it exactly, and a run writes the gap into metrics.jsonl and its report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import image_batch
from typer.testing import CliRunner

from bilevel import NoFollower
from bilevel.distributed import Context
from bilevel.run import load_checkpoint
from cli import app
from problems.adversarial import solve
from problems.adversarial.data import dataset_info, load_dataset, subset
from problems.adversarial.dro import AdversarialDRO
from problems.adversarial.dro_config import DROConfig
from problems.adversarial.evaluation.attacks import Clean, FollowerAttack, pgd_attack
from problems.adversarial.followers import build_follower
from problems.adversarial.gap import follower_gap, reference_followers
from problems.adversarial.models import SmallCNN

EPS = 0.3
INFO = dataset_info("mnist5k")


def _gap(follower) -> dict[str, float]:
    model = SmallCNN().eval()
    splits = {"probe": image_batch(40), "val": image_batch(30)}
    return follower_gap(model, follower, AdversarialDRO(model, EPS), splits, EPS, seed=3)


def test_a_follower_that_returns_zero_shows_the_full_gap() -> None:
    gap = _gap(NoFollower())
    for split in ("probe", "val"):
        assert gap[f"gap_{split}_follower_loss"] == pytest.approx(gap[f"gap_{split}_clean_loss"])
        assert gap[f"gap_{split}_follower_ratio"] == pytest.approx(0.0, abs=1e-6)
        assert gap[f"gap_{split}_pgd10_loss"] > gap[f"gap_{split}_clean_loss"] + 0.01
        assert 0.0 < gap[f"gap_{split}_fgsm_rs_ratio"] < 1.5


def test_pgd10_as_the_follower_shows_ratio_one() -> None:
    gap = _gap(reference_followers(EPS)["pgd10"])
    for split in ("probe", "val"):
        assert gap[f"gap_{split}_follower_ratio"] == 1.0
        assert gap[f"gap_{split}_follower_acc"] == gap[f"gap_{split}_pgd10_acc"]


def _scored(model, attack, x, y, seed: int) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``attack``'s x_adv, from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        x_adv = attack(model, x, y)  # raises if x_adv left the attack's ε-ball or [0, 1]
    with torch.no_grad():
        logits = model(x_adv)
    return F.cross_entropy(logits, y).item(), int((logits.argmax(1) == y).sum()) / len(y)


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.3), ("l2", 1.5)])
def test_the_references_are_the_evaluations_pgd10_and_the_trainings_fgsm_rs(norm, eps) -> None:
    """The gap's PGD-10 is evaluation's PGD-10 (step 2.5ε/10, random start) and its FGSM-RS is
    ``--follower fgsm`` (step 1.25ε, random start), both in the problem's norm ball, same seed."""
    model = SmallCNN().eval()
    x, y = image_batch(24)
    problem = AdversarialDRO(model, eps, norm)
    gap = follower_gap(model, NoFollower(), problem, {"val": (x, y)}, eps, seed=5)
    fgsm_rs = build_follower(DROConfig(follower="fgsm", eps=eps, norm=norm).resolve(), INFO)
    standalone = {
        "pgd10": pgd_attack(10, eps, 2.5 * eps / 10, norm=norm, from_clean=False),
        "fgsm_rs": FollowerAttack("fgsm-rs", fgsm_rs, eps, norm=norm, from_clean=False),
    }
    for name, attack in standalone.items():
        loss, acc = _scored(model, attack, x, y, seed=5)
        assert gap[f"gap_val_{name}_loss"] == pytest.approx(loss, rel=1e-5), name
        assert gap[f"gap_val_{name}_acc"] == pytest.approx(acc), name


def test_during_the_eps_warmup_the_gap_and_the_selection_are_measured_at_the_full_eps() -> None:
    """Epoch 1 of 2 with --eps-warmup 1 and 2 batches: its first batch trains at ε/2 (the training
    problem's and g_φ's bound), yet validation's row (the follower gap, the selection's PGD-10)
    is the row at the full ε: that of evaluation's PGD-10 at ε, and the same after the warm-up."""
    cfg = DROConfig(follower="grad", train_size=32, eval_size=16, gap_size=16, batch_size=16,
                    epochs=2, eps_warmup=1, device="cpu").resolve()  # fmt: skip
    run = solve._experiment(cfg, torch.device("cpu"), Context())
    problem, follower = run.trainer.problem, run.trainer.follower
    next(iter(run.train_batches(1)))  # the warm-up's first batch
    assert problem.eps == follower.net.eps == pytest.approx(cfg.eps / 2)
    during = run.validate()
    next(iter(run.train_batches(2)))  # past the warm-up, θ and φ unchanged: the full ε
    assert problem.eps == follower.net.eps == cfg.eps
    assert run.validate() == during
    x, y = subset(load_dataset("mnist5k").val, 16)
    pgd10 = pgd_attack(10, cfg.eps, 2.5 * cfg.eps / 10, from_clean=False)
    loss, acc = _scored(run.trainer.selected_leader(), pgd10, x, y, cfg.seed)
    assert during["gap_val_pgd10_loss"] == pytest.approx(loss, rel=1e-5)
    assert during["val_pgd10_acc"] == during["gap_val_pgd10_acc"] == pytest.approx(acc)


def test_the_gap_is_measured_in_eval_mode_and_leaves_no_gradient() -> None:
    model = SmallCNN().train()
    follower_gap(model, NoFollower(), AdversarialDRO(model, EPS), {"v": image_batch(8)}, EPS, 0)
    assert not model.training
    assert all(p.grad is None for p in model.parameters())


def test_a_run_writes_the_gap_every_epoch_with_the_phi_update_count(tmp_path: Path) -> None:
    torch.set_num_threads(2)
    out = tmp_path / "run"
    args = ["solve", "adversarial-dro", "--train-size", "96", "--eval-size", "32", "--gap-size",
            "32", "--batch-size", "32", "--epochs", "2", "--eps", "0.1", "--follower", "grad",
            "--update", "fused", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["phi_updates"] for r in rows] == [3, 6]  # 96 / 32 batches, one φ step each
    for row in rows:
        for split in ("probe", "val"):
            for name in ("clean", "follower", "pgd10", "fgsm_rs"):
                assert 0.0 <= row[f"gap_{split}_{name}_acc"] <= 1.0
                assert row[f"gap_{split}_{name}_loss"] >= 0.0
            assert row[f"gap_{split}_pgd10_loss"] >= row[f"gap_{split}_clean_loss"]
    report = (out / "report.md").read_text()
    assert "Follower gap at epoch 2 after 6 φ updates" in report
    assert json.loads((out / "config.json").read_text())["gap_size"] == 32


# A scripted validation per epoch: the best epoch is 2 by the validation split's PGD-10 accuracy,
# 3 by its clean accuracy, 1 by the training probe's or the test split's accuracies
VAL_PGD10, VAL_CLEAN, ELSEWHERE = [0.2, 0.9, 0.5], [0.1, 0.3, 0.8], [0.9, 0.1, 0.3]


@pytest.mark.parametrize("gap_size", [16, 0])
@pytest.mark.parametrize(("follower", "best"), [("fgsm", 2), ("none", 3)])
def test_the_best_epoch_is_the_validation_splits_pgd10_accuracy_and_its_theta_is_tested(
    tmp_path: Path, monkeypatch, follower: str, best: int, gap_size: int
) -> None:
    """Selection is by the validation split's PGD-10 accuracy (clean accuracy for --follower
    none), from the follower gap's row or, with --gap-size 0, measured apart; the test split is
    measured once, with best.pt's θ."""
    splits = load_dataset("mnist5k")
    val_x, test_x = subset(splits.val, 16)[0], subset(splits.test, 16)[0]
    calls: dict[tuple[str, str], int] = {}
    tested: list[dict[str, torch.Tensor]] = []

    def scripted_accuracy(model, x, y, attack, batch_size=500) -> float:
        split = "val" if torch.equal(x, val_x) else "test" if torch.equal(x, test_x) else "?"
        key = (split, attack.name)
        k = calls[key] = calls.get(key, -1) + 1
        if split == "test":
            tested.append({n: t.clone() for n, t in model.state_dict().items()})
        if split == "val":
            return (VAL_CLEAN if isinstance(attack, Clean) else VAL_PGD10)[k]
        return ELSEWHERE[k]

    def scripted_gap(*args, **kwargs) -> dict[str, float]:
        row = follower_gap(*args, **kwargs)
        k = calls[("gap", "")] = calls.get(("gap", ""), -1) + 1
        row |= {"gap_val_pgd10_acc": VAL_PGD10[k], "gap_val_clean_acc": VAL_CLEAN[k]}
        return row | {"gap_probe_pgd10_acc": ELSEWHERE[k], "gap_probe_clean_acc": ELSEWHERE[k]}

    monkeypatch.setattr(solve, "robust_accuracy", scripted_accuracy)
    monkeypatch.setattr(solve, "follower_gap", scripted_gap)
    cfg = DROConfig(follower=follower, train_size=32, eval_size=16, gap_size=gap_size,
                    batch_size=16, epochs=3, device="cpu")  # fmt: skip
    out = tmp_path / "run"
    results = solve.solve(cfg, out, show_progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["val_pgd10_acc"] for r in rows] == VAL_PGD10
    assert [r["val_clean_acc"] for r in rows] == VAL_CLEAN
    assert results["best_epoch"] == load_checkpoint(out / "best.pt")["epoch"] == best
    if not gap_size:  # measured apart: clean and PGD-10 on the validation split, every epoch
        validated = {key: n + 1 for key, n in calls.items() if key[0] == "val"}
        assert validated == {("val", "clean"): 3, ("val", "pgd10"): 3}
    measured = {key: n + 1 for key, n in calls.items() if key[0] == "test"}
    assert measured == {("test", "clean"): 1, ("test", "pgd20"): 1}  # once, after training
    selected = load_checkpoint(out / "best.pt")["leader"]
    last = load_checkpoint(out / "last.pt")["trainer"]["leader"]
    for state in tested:  # the test split saw best.pt's θ, not the last epoch's
        assert all(torch.equal(state[n], selected[n]) for n in selected)
    if best < 3:
        assert any(not torch.equal(last[n], selected[n]) for n in selected)


def test_the_gap_measures_g_phi_in_eval_mode_and_leaves_its_statistics_alone() -> None:
    """Measured in train mode, g_φ's batch norms would use the probe's own statistics and fold
    them into their running averages, changing the attacker the next training step uses."""
    from bilevel import LearnedFollower
    from learned_optimizers import build_attacker

    torch.manual_seed(0)
    follower = LearnedFollower(build_attacker("cnn", 2, 1, EPS, 0.0625), steps=1)
    follower.train()
    before = {k: v.clone() for k, v in follower.state_dict().items() if "running" in k}
    assert before  # the attacker has batch norms to disturb
    _gap(follower)
    assert not follower.training
    after = follower.state_dict()
    for key, value in before.items():
        assert torch.equal(after[key], value), key


def test_the_ratio_keeps_its_sign_when_pgd_lowers_the_loss() -> None:
    """(L_f − L_clean) / (L_PGD − L_clean) with L_PGD below L_clean (a model PGD cannot hurt):
    the follower's drop over PGD's drop, 0.5 here, not a NaN."""
    from problems.adversarial.gap import _ratio

    ratio = _ratio(0.75, {"k_clean_loss": 1.0, "k_pgd10_loss": 0.5}, "k_")
    assert ratio == pytest.approx(0.5)


def test_the_follower_at_z0_scores_the_clean_loss_and_accuracy() -> None:
    """NoFollower's x + 0 is the clean input: its loss and accuracy are the clean ones, in
    batches of 16 as in one batch of 40 (accuracy counts examples, not batches)."""
    model = SmallCNN().eval()
    x, y = image_batch(40)
    problem = AdversarialDRO(model, EPS)
    for batch_size in (500, 16):
        gap = follower_gap(
            model, NoFollower(), problem, {"p": (x, y)}, EPS, 3, batch_size=batch_size
        )
        with torch.no_grad():
            logits = model(x)
        acc = (logits.argmax(1) == y).float().mean().item()
        assert gap["gap_p_clean_acc"] == pytest.approx(acc)
        assert gap["gap_p_follower_acc"] == pytest.approx(acc)
        assert gap["gap_p_clean_loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)


def test_the_references_attack_at_the_full_eps_the_plain_batches_whatever_the_followers() -> None:
    """The follower's problem may be a warm-up's (ε/2) and its batches AIT's pairs
    (``make_batch``): PGD-10 and FGSM-RS still attack the model at ε on plain (x, y) batches."""
    model = SmallCNN().eval()
    splits = {"val": image_batch(24)}
    full = follower_gap(model, NoFollower(), AdversarialDRO(model, EPS), splits, EPS, seed=5)

    class TaggedFollower(NoFollower):
        def solve(self, problem, batch):
            x, y, tag = batch
            assert tag == "paired"
            return torch.zeros_like(x)

    half = AdversarialDRO(model, EPS / 2)
    gap = follower_gap(
        model, TaggedFollower(), half, splits, EPS, seed=5, make_batch=lambda x, y: (x, y, "paired")
    )
    for name in ("pgd10", "fgsm_rs"):
        assert gap[f"gap_val_{name}_loss"] == full[f"gap_val_{name}_loss"], name
        assert gap[f"gap_val_{name}_acc"] == full[f"gap_val_{name}_acc"], name
