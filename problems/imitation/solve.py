"""``solve gail``: build GAIL (SB3 PPO leader, discriminator ψ follower) from a ``GAILConfig``,
train with the shared joint loop and experiment runner (``bilevel.JointTrainer`` and
``bilevel.run_experiment``: run folder, metrics, checkpoints, exact resume, progress bar, report), select the best epoch on validation episodes, and report
the return of that policy on held-out test episodes.

Evaluation (every epoch, deterministic policy, ground-truth reward): the return, the normalised
return (R − R_random) / (R_expert − R_random) (R_expert: the demonstrations' mean return; the
expert's own score on the scored episodes is in ``results.json``), and imitation fidelity on the
learner's own visited states: the fraction of its actions that match the expert's (discrete) or
the mean absolute action error (continuous). Return alone can mislead: on CartPole, survival is
rewarded whatever the expert does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

from bilevel.errors import UserError
from bilevel.experiment import Experiment, run_experiment
from bilevel.loop import JointTrainer
from bilevel.optimizer_followers import AdamFollower, LearnedOptimizerFollower
from bilevel.recorded import resolve_resumed
from bilevel.run import RunDir
from bilevel.seeding import seed_everything, seeded
from learned_optimizers.residual import OneShotStepNet, ResidualLSTMOptimizer
from problems.imitation.config import (
    LEGACY_VALUES,
    RANDOM_SEED,
    ROUND_SEED_BLOCK,
    TEST_SEED,
    VAL_SEED,
    GAILConfig,
)
from problems.imitation.demonstrations import load_demonstrations
from problems.imitation.discriminator import Discriminator, discriminator_accuracy
from problems.imitation.experts import SCRIPTED, Policy, random_policy, rollout, single_thread
from problems.imitation.gail import GAIL, GAILBatch
from problems.imitation.meta_objective import MetaObjective
from problems.imitation.plots import plot_gail_curves
from problems.imitation.ppo_expert import expert_policy, folderless_logger
from problems.imitation.reward import DiscriminatorReward


def build(cfg: GAILConfig) -> tuple[GAIL, Any, Any]:
    """The problem (with its PPO model and wrapped env), the follower, and the demonstrations."""
    seed_everything(cfg.seed)
    demos = load_demonstrations(cfg.env, cfg.demo_episodes, cache_dir=cfg.cache_dir)
    probe = gym.make(cfg.env)
    disc = Discriminator(
        probe.observation_space,
        probe.action_space,
        demos.observations,
        (cfg.disc_hidden, cfg.disc_hidden),
        cfg.disc_norm,
        cfg.disc_clip,
    )
    continuous = isinstance(probe.action_space, gym.spaces.Box)
    problem_ref: list[GAIL] = []
    venv = DiscriminatorReward(
        make_vec_env(cfg.env, n_envs=cfg.n_envs, seed=cfg.seed),
        lambda obs, act: problem_ref[0].reward(obs, act),
    )
    model = PPO(
        "MlpPolicy", venv, learning_rate=cfg.ppo_lr, n_steps=cfg.n_steps,
        batch_size=cfg.ppo_batch_size, n_epochs=cfg.ppo_epochs, gamma=cfg.gamma,
        gae_lambda=cfg.gae_lambda, ent_coef=cfg.ent_coef, use_sde=cfg.use_sde and continuous,
        seed=cfg.seed, device="cpu", verbose=0,
    )  # fmt: skip
    model.set_logger(folderless_logger())
    meta = MetaObjective(cfg.meta_objective, cfg.meta_penalty, cfg.target_accuracy)
    problem = GAIL(
        model, disc, demos, cfg.disc_batch_size, cfg.reward, cfg.grad_penalty, cfg.seed,
        cfg.trust_radius, meta, cfg.round_seed_stride,
    )  # fmt: skip
    problem_ref.append(problem)
    return problem, build_follower(cfg, disc.num_params), demos


def build_follower(cfg: GAILConfig, num_params: int) -> AdamFollower | LearnedOptimizerFollower:
    """GAIL's Adam, L2L-GAIL's residual LSTM (Adam at φ₀), or the one-shot trust-region step."""
    if cfg.follower == "adam":
        return AdamFollower(num_params, cfg.disc_steps, cfg.disc_lr)
    if cfg.follower == "l2l":
        net = ResidualLSTMOptimizer(
            cfg.disc_lr, hidden_size=cfg.lstm_hidden, residual_scale=cfg.residual_scale
        )
        return LearnedOptimizerFollower(num_params, net, cfg.lstm_steps, cfg.meta_lr)
    net = OneShotStepNet(cfg.oneshot_step, residual_scale=cfg.residual_scale)
    return LearnedOptimizerFollower(num_params, net, 1, cfg.meta_lr)


def check_expert_beats_random(env_id: str, r_expert: float, r_random: float) -> None:
    """One sentence unless the expert's mean return is above the random policy's: else the
    normalised return (R − R_random) / (R_expert − R_random) divides by zero or turns upside
    down, and there is nothing to imitate."""
    if r_expert > r_random:
        return
    fix = (
        "its scripted expert should not do this; please report it"
        if env_id in SCRIPTED
        else f"train the expert longer: `python cli.py expert train --env {env_id}` with more "
        "--steps"
    )
    raise UserError(
        f"The expert's mean return on {env_id} ({r_expert:g}) is no better than a random "
        f"policy's ({r_random:g}), so the normalised return is undefined; {fix}."
    )


def evaluate(
    problem: GAIL,
    env_id: str,
    expert: Policy,
    episodes: int,
    seed: int,
    r_random: float,
    r_expert: float,
) -> dict[str, float]:
    """Return, normalised return and fidelity of the deterministic policy (ground-truth reward)."""
    model = problem.model

    def act(obs: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(obs, deterministic=True)[0])

    with seeded(None):
        r = rollout(env_id, act, episodes, seed)
    expert_actions = np.stack([expert(o) for o in r.observations]).reshape(len(r.actions), -1)
    actions = r.actions.reshape(len(r.actions), -1)
    ret = float(r.episode_returns.mean())
    out = {"return": ret, "normalised_return": normalised_return(ret, r_random, r_expert)}
    if problem.disc.discrete:
        out["action_agreement"] = float((expert_actions == actions).mean())
    else:
        out["action_error"] = float(np.abs(expert_actions - actions).mean())
    return out


def normalised_return(ret: float, r_random: float, r_expert: float) -> float:
    """(R − R_random) / (R_expert − R_random): 0 is a random policy, 1 the demonstrations."""
    return (ret - r_random) / (r_expert - r_random)


def random_return(env_id: str, seed: int) -> float:
    """R_random, the normalised return's 0: a random policy's mean over 10 episodes, its actions
    drawn from the run's ``seed``."""
    return float(
        rollout(env_id, random_policy(env_id, seed), 10, RANDOM_SEED).episode_returns.mean()
    )


def expert_reference(
    env_id: str, expert: Policy, episodes: int, seed: int, r_random: float, r_expert: float
) -> float:
    """The expert's own normalised return on the episodes a learner is scored on. The scale's 1
    is the expert's mean over its demonstration episodes, other start states than these, so the
    expert itself reads near 1, not 1, here: the ceiling to read a learner's score against."""
    ret = float(rollout(env_id, expert, episodes, seed).episode_returns.mean())
    return normalised_return(ret, r_random, r_expert)


def solve_gail(
    cfg: GAILConfig,
    out: str | Path,
    resume: bool = False,
    interrupt_after_epoch: int | None = None,
    show_progress: bool = True,
) -> dict[str, Any] | None:
    """Train one GAIL run into ``out``; return the test results (None if interrupted on purpose).

    Runs on one torch thread (restored afterwards): the policy and discriminator are small MLPs,
    and more threads only add contention on a shared machine.
    """
    with single_thread():
        return _solve(cfg, out, resume, interrupt_after_epoch, show_progress)


def _solve(
    cfg: GAILConfig,
    out: str | Path,
    resume: bool,
    interrupt_after_epoch: int | None,
    show_progress: bool,
) -> dict[str, Any] | None:
    run = RunDir(out)
    recorded = run.read_recorded() if resume else None  # an unreadable one: refused here
    resolve_resumed(cfg, recorded, run.config_path)
    problem, follower, demos = build(cfg)  # before the folder: a missing expert writes nothing
    expert = expert_policy(cfg.env, cfg.cache_dir)
    r_expert = float(demos.episode_returns.mean())
    r_random = random_return(cfg.env, cfg.seed)
    check_expert_beats_random(cfg.env, r_expert, r_random)  # before the run folder is made
    trainer = JointTrainer(
        problem, follower, problem.model.policy.optimizer, follower_steps=cfg.meta_steps
    )
    if not (resume and RunDir(out).last_checkpoint.is_file()):  # a fresh start, also --resume
        problem.collect_initial(cfg.env, episodes=max(1, cfg.n_envs))

    def train_batches(epoch: int) -> Iterator[GAILBatch]:
        for _ in range(cfg.rounds_per_epoch):
            generator = torch.Generator().manual_seed(
                cfg.seed * ROUND_SEED_BLOCK + problem.round + 1
            )
            yield problem.sample_batch(generator)

    def validate() -> dict[str, float]:
        val = evaluate(problem, cfg.env, expert, cfg.eval_episodes, VAL_SEED, r_random, r_expert)
        batch = problem.fresh_batch(None)
        acc = discriminator_accuracy(problem.disc, problem.psi, batch.expert, batch.policy)
        row = {f"val_{k}": v for k, v in val.items()}
        return {**row, "val_disc_acc": acc, "env_steps": int(problem.model.num_timesteps)}

    def test(leader: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
        problem.leader.load_state_dict(leader)
        best = RunDir(out).best_epoch()  # the epoch of best.pt, whose leader this is
        selected = next(row for row in history if row["epoch"] == best)
        scores = evaluate(
            problem, cfg.env, expert, cfg.test_episodes, TEST_SEED, r_random, r_expert
        )
        return {
            **{f"test_{k}": v for k, v in scores.items()},
            "final_val_normalised_return": history[-1]["val_normalised_return"],
            "expert_return": r_expert,
            "random_return": r_random,
            **{
                f"expert_{split}_normalised_return": expert_reference(
                    cfg.env, expert, episodes, seed, r_random, r_expert
                )
                for split, episodes, seed in (
                    ("val", cfg.eval_episodes, VAL_SEED),
                    ("test", cfg.test_episodes, TEST_SEED),
                )
            },
            # the tested policy's environment steps (metrics.jsonl's at the best epoch), and
            # those of the whole run, which may have gone on past it
            "env_steps": selected["env_steps"],
            "total_env_steps": history[-1]["env_steps"],
        }

    experiment = Experiment(
        trainer, train_batches, cfg.rounds_per_epoch, cfg.epochs, validate, "val_return", test
    )
    results = run_experiment(
        experiment, out, cfg.to_dict(), resume, LEGACY_VALUES,
        interrupt_after_epoch=interrupt_after_epoch, show_progress=show_progress,
    )  # fmt: skip
    if results is not None:
        plot_gail_curves(RunDir(out), RunDir(out).read_metrics())
    return results
