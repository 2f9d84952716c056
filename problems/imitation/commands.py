"""The imitation commands of ``cli.py``: ``solve gail``, ``gail-stability`` and ``expert train``.
Each parses its options, calls one function of this package (imported when the command runs), and
prints; ``cli.py`` names them.
"""

from __future__ import annotations

from pathlib import Path

import typer

from bilevel.command_options import with_options
from bilevel.commands import (
    Shared,
    console,
    path_option,
    print_solved,
    print_table,
    split_names,
    user_errors,
)
from bilevel.paths import check_paths
from problems.imitation.config import GAILConfig


@user_errors
@with_options(GAILConfig)
def solve_gail_command(
    cfg: GAILConfig,
    out: Path = path_option(Path("runs/gail"), help="The run folder."),
    resume: bool = Shared.resume,
    interrupt_after_epoch: int = Shared.interrupt_after_epoch,
) -> None:
    """GAIL as a bilevel problem: PPO policy (leader) against the discriminator ψ (follower)."""
    check_paths(folders={"--out": out}, inputs={"--cache-dir": cfg.cache_dir})
    from problems.imitation.solve import solve_gail

    results = solve_gail(cfg, out, resume, interrupt_after_epoch)
    title = f"gail, {cfg.follower} follower, {cfg.env} (test episodes, best epoch)"
    print_solved(results, title, out, interrupt_after_epoch, "gail.png")


@user_errors
def gail_stability(
    env: str = typer.Option("Pendulum-v1", help="A gymnasium id with an expert."),
    seeds: int = typer.Option(8, help="Seeds 0..N-1 per follower (at least 2)."),
    followers: str = typer.Option(
        "adam,l2l",
        help="Comma-separated: adam, l2l, oneshot, adam-gp, adam-1step, each optionally with "
        ":field=value overrides of solve gail's options (e.g. l2l:meta_objective=q).",
    ),
    steps: int = typer.Option(100_000, help="Environment steps per run."),
    jobs: int = typer.Option(1, help="Worker processes (runs in parallel where cores allow)."),
    out: Path = path_option(Path("runs/gail-stability"), help="Folder for the runs."),
    reward: str = typer.Option("gail", help="gail: −log(1−D); airl: log D − log(1−D)."),
    cache_dir: str = typer.Option("data/demos", help="Where demonstrations are cached."),
) -> None:
    """GAIL vs L2L-GAIL across seeds: reliability metrics (Chan et al. 2020), curves, tables."""
    check_paths(folders={"--out": out}, inputs={"--cache-dir": cache_dir})
    from problems.imitation.stability import run_stability, target_checks

    base = GAILConfig(env=env, steps=steps, reward=reward, cache_dir=cache_dir)
    summary = run_stability(base, split_names(followers, "--followers"), seeds, out, jobs)
    keys = ("method", "final_median", "final_iqr", "final_cvar", "drawdown_cvar", "short_term_risk")
    rows = summary["rows"]
    print_table(f"gail-stability: {env}, {seeds} seeds, {steps} steps per run", rows, keys)
    for line in target_checks(summary["rows"]):
        console.print(line)
    console.print(f"written: {out}/stability.png, stability.md, stability.json")


@user_errors
def expert_train(
    env: str = typer.Option(..., help="A gymnasium id without a scripted expert."),
    steps: int = typer.Option(
        200_000,
        help="PPO environment steps, rounded up to whole rollouts of 8,192 (2,048 × 4 envs).",
    ),
    seed: int = typer.Option(0),
    cache_dir: str = typer.Option("data/demos", help="Where the expert is saved."),
) -> None:
    """Train a PPO expert on the true reward; GAIL then uses it for demonstrations."""
    check_paths(folders={"--cache-dir": cache_dir})
    from problems.imitation.ppo_expert import train_expert

    path, mean_return, trained = train_expert(env, steps, cache_dir, seed)
    console.print(
        f"expert saved to {path} after {trained:,} environment steps (--steps {steps:,} rounded "
        f"up to whole PPO rollouts); mean return {mean_return:.1f} over 10 episodes"
    )
