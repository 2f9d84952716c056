"""``gail-stability``: GAIL (Adam follower) against L2L-GAIL (LSTM follower) over several seeds,
with the reliability metrics of Chan et al. (2020) (issue 4, "The stabilisation experiment").

Every (follower, seed) pair is one ``solve gail`` run in ``out/<follower>-seed<s>``; a finished run
(with ``results.json``) is reused and an interrupted one resumed, so the command can be re-run.
Runs go one after another, or in ``jobs`` worker processes where the machine has the cores.
Outputs: ``stability.png`` (normalised return and discriminator accuracy against environment
steps: mean and inter-quartile band across seeds), ``stability.json`` and ``stability.md`` (the
table below).

Table, per follower, from the validation evaluations of each run (normalised return
(R − R_random) / (R_expert − R_random), deterministic policy, ground-truth reward):
- final: mean ± std across seeds of the mean of each run's last 3 evaluations;
- fidelity: final action error (continuous) or agreement (discrete), mean across seeds;
- across-seed IQR: dispersion across runs, IQR across seeds averaged over the second half;
- within-run dispersion: IQR of the first-differenced curve in windows of 5, mean over seeds;
- drawdown CVaR: CVaR_0.05 of drawdowns from the running peak, mean over seeds;
- p: permutation test of the difference in final return between the first two followers.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bilevel.errors import UserError
from bilevel.run import RunDir, atomic_write_figure, atomic_write_text
from problems.imitation.config import GAILConfig
from problems.imitation.reliability import (
    across_run_dispersion,
    drawdown_cvar,
    permutation_test,
    within_run_dispersion,
)
from problems.imitation.solve import solve_gail


def _run_one(cfg: GAILConfig, out: str) -> str:
    run = RunDir(out)
    if (run.path / "results.json").is_file():
        old = json.loads(run.config_path.read_text())
        if old != json.loads(json.dumps(cfg.to_dict())):
            raise UserError(
                f"{out} holds a finished run with other options; use another --out "
                "or the options it was run with."
            )
        return out
    solve_gail(cfg, out, resume=run.last_checkpoint.is_file(), show_progress=False)
    return out


def run_stability(
    base: GAILConfig, followers: list[str], seeds: int, out: str | Path, jobs: int = 1
) -> list[dict[str, Any]]:
    """Run every (follower, seed) pair, then write the plot and the table; returns the rows."""
    out = Path(out)
    runs = {
        (f, s): (replace(base, follower=f, seed=s), str(out / f"{f}-seed{s}"))
        for s in range(seeds)
        for f in followers  # seed-major: an early stop still leaves every follower some seeds
    }
    for cfg, _ in runs.values():
        cfg.resolve()  # every bad option stops the command before any run starts
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(_run_one, *zip(*runs.values(), strict=True)))
    else:
        for cfg, path in runs.values():
            _run_one(cfg, path)
    histories = {key: RunDir(path).read_metrics() for key, (_, path) in runs.items()}
    rows = stability_table(histories, followers, seeds)
    plot_stability(out / "stability.png", histories, followers, seeds)
    atomic_write_text(out / "stability.json", json.dumps(rows, indent=2) + "\n")
    atomic_write_text(out / "stability.md", markdown_table(rows))
    return rows


def _curves(histories: dict, follower: str, seeds: int, key: str) -> np.ndarray:
    length = min(len(histories[(follower, s)]) for s in range(seeds))
    return np.array([[row[key] for row in histories[(follower, s)][:length]] for s in range(seeds)])


def stability_table(histories: dict, followers: list[str], seeds: int) -> list[dict[str, Any]]:
    """One row per follower (see the module docstring for each column)."""
    rows, finals = [], {}
    for f in followers:
        curves = _curves(histories, f, seeds, "val_normalised_return")
        final = curves[:, -3:].mean(axis=1)
        finals[f] = final
        fidelity_key = next(
            k for k in ("val_action_error", "val_action_agreement") if k in histories[(f, 0)][0]
        )
        fidelity = _curves(histories, f, seeds, fidelity_key)[:, -3:].mean(axis=1)
        rows.append(
            {
                "method": {"adam": "GAIL", "l2l": "L2L-GAIL"}.get(f, f),
                "final_normalised_return": float(final.mean()),
                "final_std": float(final.std(ddof=1)) if seeds > 1 else 0.0,
                fidelity_key.removeprefix("val_"): float(fidelity.mean()),
                "across_seed_iqr": across_run_dispersion(curves),
                "within_run_dispersion": float(np.mean([within_run_dispersion(c) for c in curves])),
                "drawdown_cvar": float(np.mean([drawdown_cvar(c) for c in curves])),
                "env_steps": int(histories[(f, 0)][-1]["env_steps"]),
                "seeds": seeds,
            }
        )
    if len(followers) >= 2 and seeds > 1:
        p = permutation_test(finals[followers[0]], finals[followers[1]])
        for row in rows:
            row["p_value_final"] = p
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row[k]) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def plot_stability(path: Path, histories: dict, followers: list[str], seeds: int) -> None:
    """Mean and inter-quartile band across seeds against environment steps, one line per follower."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for f in followers:
        steps = _curves(histories, f, seeds, "env_steps")[0]
        for ax, key in zip(axes, ("val_normalised_return", "val_disc_acc"), strict=True):
            curves = _curves(histories, f, seeds, key)
            q25, q75 = np.percentile(curves, [25, 75], axis=0)
            label = {"adam": "GAIL (Adam)", "l2l": "L2L-GAIL (LSTM)"}.get(f, f)
            ax.plot(steps, curves.mean(axis=0), label=label)
            ax.fill_between(steps, q25, q75, alpha=0.25)
    axes[0].set(xlabel="environment steps", ylabel="normalised return", title="policy")
    axes[1].set(xlabel="environment steps", ylabel="accuracy", title="discriminator", ylim=(0, 1))
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    atomic_write_figure(fig, path)
