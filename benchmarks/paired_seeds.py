"""Two methods trained at the same seeds, compared seed by seed (README, "Results").

Reads what ``bench dro --reuse`` and ``bench l2l`` cached in each run folder, ``FAMILY/seed-S``:
``bench-eval.json`` (test split: clean, standard AutoAttack, and ``aa_beyond_apgd``, the accuracy
FAB-T and Square took after APGD-CE + APGD-T), ``study-eval.json`` (validation APGD-CE + APGD-T)
and ``results.json`` (training CPU seconds). Prints mean ± std of each method and the paired
difference B − A: its mean, its standard error (std / √n), on how many seeds B is ahead, and
Student's t with n − 1 degrees of freedom: the two-sided p of "no difference" and the 95%
interval. With ``--margin M`` (e.g. 0.02, the learned-attacker target's +2 points) it adds the
seeds a paired study with this spread would need to tell today's mean from M at the 5% level with
80% power.
The APGD-CE + APGD-T column is the standard cascade's accuracy plus what FAB-T and Square took
(the cascade's APGD part is the same deterministic attack); for a run attacked before
``aa_beyond_apgd`` was recorded, it is read from the same run's APGD-CE + APGD-T evaluation,
``APGD_ROOT/FAMILY/seed-S/bench-eval.json`` (``--apgd-root``).

    python benchmarks/paired_seeds.py runs/l2l-budget-aa/pgm-10 \
        runs/l2l-budget-aa/default_carried_delta_truncated_unroll --seeds 0,1,2,3,4,5,6,7,8
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bilevel.errors import UserError  # noqa: E402
from bilevel.files import atomic_write_text  # noqa: E402
from bilevel.options import check_seeds  # noqa: E402
from problems.adversarial.bench import mean_std  # noqa: E402

FIELDS = {  # column: how to read it from a run folder's cached files
    "val APGD-CE+T": lambda f: f["study"]["val_apgd_ce_t_acc"],
    "test clean": lambda f: f["row"]["clean_acc"],
    "test APGD-CE+T": lambda f: f["apgd"],
    "test AutoAttack": lambda f: f["row"]["autoattack_acc"],
    "train CPU s": lambda f: f["results"]["train_cpu_seconds"],
}

ROBUST = ("val APGD-CE+T", "test APGD-CE+T", "test AutoAttack")  # where --margin applies


def refuse(sentence: str) -> None:
    """A bad input: one sentence on stderr, exit code 2."""
    print(sentence, file=sys.stderr)
    raise SystemExit(2)


def _read(path: Path) -> dict:
    if not path.is_file():
        refuse(f"{path} is missing: run bench dro --reuse / bench l2l on it first.")
    return json.loads(path.read_text())


def read_run(folder: Path, apgd_root: Path | None) -> tuple[dict[str, float], dict[str, Any]]:
    """One run folder's figures, by column, and how they were measured (what the test evaluations
    were asked, the count of validation digits: a comparison holds only between figures measured
    alike); a missing file is one sentence. Each accuracy is rounded to 6 decimals: the cached
    ones are float32 means, so the same count of digits could differ in the eighth decimal
    between files, a difference no seed has (two counts of n ≤ 10⁶ digits differ by 1e-6 or
    more, so rounding keeps them apart)."""
    test = _read(folder / "bench-eval.json")
    files = {"row": test["row"], "study": _read(folder / "study-eval.json")}
    files["results"] = _read(folder / "results.json")
    how = {"test": test.get("asked"), "val": files["study"].get("val_examples"), "apgd": None}
    row = files["row"]
    if "aa_beyond_apgd" in row:
        files["apgd"] = row["autoattack_acc"] + row["aa_beyond_apgd"]
    elif apgd_root is None:
        refuse(f"{folder} has no aa_beyond_apgd; give --apgd-root for its APGD figure.")
    else:
        other = _read(apgd_root / folder.parent.name / folder.name / "bench-eval.json")
        files["apgd"], how["apgd"] = other["row"]["apgd_ce_t_acc"], other.get("asked")
    figures = {column: float(read(files)) for column, read in FIELDS.items()}
    return {k: v if k == "train CPU s" else round(v, 6) for k, v in figures.items()}, how


def check_measured_alike(hows: dict[Path, dict[str, Any]]) -> None:
    """One sentence (exit 2) unless every run's test evaluation was asked the same (attacks,
    ``eval_size``), every validation figure counts the same digits, and every APGD figure read
    from ``--apgd-root`` was asked the same."""
    for key, what in (("test", "test evaluation"), ("val", "validation digits"),
                      ("apgd", "--apgd-root evaluation")):  # fmt: skip
        first: dict[str, Path] = {}  # each way of measuring: the first run measured so
        for folder, how in hows.items():
            if key != "apgd" or how["apgd"] is not None:
                first.setdefault(json.dumps(how[key], sort_keys=True), folder)
        if len(first) > 1:
            (v1, f1), (v2, f2) = list(first.items())[:2]
            refuse(
                f"{f1} and {f2} were measured otherwise ({what}: {v1} against {v2}); compare "
                "runs evaluated alike."
            )


def paired_t(diffs: list[float], margin: float | None = None) -> dict[str, Any]:
    """Student's t on paired differences (n ≥ 2, n − 1 degrees of freedom): their mean, its
    standard error std / √n, t and the two-sided p of a zero mean, and the 95% interval. With ``margin``, the seeds a new paired
    study with this spread σ would need to tell a true difference of today's mean from the margin
    at the 5% level with 80% power, n = ((z_0.975 + z_0.8) σ / |mean − margin|)², at least 2
    (the normal approximation; None where the mean sits on the margin)."""
    n = len(diffs)
    if n < 2:
        raise ValueError(f"a paired t needs at least 2 seeds; got {n}.")
    mean, std = mean_std(diffs)
    se = std / math.sqrt(n)
    if se > 0:
        t = mean / se
        p = float(2 * stats.t.sf(abs(t), n - 1))
    else:  # every seed the same difference: no t; certain unless that difference is zero
        t, p = None, 0.0 if mean else 1.0
    half = stats.t.ppf(0.975, n - 1) * se
    out = {
        "diff_mean": mean,
        "diff_se": se,
        "diff_t": t,
        "diff_p_two_sided": p,
        "diff_ci95": [mean - half, mean + half],
    }
    if margin is not None:
        gap = abs(mean - margin)
        z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
        out["margin"] = margin
        needed = math.ceil((z * std / gap) ** 2 - 1e-9) if gap else None
        out["seeds_for_80pct_power_at_margin"] = None if needed is None else max(2, needed)
    return out


def compare(
    a: list[dict[str, float]], b: list[dict[str, float]], margin: float | None = None
) -> dict[str, dict[str, float]]:
    """Per column: both methods' mean ± std and the paired difference b − a (``paired_t``; the
    margin only for the robust-accuracy columns, ``ROBUST``)."""
    out = {}
    for column in FIELDS:
        xs, ys = [r[column] for r in a], [r[column] for r in b]
        diffs = [y - x for x, y in zip(xs, ys, strict=True)]
        (a_mean, a_std), (b_mean, b_std) = mean_std(xs), mean_std(ys)
        out[column] = {
            "a_mean": a_mean,
            "a_std": a_std,
            "b_mean": b_mean,
            "b_std": b_std,
            **paired_t(diffs, margin if column in ROBUST else None),
            "b_ahead": sum(d > 0 for d in diffs),
            "a_per_seed": xs,
            "b_per_seed": ys,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="the reference method's folder of seed-S runs")
    parser.add_argument("b", type=Path, help="the compared method's folder of seed-S runs")
    parser.add_argument("--seeds", required=True, help="comma-separated, e.g. 0,1,2")
    parser.add_argument("--apgd-root", type=Path, help="where older runs' APGD-CE + APGD-T is")
    parser.add_argument("--margin", type=float, help="a target for B − A, e.g. 0.02")
    parser.add_argument("--json", type=Path, help="also write the comparison here")
    args = parser.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.exit(2, f"--seeds must be comma-separated integers; got {args.seeds!r}.\n")
    if len(seeds) < 2:
        parser.exit(2, f"--seeds needs at least two seeds for a paired t; got {args.seeds!r}.\n")
    try:  # a seed counted twice would halve the standard error
        check_seeds(seeds, "--seeds")
    except UserError as err:
        refuse(str(err))
    measured = {
        family / f"seed-{s}": read_run(family / f"seed-{s}", args.apgd_root)
        for family in (args.a, args.b)
        for s in seeds
    }
    check_measured_alike({folder: how for folder, (_, how) in measured.items()})
    runs = [[measured[family / f"seed-{s}"][0] for s in seeds] for family in (args.a, args.b)]
    result = compare(*runs, margin=args.margin)
    print(f"{len(seeds)} seeds; A = {args.a.name}, B = {args.b.name}")
    for column, r in result.items():
        print(
            f"{column:16s} A {r['a_mean']:.4f} ± {r['a_std']:.4f}   B {r['b_mean']:.4f} ± "
            f"{r['b_std']:.4f}   B − A {r['diff_mean']:+.4f} (SE {r['diff_se']:.4f}; "
            f"B ahead on {r['b_ahead']} of {len(seeds)})"
        )
        lo, hi = r["diff_ci95"]
        needed = (
            f"; {r['seeds_for_80pct_power_at_margin']} seeds for 80% power against {r['margin']:+g}"
            if "margin" in r
            else ""
        )
        t = "none (no spread)" if r["diff_t"] is None else f"{r['diff_t']:.2f}"
        print(
            f"{'':16s} t {t}, two-sided p {r['diff_p_two_sided']:.3f}, "
            f"95% interval [{lo:+.4f}, {hi:+.4f}]{needed}"
        )
        print(f"{'':16s} A {[round(v, 3) for v in r['a_per_seed']]}")
        print(f"{'':16s} B {[round(v, 3) for v in r['b_per_seed']]}")
    if args.json:
        header = {"seeds": seeds, "a": str(args.a), "b": str(args.b)}
        atomic_write_text(args.json, json.dumps(header | result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
