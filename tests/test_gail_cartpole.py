"""A short GAIL run on CartPole-v1 imitates the expert: the learner's actions agree with the
expert's on the learner's own visited states well above chance (1/2). Agreement, not return, is
the check: on CartPole a survival-rewarding discriminator can reach a high return while
imitating nothing."""

from __future__ import annotations

import json

from problems.imitation.config import GAILConfig
from problems.imitation.solve import solve_gail


def test_short_gail_run_raises_action_agreement_above_chance(tmp_path) -> None:
    cfg = GAILConfig(
        env="CartPole-v1", follower="adam", steps=4096, n_envs=2, n_steps=256, ppo_lr=1e-3,
        eval_episodes=2, test_episodes=2, demo_episodes=4, cache_dir=str(tmp_path / "demos"),
    )  # fmt: skip
    results = solve_gail(cfg, tmp_path / "run", show_progress=False)
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    agreement = [row["val_action_agreement"] for row in rows]
    assert len(rows) == 8 and rows[-1]["env_steps"] == 4096
    assert min(agreement[-2:]) > 0.65, agreement  # chance: 0.5
    assert agreement[-1] > agreement[0], agreement
    assert results["test_action_agreement"] > 0.65
