"""``cli.py solve gail`` end to end on Pendulum-v1 for a tiny budget: the run folder, exact resume,
and bad inputs (one sentence, exit code 2, nothing written)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import metrics_without_time, raw_bytes_digest
from stable_baselines3 import PPO
from typer.testing import CliRunner

from bilevel.errors import UserError
from bilevel.run import atomic_torch_save, load_checkpoint
from cli import app
from problems.imitation.demonstrations import load_rollout, save_rollout
from problems.imitation.experts import Rollout
from problems.imitation.gail import demonstrations_digest

TINY = ["--env", "Pendulum-v1", "--steps", "600", "--n-envs", "1", "--n-steps", "200"]
TINY += ["--eval-episodes", "1", "--test-episodes", "2"]
runner = CliRunner()


def solve(out: Path, cache: Path, *extra: str):
    args = ["solve", "gail", *TINY, "--cache-dir", str(cache), "--out", str(out), *extra]
    return runner.invoke(app, args, catch_exceptions=False)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("demos")


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory, cache) -> Path:
    out = tmp_path_factory.mktemp("runs") / "unbroken"
    result = solve(out, cache, "--follower", "l2l")
    assert result.exit_code == 0, result.output
    return out


def test_run_folder_holds_config_metrics_checkpoints_report_and_plots(unbroken: Path) -> None:
    for name in ("config.json", "metrics.jsonl", "last.pt", "best.pt", "report.md", "gail.png"):
        assert (unbroken / name).is_file(), name
    config = json.loads((unbroken / "config.json").read_text())
    assert config["follower"] == "l2l" and config["env"] == "Pendulum-v1"
    assert config["lstm_steps"] == config["disc_steps"] == 3  # resolved defaults are recorded
    assert config["gamma"] == 0.9 and config["trust_radius"] == 0.0
    rows = metrics_without_time(unbroken)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert [r["env_steps"] for r in rows] == [200, 400, 600]
    assert all(0.0 <= r["val_disc_acc"] <= 1.0 for r in rows)
    for r in rows:  # the round's discriminator diagnostics
        assert 0 <= r["disc_acc_expert"] <= 1 and 0 <= r["disc_acc_policy"] <= 1
        assert r["reward_mean"] == pytest.approx(-r["leader_loss"]) and r["reward_std"] >= 0
        assert r["psi_step"] > 0 and "disc_logit_expert" in r and "disc_logit_policy" in r
    results = json.loads((unbroken / "results.json").read_text())
    assert results["expert_return"] > results["random_return"] + 500
    norm = (results["test_return"] - results["random_return"]) / (
        results["expert_return"] - results["random_return"]
    )
    assert results["test_normalised_return"] == pytest.approx(norm)
    for split in ("val", "test"):  # the expert on the scored episodes: near 1, not 1
        assert 0.8 < results[f"expert_{split}_normalised_return"] < 1.25
    assert (unbroken / "gail.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_after_an_interrupt_ends_with_the_unbrokenmetrics_without_time(
    unbroken, cache, tmp_path
) -> None:
    out = tmp_path / "broken"
    first = solve(out, cache, "--follower", "l2l", "--interrupt-after-epoch", "1")
    assert first.exit_code == 0 and "resume" in first.output
    assert len(metrics_without_time(out)) == 1 and not (out / "results.json").exists()
    # --out and --resume alone: every other option comes from the folder's config.json
    second = runner.invoke(app, ["solve", "gail", "--out", str(out), "--resume"])
    assert second.exit_code == 0, second.output
    assert metrics_without_time(out) == metrics_without_time(unbroken)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--follower", "sgd"], "Unknown --follower"),
        (["--env", "NoSuchEnv-v0"], "Unknown environment"),
        # gymnasium knows these ids as old versions: its advice is passed on, not "Unknown"
        (["--env", "Pendulum-v0"], "old version gymnasium no longer provides; use Pendulum-v1"),
        (["--env", "Taxi-v3"], "use Taxi-v4 instead"),
        (["--env", "CliffWalking-v0"], "use CliffWalking-v1 instead"),
        (["--reward", "wasserstein"], "Unknown --reward"),
        (["--follower", "l2l", "--lstm-steps", "0"], "--lstm-steps must be at least 1"),
        # 1e20 environments were built for ever; a round of 1e20 steps a numpy traceback
        (["--n-envs", "99999999999999999999"], "--n-envs must be at most 256"),
        (["--n-steps", "99999999999999999999"], "at most 1,000,000 steps"),
        (["--disc-hidden", "99999999999999999999"], "--disc-hidden must be at most 4,096"),
        (["--disc-batch-size", "99999999999999999999"], "--disc-batch-size at most 1,000,000"),
        (["--meta-objective", "accuracy"], "Unknown --meta-objective"),
        (["--disc-norm", "batch"], "Unknown --disc-norm"),
        (["--trust-radius", "-1"], "--trust-radius must be at least 0"),
        (["--disc-lr", "0"], "--disc-lr must be positive; got 0.0."),
        # the scale defaults to the step: it was named where the step was typed
        (["--follower", "oneshot", "--oneshot-step", "-1"], "--oneshot-step must be positive"),
        (["--follower", "l2l", "--disc-lr", "-1"], "--disc-lr must be positive"),
        (["--trust-radius", "nan"], "--trust-radius must be a finite number"),  # PPO's traceback
        (["--ent-coef", "inf"], "--ent-coef must be a finite number"),
        # too large for a float: an OverflowError once the environments were built
        (["--steps", str(10**400)], "--steps must be a finite number"),
        (["--seed", "-1"], "--seed must be between 0 and"),  # numpy's traceback otherwise
        (["--n-envs", "1", "--n-steps", "1"], "at least 2 each"),  # SB3 would assert
        (["--ppo-batch-size", "1"], "at least 2 each"),
        (["--env", "CartPole-v1", "--use-sde"], "--use-sde needs continuous actions"),
        (["--env", "FrozenLake-v1"], "vector of observations"),  # gymnasium's, not GAIL's
    ],
)
def test_bad_inputs_are_one_sentence_and_exit_2(extra, message, cache, tmp_path) -> None:
    out = tmp_path / "bad"
    result = solve(out, cache, *extra)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize("checkpoint", [False, True])
def test_a_resume_from_an_unreadable_config_json_is_refused_before_anything_is_built(
    tmp_path, monkeypatch, checkpoint
) -> None:
    """It was read as {}: the run was built from the defaults (the demonstrations read or rolled
    out) before the folder's check refused it."""
    from problems.imitation import solve as gail_solve

    def built(*_: object) -> None:
        raise AssertionError("the run was built")

    monkeypatch.setattr(gail_solve, "build", built)
    out = tmp_path / "damaged"
    out.mkdir()
    (out / "config.json").write_text('{"env": "Pendu')
    if checkpoint:
        (out / "last.pt").write_bytes(b"")
    result = runner.invoke(app, ["solve", "gail", "--out", str(out), "--resume"])
    assert result.exit_code == 2, result.output
    assert "readable config.json" in result.output or "is unreadable" in result.output
    assert "another --out" in result.output and "Traceback" not in result.output


def test_a_second_run_into_the_same_folder_is_refused(unbroken, cache) -> None:
    before = (unbroken / "metrics.jsonl").read_bytes()
    result = solve(unbroken, cache, "--follower", "l2l")
    assert result.exit_code == 2 and "already holds a run" in result.output
    assert (unbroken / "metrics.jsonl").read_bytes() == before


def test_the_results_env_steps_are_the_tested_epoch_s_not_the_run_s(cache, tmp_path, monkeypatch):
    """results.json is the table "Test split (best epoch ...)": its env_steps are those of the
    epoch whose policy is tested (metrics.jsonl's at best_epoch); the run's are total_env_steps.
    The validation return is made to fall each epoch, so the first is the best of three."""
    import problems.imitation.solve as gail_solve

    real, calls = gail_solve.evaluate, []

    def falling(problem, env_id, expert, episodes, seed, r_random, r_expert):
        scores = real(problem, env_id, expert, episodes, seed, r_random, r_expert)
        if seed == gail_solve.VAL_SEED:
            calls.append(seed)
            scores["return"] = -100.0 * len(calls)
        return scores

    monkeypatch.setattr(gail_solve, "evaluate", falling)
    out = tmp_path / "run"
    assert solve(out, cache).exit_code == 0
    results = json.loads((out / "results.json").read_text())
    steps = {row["epoch"]: row["env_steps"] for row in metrics_without_time(out)}
    assert results["best_epoch"] == 1 and steps == {1: 200, 2: 400, 3: 600}
    assert results["env_steps"] == 200 and results["total_env_steps"] == 600
    assert "| env_steps | 200 |" in (out / "report.md").read_text()


def test_an_expert_no_better_than_random_is_refused_before_the_run_folder(
    cache, tmp_path, monkeypatch
) -> None:
    """The normalised return (R − R_random) / (R_expert − R_random) divided by zero where a PPO
    expert trained too briefly scored what a random policy does (MountainCar-v0: −200 both);
    here the random policy's rollouts are made to score the demonstrations' mean exactly."""
    import numpy as np

    import problems.imitation.solve as gail_solve
    from problems.imitation.demonstrations import load_demonstrations
    from problems.imitation.experts import Rollout

    demos = load_demonstrations("Pendulum-v1", 20, cache_dir=cache)  # --demo-episodes' default
    mean = np.array([demos.episode_returns.mean()])
    same = Rollout(demos.observations[:1], demos.actions[:1], mean)
    monkeypatch.setattr(gail_solve, "rollout", lambda *args, **kwargs: same)
    out = tmp_path / "run"
    result = solve(out, cache)
    assert result.exit_code == 2, result.output
    assert "is no better than a random policy's" in result.output
    assert not out.exists()


@pytest.mark.parametrize(("expert", "random"), [(-200.0, -200.0), (-210.0, -200.0)])
def test_the_refusal_says_to_train_the_expert_longer(expert: float, random: float) -> None:
    from problems.imitation.solve import check_expert_beats_random

    with pytest.raises(
        UserError, match=r"no better .*`python cli.py expert train --env MountainCar-v0` with more"
    ):
        check_expert_beats_random("MountainCar-v0", expert, random)
    check_expert_beats_random("MountainCar-v0", -150.0, -200.0)


def test_a_finished_run_whose_last_pt_is_gone_is_refused_and_kept(unbroken, cache, tmp_path):
    """GAIL's run folder is the same RunDir: a rerun used to start over in it, exit code 0."""
    out = tmp_path / "finished"
    shutil.copytree(unbroken, out)
    (out / "last.pt").unlink()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result = solve(out, cache, "--follower", "l2l")
    assert result.exit_code == 2 and "but no last.pt" in result.output, result.output
    assert "gail.png" in result.output and "Traceback" not in result.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_resume_on_other_demonstrations_is_refused_and_touches_nothing(cache, tmp_path) -> None:
    """The expert retrained (or its cache replaced) between a stop and ``--resume``: the run would
    go on imitating other demonstrations than it started with, and nothing in it could tell."""
    demos_dir = tmp_path / "demos"
    shutil.copytree(cache, demos_dir)
    out = tmp_path / "run"
    first = solve(out, demos_dir, "--interrupt-after-epoch", "1")
    assert first.exit_code == 0, first.output
    (path,) = demos_dir.glob("Pendulum-v1-*.npz")
    demos = load_rollout(path)
    demos.observations[:, 0] += 0.01  # what another expert's rollouts would change
    save_rollout(path, demos)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.name != ".lock"}
    second = runner.invoke(app, ["solve", "gail", "--out", str(out), "--resume"])
    assert second.exit_code == 2 and "demonstrations are not the ones" in second.output
    assert "Traceback" not in second.output, second.output
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.name != ".lock"}
    assert after == before


@pytest.mark.parametrize("same", [True, False])
def test_a_resume_may_name_another_cache_dir_of_the_same_demonstrations(
    unbroken, cache, tmp_path, same
) -> None:
    """--cache-dir says where demonstrations are read: typed on a resume it was refused as
    another configuration; other demonstrations there are still refused by their digest."""
    first_dir, other_dir = tmp_path / "demos", tmp_path / "elsewhere" / "demos"
    shutil.copytree(cache, first_dir)
    shutil.copytree(cache, other_dir)
    out = tmp_path / "run"
    assert solve(out, first_dir, "--follower", "l2l", "--interrupt-after-epoch", "1").exit_code == 0
    if not same:
        (path,) = other_dir.glob("Pendulum-v1-*.npz")
        demos = load_rollout(path)
        demos.observations[:, 0] += 0.01
        save_rollout(path, demos)
    args = ["solve", "gail", "--out", str(out), "--resume", "--cache-dir", str(other_dir)]
    second = runner.invoke(app, args)
    if same:
        assert second.exit_code == 0, second.output
        assert metrics_without_time(out) == metrics_without_time(unbroken)
    else:
        assert second.exit_code == 2 and "demonstrations are not the ones" in second.output


@pytest.mark.parametrize("written_by", ["before the digest", "the raw-bytes digest"])
def test_a_checkpoint_of_an_older_digest_resumes_as_before(
    unbroken, cache, tmp_path, written_by
) -> None:
    """Runs of the same demonstrations whose checkpoints hold no digest, or the digest of their
    raw bytes, resume: the second was refused as other demonstrations once the digest changed."""
    out = tmp_path / "older"
    first = solve(out, cache, "--follower", "l2l", "--interrupt-after-epoch", "1")
    assert first.exit_code == 0, first.output
    checkpoint = load_checkpoint(out / "last.pt")
    problem = checkpoint["trainer"]["problem"]
    if written_by == "before the digest":
        del problem["demos_digest"]
    else:
        (path,) = cache.glob("Pendulum-v1-*.npz")
        problem["demos_digest"] = raw_bytes_digest(load_rollout(path))
        assert problem["demos_digest"] != demonstrations_digest(load_rollout(path))
    atomic_torch_save(checkpoint, out / "last.pt")
    second = runner.invoke(app, ["solve", "gail", "--out", str(out), "--resume"])
    assert second.exit_code == 0, second.output
    assert metrics_without_time(out) == metrics_without_time(unbroken)


def test_the_digest_reads_the_values_not_their_integer_type() -> None:
    """Scripted experts return the platform's int: the same demonstrations as int32 and int64
    are the same; other values or another shape are not."""
    obs = np.arange(12, dtype=np.float32).reshape(6, 2)
    actions = np.array([0, 1, 2, 1, 0, 2])
    same = demonstrations_digest(Rollout(obs, actions, np.zeros(2)))
    assert demonstrations_digest(Rollout(obs, actions.astype(np.int32), np.zeros(2))) == same
    assert demonstrations_digest(Rollout(obs, actions[::-1].copy(), np.zeros(2))) != same
    assert demonstrations_digest(Rollout(obs.reshape(4, 3), actions, np.zeros(2))) != same


def test_a_policy_gone_nan_in_ppo_is_the_nan_sentence(cache, tmp_path) -> None:
    """Was: SB3's ``ValueError: Expected parameter loc ...`` traceback from inside ``learn``."""
    out = tmp_path / "nan"
    result = solve(out, cache, "--ppo-lr", "100")
    assert result.exit_code == 2, result.output
    assert "The training loss became NaN or infinite in epoch 1" in result.output
    assert "Traceback" not in result.output
    assert sorted(p.name for p in out.iterdir()) == [".lock", "config.json"]


def test_a_policy_gone_nan_in_the_last_ppo_update_is_the_nan_sentence(
    cache, tmp_path, monkeypatch
) -> None:
    """The update that makes it NaN is the round's last: ``learn`` returns, and it was the
    validation's rollout that failed, with the same traceback."""
    learn = PPO.learn

    def learn_then_diverge(model: PPO, *args, **kwargs):
        done = learn(model, *args, **kwargs)
        with torch.no_grad():
            for p in model.policy.parameters():
                p.fill_(float("nan"))
        return done

    monkeypatch.setattr(PPO, "learn", learn_then_diverge)
    result = solve(tmp_path / "nan", cache)
    assert result.exit_code == 2, result.output
    assert "The training loss became NaN or infinite in epoch 1" in result.output


def test_demonstration_random_validation_and_test_episodes_start_from_disjoint_seeds(
    tmp_path, monkeypatch
) -> None:
    """Episode i of a rollout starts from reset(seed + i): the demonstrations, R_random's
    episodes, the validation episodes (model selection) and the test episodes must start from
    disjoint seed ranges for the episode counts a run uses, or the test scores a policy on the
    start states it was selected (or imitated) on."""
    import problems.imitation.demonstrations as demonstrations
    import problems.imitation.solve as gail_solve
    from problems.imitation.config import GAILConfig

    starts: dict[str, tuple[int, int]] = {}

    def recorder(name: str):
        def fake(env_id, policy, episodes, seed):
            starts[name] = (seed, episodes)
            return Rollout(np.zeros((episodes, 4), np.float32), np.zeros(episodes, np.int64),
                           np.zeros(episodes))  # fmt: skip

        return fake

    monkeypatch.setattr(demonstrations, "expert_policy", lambda *a, **k: None)
    monkeypatch.setattr(demonstrations, "rollout", recorder("demonstrations"))
    monkeypatch.setattr(gail_solve, "rollout", recorder("random"))
    cfg = GAILConfig()
    demonstrations.load_demonstrations("CartPole-v1", cfg.demo_episodes, cache_dir=tmp_path)
    gail_solve.random_return("CartPole-v1", seed=0)
    starts["val"] = (gail_solve.VAL_SEED, cfg.eval_episodes)
    starts["test"] = (gail_solve.TEST_SEED, cfg.test_episodes)
    ranges = {name: set(range(seed, seed + n)) for name, (seed, n) in starts.items()}
    assert len(ranges) == 4
    for a in ranges:
        for b in ranges:
            assert a == b or not ranges[a] & ranges[b], (a, b, starts[a], starts[b])


@pytest.mark.parametrize(
    ("round_seeds", "most_rounds", "reached"),
    [("disjoint", 2499, 10003), ("overlapping", 9996, 10000)],
)
def test_a_run_whose_rounds_would_start_at_held_out_seeds_is_refused(
    round_seeds: str, most_rounds: int, reached: int, tmp_path: Path
) -> None:
    """Round r's env i starts from seed·100003 + r·stride + i (stride n_envs; 1 for the older
    "overlapping" runs): with 4 environments the last of R rounds starts at 4R + 3, so 2,499
    rounds stay below the demonstrations' seed 10,000 and 2,500 reach 10,003 (R + 3 with stride
    1). A longer run replayed the demonstrations', then the validation's and the test's starts
    (from 20,000 and 40,000)."""
    from problems.imitation.config import GAILConfig

    base = dict(env="CartPole-v1", n_steps=16, n_envs=4, round_seeds=round_seeds)  # 64 a round
    assert GAILConfig(**base, steps=most_rounds * 64).resolve().epochs == most_rounds
    with pytest.raises(UserError, match=f"seeds up to {reached},"):
        GAILConfig(**base, steps=(most_rounds + 1) * 64).resolve()
    GAILConfig(**base, steps=(most_rounds + 1) * 64, seed=1).resolve()  # from 100,007: apart
    out = tmp_path / "run"
    args = ["solve", "gail", "--env", "CartPole-v1", "--n-steps", "16", "--out", str(out)]
    result = runner.invoke(app, [*args, "--steps", str(2500 * 64)])
    assert result.exit_code == 2 and "seeds up to 10003" in result.output, result.output
    assert not out.exists()


def test_validation_selects_on_val_seeds_and_the_test_is_scored_on_test_seeds(
    cache, tmp_path, monkeypatch
) -> None:
    """Model selection (validate, and the expert's validation reference) rolls out from VAL_SEED,
    the test (and the expert's test reference) from TEST_SEED; final_val_normalised_return is
    the last epoch's, not the selected one's. The validation return falls each epoch, so the
    selected epoch (1) is not the last (3)."""
    import problems.imitation.solve as gail_solve

    seeds: dict[str, list[int]] = {"evaluate": [], "expert_reference": []}

    def evaluate(problem, env_id, expert, episodes, seed, r_random, r_expert):
        seeds["evaluate"].append(seed)
        n = len(seeds["evaluate"])
        return {"return": -100.0 * n, "normalised_return": -float(n), "action_error": 0.5}

    def expert_reference(env_id, expert, episodes, seed, r_random, r_expert):
        seeds["expert_reference"].append(seed)
        return 1.0

    monkeypatch.setattr(gail_solve, "evaluate", evaluate)
    monkeypatch.setattr(gail_solve, "expert_reference", expert_reference)
    out = tmp_path / "run"
    assert solve(out, cache).exit_code == 0
    val, test = gail_solve.VAL_SEED, gail_solve.TEST_SEED
    assert seeds == {"evaluate": [val, val, val, test], "expert_reference": [val, test]}
    results = json.loads((out / "results.json").read_text())
    rows = metrics_without_time(out)
    assert results["best_epoch"] == 1 and [row["epoch"] for row in rows] == [1, 2, 3]
    assert [row["val_normalised_return"] for row in rows] == [-1.0, -2.0, -3.0]
    assert results["final_val_normalised_return"] == -3.0  # the last epoch's, not epoch 1's
    assert results["test_normalised_return"] == -4.0
