"""The study's outputs (``bench l2l``): a JSON of every run, a markdown table of means and
standard deviations over seeds, and a Pareto plot of validation robust accuracy against training
seconds, each written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bilevel.report import markdown_table
from bilevel.run import atomic_write_figure, atomic_write_text, new_figure

COST = "train_cpu_seconds"  # CPU time: on a shared machine wall-clock time is mostly other load


def pareto_front(rows: list[dict[str, Any]], cost: str = COST) -> list[str]:
    """Entries that no other entry beats on both axes (less ``cost`` and higher robust
    accuracy, at least as good on each and better on one), in order of cost. An entry whose runs
    recorded no cost (made before the study recorded CPU time) cannot be placed: it is left out."""
    points = {r["entry"]: (r[cost], -r["val_apgd_ce_t_acc"]) for r in rows if r[cost] is not None}
    front = [
        e
        for e, p in points.items()
        if not any(q != p and q[0] <= p[0] and q[1] <= p[1] for q in points.values())
    ]
    return sorted(front, key=lambda e: points[e][0])


def winner(rows: list[dict[str, Any]]) -> str | None:
    """The learned configuration with the highest mean validation robust accuracy."""
    learned = [r for r in rows if not r["reference"]]
    return max(learned, key=lambda r: r["val_apgd_ce_t_acc"])["entry"] if learned else None


def _table(grid: Any, rows: list[dict[str, Any]]) -> str:
    n = len(grid.seeds)
    lines = [
        f"# Study {grid.name}: learned followers against hand-designed ones",
        "",
        f"Validation split ({f'first {grid.val_examples}' if grid.val_examples else 'all'} "
        f"examples), APGD-CE + APGD-T (pyautoattack), mean ± std over {n} seed(s) "
        f"{grid.seeds}; nothing is chosen on the test split (each run's own results.json still "
        "holds its PGD-20 test score, which the study does not read). A ratio to PGM-10 divides "
        "the two entries' "
        "means, each over the seeds that recorded it.",
        "",
    ]
    front = set(pareto_front(rows))
    table = []
    for r in rows:
        cpu, wall = (
            f"{r[k]:.2f}" if r[k] is not None else "-" for k in ("cpu_vs_pgm10", "seconds_vs_pgm10")
        )
        table.append({
            "entry": r["entry"],
            "kind": "reference" if r["reference"] else "L2L",
            "val APGD-CE+T": f"{r['val_apgd_ce_t_acc']:.3f} ± {r['val_apgd_ce_t_std']:.3f}",
            "val clean": f"{r['val_clean_acc']:.3f} ± {r['val_clean_std']:.3f}",
            "train CPU s": _mean_std(r, "train_cpu_seconds", n),
            "CPU ÷ PGM-10": cpu,
            "train wall s": _mean_std(r, "train_seconds", n),
            "wall ÷ PGM-10": wall,
            "Pareto": "yes" if r["entry"] in front else "",
        })  # fmt: skip
    lines += markdown_table(table)
    best = winner(rows)
    if best is not None:
        lines += ["", f"Best learned configuration on validation: **{best}**."]
    lines += ["", f"![Pareto plot]({grid.name}.png)", ""]
    return "\n".join(lines)


def _mean_std(row: dict[str, Any], key: str, seeds: int) -> str:
    """ "mean ± std" of seconds, or "-" where no run recorded them; "(over k)" where only k of the
    ``seeds`` runs did (runs trained before the study recorded CPU time)."""
    if row[key] is None:
        return "-"
    k = row.get(key + "_seeds", seeds)
    return f"{row[key]:.1f} ± {row[key + '_std']:.1f}" + (f" (over {k})" if k < seeds else "")


def plot_pareto(rows: list[dict[str, Any]], title: str, path: Path) -> None:
    """Validation robust accuracy (± std) against training seconds (± std), the front joined."""
    fig, ax = new_figure(figsize=(8, 5.5))
    for r in (r for r in rows if r[COST] is not None):  # no recorded cost: no place on the plot
        style = dict(color="0.4", marker="s") if r["reference"] else dict(color="C0", marker="o")
        ax.errorbar(
            r[COST], r["val_apgd_ce_t_acc"], xerr=r[COST + "_std"],
            yerr=r["val_apgd_ce_t_std"], linestyle="none", capsize=3, **style,
        )  # fmt: skip
        ax.annotate(r["entry"], (r[COST], r["val_apgd_ce_t_acc"]), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")  # fmt: skip
    by_name = {r["entry"]: r for r in rows}
    front = [by_name[name] for name in pareto_front(rows)]
    # marked, not only joined: a front of one point draws no line
    ax.step([r[COST] for r in front], [r["val_apgd_ce_t_acc"] for r in front],
            where="post", color="C3", lw=1, marker="D", mfc="none", ms=9,
            label="Pareto front")  # fmt: skip
    ax.set(xlabel="training CPU seconds (mean over seeds)",
           ylabel="validation accuracy under APGD-CE + APGD-T", title=title)  # fmt: skip
    ax.plot([], [], "s", color="0.4", label="hand-designed (FGSM-RS, PGM-k)")
    ax.plot([], [], "o", color="C0", label="learned follower (L2L)")
    ax.legend(fontsize="small", loc="lower right")
    fig.tight_layout()
    atomic_write_figure(fig, path)


def write_study(
    grid: Any, rows: list[dict[str, Any]], runs: list[dict[str, Any]], results_dir: Path
) -> None:
    """``<name>.json``, ``<name>.md`` and ``<name>.png`` in ``results_dir``."""
    data = {
        "grid": grid.name,
        "seeds": grid.seeds,
        "val_examples": grid.val_examples,
        "attack": "APGD-CE + APGD-T (pyautoattack), validation split",
        "rows": rows,
        "pareto_front": pareto_front(rows),
        "winner": winner(rows),
        "runs": runs,
    }
    atomic_write_text(results_dir / f"{grid.name}.json", json.dumps(data, indent=2) + "\n")
    atomic_write_text(results_dir / f"{grid.name}.md", _table(grid, rows))
    plot_pareto(rows, f"Study {grid.name}", results_dir / f"{grid.name}.png")
