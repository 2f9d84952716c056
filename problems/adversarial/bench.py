"""``bench dro``: the core benchmark. Every method trains on mnist5k with the small CNN, ε = 0.3,
the same epochs, for every seed, one after another in this process (so training seconds compare
side by side); each best-on-validation leader is then attacked on the test split with PGD-40
(step 0.01, uniform random start) and, unless ``autoattack`` is off, the standard AutoAttack
(APGD-CE, APGD-T, FAB-T, Square; Croce & Hein 2020). Rows give the mean and standard deviation
over seeds; the evaluations may run in ``jobs`` worker processes, after all training is done.

``norm="l2"`` trains every method in the L2 ball (ε = 1.5 by default, ``solve``'s on mnist5k) and
attacks in it: PGD-L2-40 with step 2.5 ε / 40 (``config.py``'s PGM step) and AutoAttack's L2
version. Every evaluation is in the ball its run was trained in (its ``config.json``'s norm), and
rows of an L2 run name the norm and ε; L∞ rows are as they always were.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from bilevel.errors import UserError
from bilevel.loop import UpdateMode
from bilevel.norms import Norm
from bilevel.options import choose
from bilevel.run import RunDir, atomic_write_text
from bilevel.seeding import seeded
from bilevel.workers import map_tasks
from problems.adversarial.bench_runs import (
    check_run_folder,
    finished_results,
    folder_name,
    train,
    trained_options,
)
from problems.adversarial.checks import check_for_learned
from problems.adversarial.config import FOLLOWERS
from problems.adversarial.data import load_dataset, subset
from problems.adversarial.defaults import dataset_default, madry_step
from problems.adversarial.dro_config import DROConfig
from problems.adversarial.evaluation.attacks import Clean, pgd_attack, robust_accuracy, run_attack
from problems.adversarial.evaluation.autoattack_adapter import STANDARD, AutoAttackAdapter
from problems.adversarial.evaluation.runs import load_classifier

if TYPE_CHECKING:
    from problems.adversarial.study import Grid

BENCH_EPS = 0.3  # L∞; under L2 the data set's (``dataset_default``)
LINF_PGD40_STEP = 0.01  # PGD-40's step in L∞; 2.5 ε / 40 in L2
HAND_DESIGNED_FOLLOWERS = ("none", "fgsm", "pgm")
METRICS = (
    "clean_acc", "pgd40_acc", "cw_pgd40_acc", "autoattack_acc", "apgd_ce_t_acc", "aa_beyond_apgd",
    "train_seconds", "train_cpu_seconds",
)  # fmt: skip
# AutoAttack on the test split: the standard cascade, or its two gradient components alone, which
# broke every example FAB-T and Square did in this project's evaluations at about 1/5 of the time
AA_VERSIONS = {"standard": STANDARD, "apgd-ce-t": ("apgd-ce", "apgd-t")}
AA_KEYS = {"standard": "autoattack_acc", "apgd-ce-t": "apgd_ce_t_acc"}


def pgd40_step(eps: float, norm: Norm | str = Norm.LINF) -> float:
    """PGD-40's step: 0.01 in L∞ (the paper's test attack), 2.5 ε / 40 in L2 (Madry et al.)."""
    return LINF_PGD40_STEP if Norm(norm) is Norm.LINF else madry_step(eps, 40)


def evaluate_leader(
    model: nn.Module, eps: float, test: tuple[torch.Tensor, torch.Tensor], seed: int,
    autoattack: bool, cw: bool = False, aa_version: str = "standard", norm: Norm | str = Norm.LINF,
) -> dict[str, Any]:  # fmt: skip
    """Clean, PGD-40, if asked CW-margin PGD-40, and AutoAttack accuracy (the standard cascade,
    or ``aa_version`` "apgd-ce-t": APGD-CE + APGD-T), all in the ``norm`` ball of radius ε.
    PGD-40's step: 0.01 in L∞, 2.5 ε / 40 in L2 (Madry et al.'s rule, as ``solve`` uses).
    With AutoAttack, ``broken_by_component`` counts the examples each component of the cascade
    broke; under the standard cascade ``aa_beyond_apgd`` is the accuracy FAB-T and Square took
    after the gradient attacks, where a large share would be a sign of gradient masking."""
    norm = Norm(norm)
    step = pgd40_step(eps, norm)
    with seeded(seed):
        pgd = pgd_attack(40, eps, step, norm=norm)  # robust: x and x + δ both right
        row = {
            "clean_acc": robust_accuracy(model, *test, Clean()),
            "pgd40_acc": robust_accuracy(model, *test, pgd),
        }
        if cw:
            cw_pgd = pgd_attack(40, eps, step, "cw", norm=norm)
            row["cw_pgd40_acc"] = run_attack(cw_pgd, model, *test).accuracy
        if autoattack:
            aa = AutoAttackAdapter(eps, AA_VERSIONS[aa_version], seed=seed, norm=norm)
            row[AA_KEYS[aa_version]] = run_attack(aa, model, *test).accuracy
            row["broken_by_component"] = aa.broken_counts()
            if aa_version == "standard":  # what the gradient attacks left to FAB-T and Square
                late = sum(row["broken_by_component"][c] for c in ("fab-t", "square"))
                row["aa_beyond_apgd"] = late / len(test[1])
    return row


def _evaluate_run(
    options: dict[str, Any], run_dir: str, eval_size: int | None, autoattack: bool, cw: bool,
    aa_version: str,
) -> dict[str, Any]:  # fmt: skip
    """One finished run's test row (in this process, or in a worker of ``run_bench``)."""
    # a run folder keeps its test row, so a bench stopped during its (long) evaluations and
    # started again with --reuse evaluates only what is missing; retraining deletes the folder
    asked = {"eval_size": eval_size, "autoattack": autoattack, "cw": cw, "aa": aa_version}
    cached = Path(run_dir) / "bench-eval.json"
    if cached.is_file() and (kept := json.loads(cached.read_text()))["asked"] == asked:
        return kept["row"]
    cfg = DROConfig.from_dict(options)  # dataset, eps, norm and seed are all it needs
    test = load_dataset(cfg.dataset, cfg.data_dir).test
    test = subset(test, eval_size) if eval_size else test
    model = load_classifier(Path(run_dir)).model  # the best-on-validation leader
    row = evaluate_leader(model, cfg.eps, test, cfg.seed, autoattack, cw, aa_version, cfg.norm)
    RunDir(Path(run_dir)).write_json("bench-eval.json", {"asked": asked, "row": row})
    return row


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation over seeds (0 for a single seed)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _summary(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {"method": name, "seeds": len(runs)}
    row |= {k: runs[0][k] for k in ("norm", "eps") if k in runs[0]}  # an L2 entry's ball
    for key in METRICS:
        values = [r[key] for r in runs if r.get(key) is not None]  # older runs lack CPU time
        if values:
            row[key], row[key.removesuffix("_acc") + "_std"] = mean_std(values)
        if 0 < len(values) < len(runs):  # a mean over fewer seeds than the row's "seeds"
            row[key.removesuffix("_acc") + "_seeds"] = len(values)
    return row


def run_bench(
    entries: dict[str, Callable[[int], DROConfig]],
    seeds: list[int],
    out: Path,
    json_path: Path | None = None,
    autoattack: bool = True,
    jobs: int = 1,
    cw: bool = False,
    reference: str | Mapping[str, str] = "pgm",
    reuse: bool = False,
    aa_version: str = "standard",
    ratio_name: str = "pgm10",
) -> list[dict[str, Any]]:
    """Train every entry (a label and its configuration for a seed) for every seed, one after
    another in this process, into ``out/<label>/seed-<s>``; then evaluate every run on the test
    split (in ``jobs`` worker processes); return one row per entry, means and standard
    deviations over seeds, and training seconds ÷ those of the entry labelled ``reference`` (one
    label for every row, or each row's own), as ``ratio_to_<ratio_name>`` and
    ``cpu_ratio_to_<ratio_name>`` (None where the reference is not among the entries).
    With ``reuse``, a finished run of the same configuration already in its folder (e.g. one a
    study trained) is evaluated as it is instead of being trained again; without it, a folder
    holding a finished run is refused before anything trains, never deleted (a finished run of
    other options is refused either way: ``check_run_folder``). ``json_path`` gets the seeds,
    the rows, every run's row and, under "trained", each label's options (``trained_options``)."""
    if not seeds:
        raise UserError("--seeds needs at least one seed, like 0,1,2.")
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1; got {jobs}.")
    if aa_version not in AA_VERSIONS:
        raise UserError(f"--aa must be one of: {', '.join(AA_VERSIONS)}; got {aa_version!r}.")
    configs = {  # every bad option stops the bench before it reads or trains anything
        (label, seed): make(seed).resolve() for label, make in entries.items() for seed in seeds
    }
    run_dirs = {
        (label, seed): Path(out) / folder_name(label) / f"seed-{seed}" for label, seed in configs
    }
    for key, cfg in configs.items():  # before anything trains or is deleted
        check_run_folder(cfg, run_dirs[key], reuse)
    work, runs = [], []
    for (label, seed), cfg in configs.items():
        run_dir = run_dirs[label, seed]
        results = (reuse and finished_results(cfg, run_dir)) or train(cfg, run_dir)
        work.append((cfg.to_dict(), str(run_dir), cfg.eval_size, autoattack, cw, aa_version))
        ball = {} if cfg.norm == Norm.LINF else {"norm": cfg.norm, "eps": cfg.eps}
        runs.append({"method": label, "seed": seed, "update": cfg.update} | ball | {
            k: results.get(k) for k in ("train_seconds", "train_cpu_seconds", "torch_threads")
        })  # fmt: skip
    evaluations = map_tasks(_evaluate_run, work, jobs)
    runs = [run | evaluation for run, evaluation in zip(runs, evaluations, strict=True)]
    rows = [_summary(label, [r for r in runs if r["method"] == label]) for label in entries]
    by_label = {row["method"]: row for row in rows}
    for row in rows:
        label = reference if isinstance(reference, str) else reference.get(row["method"])
        base = by_label.get(label) or {}
        for key, ratio in (("train_seconds", "ratio_to"), ("train_cpu_seconds", "cpu_ratio_to")):
            known = row.get(key) is not None and base.get(key)
            row[f"{ratio}_{ratio_name}"] = round(row[key] / base[key], 3) if known else None
    if json_path is not None:
        # what each row trained, its levers, epochs and sizes among them, resolved (a default
        # changed since shows too): two files' rows of one label compare only where they agree
        trained = {label: trained_options(configs[label, seeds[0]]) for label in entries}
        payload = {"seeds": seeds, "autoattack": autoattack, "rows": rows, "runs": runs,
                   "trained": trained}  # fmt: skip
        atomic_write_text(Path(json_path), json.dumps(payload, indent=2) + "\n")
    return rows


def bench_dro(
    methods: list[str],
    epochs: int,
    seeds: list[int],
    update: str | None,
    out: Path,
    json_path: Path | None = None,
    train_size: int | None = None,
    eval_size: int | None = None,
    autoattack: bool = True,
    jobs: int = 1,
    norm: str = "linf",
    eps: float | None = None,
    aa_version: str = "standard",
    reuse: bool = False,
) -> list[dict[str, Any]]:
    """``run_bench`` over the DRO followers in ``methods`` (learned ones with ``update``, or the
    data set's default update mode when it is None), trained and attacked in the ``norm`` ball of
    radius ``eps`` (default: 0.3 in L∞, the data set's 1.5 in L2)."""
    unknown = [m for m in methods if m not in FOLLOWERS]
    if unknown or not methods:
        raise UserError(f"Unknown --methods {unknown}; choose from: {', '.join(FOLLOWERS)}.")
    if update is not None:  # checked whatever the methods: a hand-designed row never reads it
        choose("--update", update, tuple(m.value for m in UpdateMode))
    learned = any(m not in HAND_DESIGNED_FOLLOWERS for m in methods)
    check_for_learned(update is not None, learned, "--update sets the update mode of")
    if eps is None:
        eps = dataset_default("mnist5k", "eps", norm)  # 0.3 (BENCH_EPS) in L∞, 1.5 in L2

    def entry(method: str) -> Callable[[int], DROConfig]:
        return lambda seed: DROConfig(
            follower=method, epochs=epochs, eps=eps, seed=seed,
            update=None if method in HAND_DESIGNED_FOLLOWERS else update, train_size=train_size,
            eval_size=eval_size, norm=norm,
        )  # fmt: skip

    def label(method: str) -> str:
        if method in HAND_DESIGNED_FOLLOWERS:
            return method
        return f"{method} ({DROConfig(follower=method, update=update).resolve().update})"

    entries = {label(m): entry(m) for m in methods}
    return run_bench(
        entries, seeds, out, json_path, autoattack, jobs, reuse=reuse, aa_version=aa_version
    )


def bench_grid(
    grid: Grid,
    out: Path,
    json_path: Path | None = None,
    autoattack: bool = True,
    jobs: int = 1,
    seeds: list[int] | None = None,
    reuse: bool = False,
    aa_version: str = "standard",
    norm: str | None = None,
    eps: float | None = None,
) -> list[dict[str, Any]]:
    """``run_bench`` over a study grid's entries (``study.load_grid``): the configurations the
    validation study compared, now trained afresh side by side and judged on the test split, each
    in the ball of its own options (a grid sets ``norm`` and ``eps``, not ``norm``/``eps`` here)."""
    if norm is not None or eps is not None:
        raise UserError(
            '--norm and --eps apply without --grid; a grid sets "norm" and "eps" in its "base".'
        )
    entries = {
        name: (lambda seed, options=options: DROConfig(**options, seed=seed))
        for name, options in grid.entries().items()
    }
    return run_bench(
        entries,
        grid.seeds if seeds is None else seeds,
        out,
        json_path,
        autoattack,
        jobs,
        reference="pgm-10",
        reuse=reuse,
        aa_version=aa_version,
    )
