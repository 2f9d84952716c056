"""``bench ait``: the AIT issue's benchmark. AIT Net (one signed step) and L2L-AIT (the learned
attackers, Algorithm 4) train on mnist5k with the small CNN, ε = 0.3, ε_y = 0.5, the same epochs
and seeds (ε ramped up over the first ``epochs // 3`` epochs, the mnist5k default: under 3 epochs,
no ramp), one after another in this process, with the follower pulling features ``toward`` the
partner's and, as a second set of rows, pushing them ``away`` (Eq. 6 as printed). ``levers``
(AITConfig options, e.g. those the DRO study chose) shape the learned followers' rows only, the
leader's options among them (its learning rate, batch size); those the bench sets itself, alike
for every row, the problem's definition among them (``ROW_OPTIONS``), are refused. Each
best-on-validation model is attacked on the test split with PGD-40 (step 0.01, uniform random
start) on the cross-entropy and on the CW margin loss, and with the standard AutoAttack
(``bench.run_bench``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bilevel.errors import UserError
from bilevel.options import as_written, check_levers
from problems.adversarial.ait import Direction
from problems.adversarial.ait_config import AIT_FOLLOWERS, AITConfig
from problems.adversarial.bench import BENCH_EPS, run_bench
from problems.adversarial.checks import check_for_learned

# what bench ait sets itself, alike for every row: as a lever, one would train a row other than
# its label and folder say (a seed-4 run in seed-0, AIT as "L2L-AIT (grad)") or leave the setting
ROW_OPTIONS = (
    "follower", "ait_direction", "seed", "epochs", "train_size", "eval_size", "dataset", "model",
    "eps", "norm", "device", "eps_y", "pairing", "eps_warmup",
)  # fmt: skip
ROW_OPTIONS_WHY = (
    "bench ait sets them itself, alike for every row (--methods, --directions, --seeds, "
    "--epochs, --train-size, --eval-size; mnist5k, the small CNN, L∞ ε = 0.3 reached over the "
    "first third of the epochs, ε_y = 0.5 and reversed partners, the device)"
)


def bench_ait(
    methods: list[str],
    directions: list[str],
    epochs: int,
    seeds: list[int],
    out: Path,
    json_path: Path | None = None,
    train_size: int | None = None,
    eval_size: int | None = None,
    autoattack: bool = True,
    jobs: int = 1,
    levers: dict[str, Any] | None = None,
    reuse: bool = False,
) -> list[dict[str, Any]]:
    """Train each follower in ``methods`` for each direction and seed; return rows of clean,
    PGD-40, CW-PGD-40 and AutoAttack test accuracy and training seconds (means and stds), with
    the seconds ÷ those of AIT in the same direction (``ratio_to_ait``; None without ``ait``)."""
    unknown = [m for m in methods if m not in AIT_FOLLOWERS]
    if unknown or not methods:
        raise UserError(f"Unknown --methods {unknown}; choose from: {', '.join(AIT_FOLLOWERS)}.")
    known = {d.value for d in Direction}
    if not directions or any(d not in known for d in directions):
        raise UserError(f"--directions takes {', '.join(sorted(known))}; got {directions}.")
    levers = levers or {}
    check_levers(AITConfig, levers, "--levers", exclude=ROW_OPTIONS, why=ROW_OPTIONS_WHY)
    check_for_learned(bool(levers), any(m != "ait" for m in methods), "--levers shape")

    def entry(method: str, direction: str) -> Callable[[int], AITConfig]:
        extra = levers if method != "ait" else {}

        def make(seed: int) -> AITConfig:
            cfg = AITConfig(
                **{"follower": method, "ait_direction": direction, "epochs": epochs,
                   "eps": BENCH_EPS, "seed": seed, "train_size": train_size,
                   "eval_size": eval_size} | extra
            )  # fmt: skip
            cfg.given = frozenset(extra)  # the levers as if typed: what the row ignores is refused
            return cfg

        return make

    names = {m: "AIT" if m == "ait" else f"L2L-AIT ({m})" for m in methods}
    entries = {f"{names[m]}, {d}": entry(m, d) for d in directions for m in methods}
    ait_of_direction = {f"{names[m]}, {d}": f"AIT, {d}" for d in directions for m in methods}
    if levers:  # a row's refusal of a lever names it as written: bench ait has no flag of it
        with as_written("--levers", levers):
            for method in methods:
                entry(method, directions[0])(0).resolve()
    return run_bench(
        entries, seeds, out, json_path, autoattack, jobs, cw=True,
        reference=ait_of_direction, ratio_name="ait", reuse=reuse,
    )  # fmt: skip
