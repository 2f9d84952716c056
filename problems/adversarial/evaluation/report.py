"""Write an evaluation into its run folder: ``eval.json`` (every number), ``eval.md`` (the table
a person reads, the checklist lines, the plots) and the PNGs; and build table rows for one run or
several side by side (``check_compared``: only evaluations of the same examples in the same ball).
Every write is atomic (``bilevel.run``), and eval.md, written last, is removed first, so it never
outlives the evaluation it describes (``write_outputs``).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from torch import Tensor

from bilevel.errors import UserError
from bilevel.norms import Norm
from bilevel.options import json_fits
from bilevel.report import markdown_table, plot_curves
from bilevel.run import RunDir, atomic_write_text
from problems.adversarial.evaluation.attacks import AttackResult
from problems.adversarial.evaluation.autoattack_adapter import STANDARD
from problems.adversarial.evaluation.checklist import Check
from problems.adversarial.evaluation.plots import plot_examples, plot_sweeps
from problems.adversarial.report import panels

EXAMPLE_ATTACKS = ("fgsm", "pgd20", "learned")  # Figure 4/5 of the paper
SWEEP_PLOT = "eval_sweeps.png"
EXAMPLES_PLOT = "eval_examples.png"
CURVES_PLOT = "training_curves.png"
EVAL_FILES = ("eval.json", "eval.md", SWEEP_PLOT, EXAMPLES_PLOT, CURVES_PLOT)  # what it writes


def check_compared(compare: list[Path], this: dict[str, Any]) -> None:
    """Side by side only where the same examples were attacked in the same ball: eval.md's title
    (data set, first N examples, norm, ε) is every column's. ``this`` holds those four of this
    evaluation, by their eval.json keys; a compared eval.json without "norm" is L∞."""
    for other in compare:
        theirs = {"norm": Norm.LINF.value} | read_eval(other)
        differ = [k for k, v in this.items() if not _same(theirs.get(k), v)]
        if differ:
            raise UserError(
                f"--compare {other} was evaluated with {_fields(theirs, differ)} and this "
                f"evaluation with {_fields(this, differ)}; compare evaluations of the same data "
                "set, examples, ball and ε."
            )


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float | int) and isinstance(b, float) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9)  # ε as eval.json's JSON gives it back
    return a == b


def _fields(ev: dict[str, Any], keys: list[str]) -> str:
    return " and ".join(f"{k} {ev.get(k, '(none recorded)')}" for k in keys)


def check_eval_files(run_dir: Path) -> None:
    """One sentence, before any attack runs, where a folder stands in the place of a file the
    evaluation writes (it ended, after the attacks, in IsADirectoryError)."""
    for name in EVAL_FILES:
        if (path := Path(run_dir) / name).is_dir():
            raise UserError(
                f"{path} is a folder, where evaluate writes its {name}; move it away and "
                "evaluate again."
            )


def read_eval(run_dir: Path) -> dict[str, Any]:
    """A run folder's ``eval.json``; missing or unreadable is one sentence, and so is valid JSON
    that lacks what the table and the plots read of it (``eval_problem``)."""
    path = Path(run_dir) / "eval.json"
    try:
        ev = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(
            f"No readable eval.json in {run_dir}; run `evaluate {run_dir}` first."
        ) from None
    if problem := eval_problem(ev):
        raise UserError(
            f"{path} is not an evaluation written by `evaluate` ({problem}); run "
            f"`evaluate {run_dir}` again or leave it out of --compare."
        )
    return ev


def eval_problem(ev: Any) -> str:
    """What an ``eval.json``'s content lacks of what a comparison reads (the table: each attack's
    name and accuracy, the clean and worst-case accuracies; the ball; the sweeps' curves), in a
    few words; "" when it has it all."""
    if not isinstance(ev, dict):
        kind = {list: "an array", str: "a string", bool: "true or false"}.get(type(ev), "a number")
        return f"{'null' if ev is None else kind}, not an object"
    attacks = ev.get("attacks")
    if not isinstance(attacks, list) or not all(
        isinstance(a, dict)
        and isinstance(a.get("name"), str)
        and json_fits(a.get("accuracy"), float)
        for a in attacks
    ):
        return 'no "attacks" list of names and accuracies'
    worst = ev.get("worst_case")
    if not json_fits(ev.get("clean_acc"), float) or not (
        isinstance(worst, dict) and json_fits(worst.get("accuracy"), float)
    ):
        return 'no "clean_acc" or "worst_case" accuracy'
    if ev.get("norm", Norm.LINF.value) not in tuple(n.value for n in Norm):
        return f'"norm" is {json.dumps(ev["norm"])}, not linf or l2'
    sweeps = ev.get("sweeps", {})
    if not isinstance(sweeps, dict) or not all(
        _is_curve(sweeps[k]) for k in ("eps", "steps") if k in sweeps
    ):
        return '"sweeps" without curves of x and accuracy'
    return ""


def _is_curve(curve: Any) -> bool:
    return (
        isinstance(curve, dict)
        and json_fits(curve.get("x"), list[float])
        and json_fits(curve.get("acc"), list[float])
        and len(curve["x"]) == len(curve["acc"])
    )


def autoattack_rank(attack: dict[str, Any]) -> int | None:
    """Where an ``eval.json`` attack stands as the AutoAttack figure: 0 for the standard cascade,
    1 for APGD-CE + APGD-T, None for any other attack (a Square-only run included). Read from
    the components it recorded, else from those its name spells (``autoattack`` is the standard
    cascade, ``autoattack(apgd-ce,apgd-t)`` a sub-list)."""
    name, params = attack["name"], attack.get("params")
    if not name.startswith("autoattack"):
        return None
    if isinstance(params, dict) and json_fits(params.get("components"), list[str]):
        components = set(params["components"])
    else:
        spelled = re.fullmatch(r"autoattack(?:\((.*)\))?", name)
        if spelled is None:
            return None
        components = set(spelled.group(1).split(",")) if spelled.group(1) else set(STANDARD)
    if components >= set(STANDARD):
        return 0
    return 1 if components >= {"apgd-ce", "apgd-t"} else None


def headline_attack(ev: dict[str, Any]) -> dict[str, Any] | None:
    """The attack of eval.md's bold line: the standard AutoAttack cascade if it ran, else
    APGD-CE + APGD-T if it ran, else None (never Square alone, which is gradient-free)."""
    ranked = [(r, i) for i, a in enumerate(ev["attacks"]) if (r := autoattack_rank(a)) is not None]
    return ev["attacks"][min(ranked)[1]] if ranked else None


def table_rows(evals: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per attack (clean first, then the AutoAttack figure: the standard cascade before
    APGD-CE + APGD-T, the others in the order they ran, the per-example worst case last), one
    column per run."""
    worst = "worst case (per example)"
    accs = {  # run label → attack name → accuracy
        label: {a["name"]: a["accuracy"] for a in ev["attacks"]}
        | {"clean": ev["clean_acc"], worst: ev["worst_case"]["accuracy"]}
        for label, ev in evals.items()
    }
    ranks: dict[str, int] = {}  # attack name → 0, 1 (see autoattack_rank) or 2 (any other)
    for ev in evals.values():
        for a in ev["attacks"]:
            rank = autoattack_rank(a)
            ranks.setdefault(a["name"], 2 if rank is None else rank)
    names = ["clean", *sorted(ranks, key=ranks.__getitem__), worst]
    return [{"attack": n} | {label: acc.get(n, "-") for label, acc in accs.items()} for n in names]


def checklist_lines(ev: dict[str, Any]) -> list[str]:
    """The gradient-masking checklist of an evaluation, one printed line per check."""
    return [Check(**c).line() for c in ev.get("checklist", [])]


def write_outputs(
    run: RunDir, ev: dict[str, Any], x: Tensor, results: list[AttackResult], compare: list[Path]
) -> None:
    """The plots, eval.json and eval.md, in that order (eval.md links the plots).

    Each write is atomic, the set of them is not: an earlier evaluation's eval.md is removed
    before the first write, so a crash part-way leaves eval.json (the old one or the new) without
    an eval.md, never beside one that describes a different evaluation. eval.md present means it
    was written with the eval.json and plots beside it.
    """
    plots = []
    others = {str(p): read_eval(p) for p in compare}
    (run.path / "eval.md").unlink(missing_ok=True)
    if "sweeps" in ev:
        curves = {str(run.path): ev["sweeps"]} | {
            k: v["sweeps"] for k, v in others.items() if "sweeps" in v
        }
        plot_sweeps(curves, run.path / SWEEP_PLOT, ev.get("norm", Norm.LINF.value))
        plots.append(SWEEP_PLOT)
    shown = {r.name: r.x_adv_head for r in results if r.name in EXAMPLE_ATTACKS}
    if shown:
        k = min(len(h) for h in shown.values())
        plot_examples(x[:k], {n: h[:k] for n, h in shown.items()}, run.path / EXAMPLES_PLOT)
        plots.append(EXAMPLES_PLOT)
    history = run.read_metrics()
    if history:
        plot_curves(run.path / CURVES_PLOT, history, panels(history))
        plots.append(CURVES_PLOT)
    ev["plots"] = plots
    for stale in {SWEEP_PLOT, EXAMPLES_PLOT, CURVES_PLOT} - set(plots):  # an earlier evaluation's
        (run.path / stale).unlink(missing_ok=True)
    run.write_json("eval.json", ev)
    atomic_write_text(run.path / "eval.md", render_markdown(ev, others))


def _weights(ev: dict[str, Any]) -> str:
    """The evaluated weights in brackets after the checkpoint's name, e.g. θ̄, the --leader-ema
    average; nothing for θ itself (and for an eval.json older than the "weights" key)."""
    weights = ev.get("weights", "θ")
    return "" if weights == "θ" else f" ({weights})"


def render_markdown(ev: dict[str, Any], others: dict[str, dict[str, Any]]) -> str:
    """``eval.md``: after the title, the AutoAttack figure (``headline_attack``), then one table
    of ``ev`` beside the runs it is compared with (``others``, by name), each attack's settings,
    the checklist and the plots."""
    lines = [
        f"# Robustness evaluation of {ev['run']}",
        "",
        f"Checkpoint `{ev['checkpoint']}`{_weights(ev)}, {ev['dataset']} **test** split, first "
        f"{ev['n_examples']} "
        f"examples, {Norm(ev.get('norm', Norm.LINF.value)).label} ε = {ev['eps']:g}, seed "
        f"{ev['seed']}. The worst case (per example) of a column is the mean over examples of "
        "the minimum over the clean input and every attack in that column.",
        "",
    ]
    headline = headline_attack(ev)
    if headline is not None:
        lines += [
            f"**{headline['name']}: {headline['accuracy']:.4f}** robust accuracy (clean "
            f"{ev['clean_acc']:.4f}); the worst case over every attack: "
            f"{ev['worst_case']['accuracy']:.4f}.",
            "",
        ]
    rows = table_rows({ev["run"]: ev} | others)
    lines += markdown_table(rows, list(rows[0]))
    lines += ["", "## Attack settings", ""]
    lines += ["| attack | white-box | seconds | settings |", "|---|---|---|---|"]
    for a in ev["attacks"]:
        settings = ", ".join(f"{k}={v}" for k, v in a["params"].items())
        lines.append(f"| {a['name']} | {a['white_box']} | {a['seconds']} | {settings} |")
        if "broken_by_component" in a:
            lines.append(f"| ↳ broken by component | | | {a['broken_by_component']} |")
    if "checklist" in ev:
        lines += ["", "## Gradient-masking checklist (Carlini et al. 2019)", ""]
        lines += [f"- {line}" for line in checklist_lines(ev)]
    lines += [""] + [f"![{p}]({p})" for p in ev.get("plots", [])] + [""]
    return "\n".join(lines)
