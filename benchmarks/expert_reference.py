"""The expert's own normalised return on the episodes GAIL's learners are scored on.

    python benchmarks/expert_reference.py --env Pendulum-v1 --env Acrobot-v1 --seeds 8

The normalised return's 1 is the expert's mean over its demonstration episodes, and its 0 a
random policy's mean drawn from the run's seed; the learners are scored on other start states
(validation: 5 episodes, test: 20). On those the expert itself reads near 1, not 1: the ceiling a
stability table's medians are read against. Per environment and seed (the anchors' seed), prints
the expert's score on the validation and the test episodes, as ``solve gail`` at its defaults
records them in results.json (``expert_val_normalised_return``, ``expert_test_normalised_return``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from problems.imitation.config import GAILConfig  # noqa: E402
from problems.imitation.demonstrations import load_demonstrations  # noqa: E402
from problems.imitation.ppo_expert import expert_policy  # noqa: E402
from problems.imitation.solve import (  # noqa: E402
    TEST_SEED,
    VAL_SEED,
    expert_reference,
    random_return,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", action="append", required=True)
    parser.add_argument("--seeds", type=int, default=8)
    args = parser.parse_args()
    base = GAILConfig()
    for env in args.env:
        demos = load_demonstrations(env, base.demo_episodes, cache_dir=base.cache_dir)
        r_expert = float(demos.episode_returns.mean())
        expert = expert_policy(env, base.cache_dir)
        scores: dict[str, list[float]] = {"val": [], "test": []}
        for seed in range(args.seeds):
            r_random = random_return(env, seed)
            for split, episodes, start in (
                ("val", base.eval_episodes, VAL_SEED),
                ("test", base.test_episodes, TEST_SEED),
            ):
                scores[split].append(
                    expert_reference(env, expert, episodes, start, r_random, r_expert)
                )
        for split, values in scores.items():
            print(
                f"{env} {split}: median {statistics.median(values):.3f}, "
                f"range [{min(values):.3f}, {max(values):.3f}] over seeds 0-{args.seeds - 1}"
            )


if __name__ == "__main__":
    main()
