"""``gail-stability``: GAIL against L2L-GAIL (and the other followers of ``variants.py``) over
several seeds, with the reliability metrics of Chan et al. (ICLR 2020, ``reliability.py``).

Every (follower, seed) pair is one ``solve gail`` run in ``out/<follower>-seed<s>``; a finished run
(with ``results.json``) is reused and an interrupted one resumed, so the command can be re-run.
Runs go one after another, or in ``jobs`` worker processes where the machine has the cores. Every
option and every run folder is checked (``check_folder``), and the task's expert looked up, before
any run starts or any file is written.

Outputs: ``stability.json`` and ``stability.md`` (one row per follower) and ``stability.png``
(median and inter-quartile band across seeds of the normalised return and of every discriminator
diagnostic). A run's performance is its validation normalised return (R − R_random) /
(R_expert − R_random) of the deterministic policy on the ground-truth reward; its *final*
performance is the mean of its last 3 evaluations. Columns, per follower:
- final median, with a 95% percentile-bootstrap interval over seeds;
- final IQR across seeds (dispersion across runs, DR), with its bootstrap interval;
- final CVaR_0.1 across seeds (risk across runs, RR: the mean of the worst ⌈0.1 n⌉ runs);
- final mean and standard deviation; IQR across seeds over the second half of training;
- within-run dispersion (DT), short-term risk (SRT) and drawdown CVaR_0.05 (LRT): per run, then
  the median over runs (the drawdown's with its bootstrap interval);
- fidelity: final action error (continuous) or agreement (discrete), median over runs;
- p: permutation test of the final performances against the first follower.
The markdown also checks the stabilisation target for every learned follower against the first one.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bilevel.errors import Stopped, UserError
from bilevel.fit import RESTART_ADVICE, RESUME_ADVICE
from bilevel.options import SEED_LIMIT, as_written
from bilevel.report import markdown_table, table_cell
from bilevel.run import RunDir, atomic_write_text
from bilevel.stopping import Interrupted
from bilevel.workers import map_tasks
from problems.imitation.config import GAILConfig
from problems.imitation.demonstrations import load_demonstrations
from problems.imitation.gail import accepted_digests
from problems.imitation.plots import PANELS, plot_bands
from problems.imitation.ppo_expert import expert_policy
from problems.imitation.reliability import (
    across_run_dispersion,
    bootstrap_ci,
    cvar,
    drawdown_cvar,
    final_performance,
    iqr,
    permutation_test,
    short_term_risk,
    within_run_dispersion,
)
from problems.imitation.stability_runs import FIDELITY, RETURN, check_folder, run_one
from problems.imitation.variants import overridden, parse_variant

# what a stop says to do: this command has no --resume; run again, it reuses and resumes its runs
RERUN_ADVICE = (
    "to go on, rerun the same gail-stability command: it reuses the finished runs and resumes "
    "the others"
)


def run_stability(
    base: GAILConfig, specs: list[str], seeds: int, out: str | Path, jobs: int = 1
) -> dict[str, Any]:
    """Run every (follower, seed) pair, then write the plot and the tables; returns the summary."""
    if seeds < 2:
        raise UserError(f"--seeds must be at least 2 (the metrics compare runs); got {seeds}.")
    if seeds > SEED_LIMIT:  # every run's config was built before the first trained: for ever
        raise UserError(
            f"--seeds takes at most {SEED_LIMIT:,} (seeds 0 to N - 1 must be numpy's); "
            f"got {seeds:,}."
        )
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1; got {jobs}.")
    if not specs:
        raise UserError("--followers must name one or more followers.")
    variants = [parse_variant(spec, base) for spec in specs]
    if len({folder for _, folder, _ in variants}) < len(variants):
        raise UserError("--followers names the same follower twice; name each once.")
    out = Path(out)
    # resolve(): every bad option stops the command before any run starts; seed-major: an early
    # stop leaves every follower seeds
    runs: dict[tuple[str, int], tuple[GAILConfig, str]] = {}
    for s in range(seeds):
        for spec, (label, folder, cfg) in zip(specs, variants, strict=True):
            with as_written(f"{spec!r} in --followers", overridden(spec)):  # no --disc-lr here
                runs[label, s] = (replace(cfg, seed=s).resolve(), str(out / f"{folder}-seed{s}"))
    expert_policy(base.env, base.cache_dir)  # a task without an expert, too
    digests: dict[tuple[str, int], frozenset[str]] = {}  # of each set of demonstrations read
    for cfg, path in runs.values():  # and every run folder, before an earlier run trains
        key = (cfg.env, cfg.demo_episodes)  # the cache folder is the command's, not a variant's
        if key not in digests:
            digests[key] = accepted_digests(load_demonstrations(*key, cache_dir=cfg.cache_dir))
        check_folder(cfg, path, digests[key])
    try:
        map_tasks(run_one, list(runs.values()), jobs, threads=None)
    except Stopped as stop:  # a run's own advice (``bilevel.fit``) names its --resume
        message = stop.message.replace(RESUME_ADVICE, RERUN_ADVICE)
        raise Stopped(message.replace(RESTART_ADVICE, RERUN_ADVICE), stop.exit_code) from None
    except Interrupted as err:  # outside a run's training loop (or here, waiting on the workers)
        raise Stopped(
            f"Stopped by {err.name}; every file written before it is whole (each write is "
            f"atomic); {RERUN_ADVICE}.",
            err.exit_code,
        ) from None
    histories = {key: RunDir(path).read_metrics() for key, (_, path) in runs.items()}
    labels = [label for label, _, _ in variants]
    summary = {
        "env": base.env,
        "steps": base.steps,
        "seeds": seeds,
        "followers": dict(zip(labels, specs, strict=True)),
        "rows": stability_table(histories, labels, seeds),
    }
    curves = {f: {k: _curves(histories, f, seeds, k) for k in _keys(histories)} for f in labels}
    steps = {f: _curves(histories, f, seeds, "env_steps")[0] for f in labels}
    title = f"{base.env}: {seeds} seeds × {base.steps} steps (median, IQR band)"
    plot_bands(out / "stability.png", curves, steps, title)
    atomic_write_text(out / "stability.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "stability.md", markdown(summary))
    return summary


def _keys(histories: dict) -> list[str]:
    first = next(iter(histories.values()))[0]
    return [key for _, _, lines in PANELS for key, _ in lines if key in first]


def _curves(histories: dict, follower: str, seeds: int, key: str) -> np.ndarray:
    length = min(len(histories[(follower, s)]) for s in range(seeds))
    return np.array([[row[key] for row in histories[(follower, s)][:length]] for s in range(seeds)])


def _iqr(values: np.ndarray) -> float:
    return float(iqr(values))


def stability_table(histories: dict, followers: list[str], seeds: int) -> list[dict[str, Any]]:
    """One row per follower (see the module docstring for each column)."""
    rows, finals = [], {}
    for f in followers:
        curves = _curves(histories, f, seeds, RETURN)
        final = final_performance(curves)
        finals[f] = final
        drawdown = np.array([drawdown_cvar(c) for c in curves])
        fidelity_key = next(k for k in FIDELITY if k in histories[(f, 0)][0])
        fidelity = final_performance(_curves(histories, f, seeds, fidelity_key))
        row = {
            "method": f,
            "seeds": seeds,
            "env_steps": int(histories[(f, 0)][-1]["env_steps"]),
            "final_median": float(np.median(final)),
            "final_median_ci": bootstrap_ci(final, np.median),
            "final_iqr": float(iqr(final)),
            "final_iqr_ci": bootstrap_ci(final, _iqr),
            "final_cvar": cvar(final, 0.1, "lower"),
            "final_mean": float(final.mean()),
            "final_std": float(final.std(ddof=1)),
            "late_iqr_across_seeds": across_run_dispersion(curves),
            "within_run_dispersion": float(np.median([within_run_dispersion(c) for c in curves])),
            "short_term_risk": float(np.median([short_term_risk(c) for c in curves])),
            "drawdown_cvar": float(np.median(drawdown)),
            "drawdown_cvar_ci": bootstrap_ci(drawdown, np.median),
            fidelity_key.removeprefix("val_"): float(np.median(fidelity)),
        }
        if f != followers[0]:
            row["p_value_vs_first"] = permutation_test(final, finals[followers[0]])
        rows.append(row)
    return rows


def target_checks(rows: list[dict[str, Any]]) -> list[str]:
    """The stabilisation target, for every follower against the first: median ≥ its median, and
    final IQR and drawdown CVaR ≤ half of its."""
    first, lines = rows[0], []
    for row in rows[1:]:
        checks = [
            ("median", row["final_median"] >= first["final_median"]),
            ("IQR ≤ ½", row["final_iqr"] <= 0.5 * first["final_iqr"]),
            ("drawdown CVaR ≤ ½", row["drawdown_cvar"] <= 0.5 * first["drawdown_cvar"]),
        ]
        verdict = "met" if all(ok for _, ok in checks) else "not met"
        detail = ", ".join(f"{name} {'yes' if ok else 'no'}" for name, ok in checks)
        lines.append(f"- {row['method']} against {first['method']}: {verdict} ({detail})")
    return lines


def _cell(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(f"{v:.3f}" for v in value) + "]"
    return f"{value:.3f}" if isinstance(value, float) else table_cell(value)


def markdown(summary: dict[str, Any]) -> str:
    """``stability.md``: the stability table and the target's check per learned follower."""
    rows = summary["rows"]
    lines = [
        f"# gail-stability: {summary['env']}, {summary['seeds']} seeds × {summary['steps']} steps",
        "",
        *markdown_table(rows, cell=_cell),
    ]
    lines += ["", "Target (each learned follower against the first):", *target_checks(rows), ""]
    return "\n".join(lines)
