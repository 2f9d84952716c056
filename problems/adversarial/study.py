"""``bench l2l --grid FILE``: a study of learned-follower configurations against hand-designed
references, judged on the validation split by APGD-CE + APGD-T (Croce & Hein 2020), never on
the test split (each run is a ``solve``, whose ``results.json`` holds its PGD-20 test score; the
study reads none of it).

A grid file is JSON::

    {"base": {"epochs": 10, "eps": 0.3},                 # DROConfig options shared by all runs
     "seeds": [0, 1, 2],                                 # default [0, 1, 2]
     "references": ["fgsm", "pgm-2", "pgm-3", "pgm-5", "pgm-10"],   # the default
     "configs": {"2-step fused": {"follower": "2-step", "update": "fused"}, ...},
     "val_examples": 500}                                # first N validation digits (default all)

Every entry (reference or configuration) trains once per seed with ``solve`` into
``OUT/<entry>/seed-<s>`` (a finished run is reused, so a killed study continues where it
stopped; one with other options than the grid's is refused before anything trains, not
retrained); its best-on-validation leader is then attacked on the validation split. The study
writes ``<name>.json`` (every run), ``<name>.md`` (mean ± std per entry, the winner) and
``<name>.png`` (robust accuracy against training CPU seconds, with the Pareto front). The cost
axis is CPU time (``time.process_time`` over the training loops, all threads of the process):
on a shared machine the wall clock measures the other load as much as the method; wall seconds
are in the table beside it. With ``jobs`` > 1 the runs go to that many worker processes of one
thread each; every figure but the clocks is the same as in one process.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from bilevel.errors import UserError
from bilevel.options import as_written, check_levers, check_seeds, json_fits
from bilevel.paths import check_not_empty
from bilevel.run import RunDir, load_checkpoint
from bilevel.seeding import seeded
from bilevel.workers import map_tasks
from problems.adversarial.bench import HAND_DESIGNED_FOLLOWERS, mean_std
from problems.adversarial.bench_runs import check_run_folder, finished_results, folder_name, train
from problems.adversarial.data import load_dataset, subset
from problems.adversarial.dro_config import DROConfig
from problems.adversarial.evaluation.attacks import predict, run_attack
from problems.adversarial.evaluation.autoattack_adapter import AutoAttackAdapter
from problems.adversarial.evaluation.runs import load_classifier

DEFAULT_REFERENCES = ("fgsm", "pgm-2", "pgm-3", "pgm-5", "pgm-10")
VAL_ATTACK = ("apgd-ce", "apgd-t")
_REFERENCE = re.compile(r"fgsm|none|pgm-(\d+)")
_GRID_KEYS = ("base", "seeds", "references", "configs", "val_examples")
_NOT_LEVERS = ("seed", "device")  # set by the study, not by a grid
_NOT_LEVERS_WHY = 'the study sets them for every run alike (the grid\'s "seeds", and the device)'


@dataclass
class Grid:
    """A parsed grid file (see the module docstring)."""

    name: str
    base: dict[str, Any]
    configs: dict[str, dict[str, Any]]
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    references: list[str] = field(default_factory=lambda: list(DEFAULT_REFERENCES))
    val_examples: int | None = None

    def entries(self) -> dict[str, dict[str, Any]]:
        """Every entry's DROConfig options (the base's, then its own), references first."""
        out = {ref: self.base | reference_options(ref) for ref in self.references}
        return out | {name: self.base | options for name, options in self.configs.items()}


def reference_options(name: str) -> dict[str, Any]:
    """``fgsm`` (FGSM-RS), ``none`` or ``pgm-k`` as DROConfig options."""
    match = _REFERENCE.fullmatch(name)
    if match is None:
        raise UserError(f"Unknown reference {name!r}; use fgsm, none or pgm-K (K >= 1).")
    if match.group(1) is not None:
        return {"follower": "pgm", "pgm_steps": int(match.group(1)), "pgm_step_size": None}
    return {"follower": name}


# every option a grid entry may set, by the name the grid writes it with (its flag is solve's)
_FIELD_NAMES = tuple(f.name for f in fields(DROConfig))


def load_grid(path: Path) -> Grid:
    """Read and check a grid file; anything wrong is one sentence (``UserError``)."""
    check_not_empty(path, "--grid", "file")  # Path("") would be the current folder
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except IsADirectoryError:
        raise UserError(f"--grid {path} is a folder; give a JSON grid file.") from None
    except OSError as err:
        raise UserError(f"--grid {path} cannot be read ({err.strerror}).") from None
    except UnicodeDecodeError as err:  # a binary file, or text in another encoding
        raise UserError(
            f"--grid {path} is not UTF-8 text (byte {err.start}); give a JSON grid file."
        ) from None
    except json.JSONDecodeError as err:
        raise UserError(
            f"--grid {path} is not valid JSON (line {err.lineno}: {err.msg})."
        ) from None
    if not (isinstance(data, dict) and isinstance(data.get("configs"), dict) and data["configs"]):
        raise UserError(f'--grid {path} needs an object with a non-empty "configs" object.')
    unknown = sorted(set(data) - set(_GRID_KEYS))
    if unknown:
        raise UserError(f"--grid {path}: unknown key(s) {unknown}; use {', '.join(_GRID_KEYS)}.")
    grid = Grid(Path(path).stem, **{"base": {}} | data)  # _GRID_KEYS are Grid's fields
    seeds, references = grid.seeds, grid.references
    if not (json_fits(seeds, list[int]) and seeds):
        raise UserError(f'--grid {path}: "seeds" must be a non-empty list of integers.')
    check_seeds(seeds, f'--grid {path}: each of "seeds"')
    if not json_fits(references, list[str]):
        raise UserError(f'--grid {path}: "references" must be a list of names like "pgm-10".')
    if grid.val_examples is not None and not (
        json_fits(grid.val_examples, int) and grid.val_examples >= 1
    ):
        raise UserError(f'--grid {path}: "val_examples" must be an integer >= 1.')
    for name, options in {"base": grid.base, **grid.configs}.items():
        if not isinstance(options, dict):
            raise UserError(f"--grid {path}: entry {name!r} must be an object of options.")
        where = f"--grid {path}, entry {name!r}"
        check_levers(DROConfig, options, where, exclude=_NOT_LEVERS, why=_NOT_LEVERS_WHY)
    entries = grid.entries()
    folders: dict[str, str] = {}  # folder -> the entry that trains in it
    for name in [*grid.references, *grid.configs]:  # an entry named as a reference clashes too
        folder = folder_name(name)
        if not folder or folder in folders:
            clash = f"the same folder as {folders[folder]!r}" if folder else "no folder name"
            raise UserError(
                f"--grid {path}: entry {name!r} gives {clash}; name entries with letters or digits "
                "that differ in more than spaces and punctuation."
            )
        folders[folder] = name
    for name, options in entries.items():  # every value checked before any training
        try:  # a refusal names the grid's keys, not solve's flags
            with as_written(f"--grid {path}, entry {name!r}", _FIELD_NAMES, always=True):
                cfg = DROConfig(**options)
                # an entry's own options as if typed: one its follower does not read is
                # refused; the base's, given to every entry (references too), are not
                cfg.given = frozenset(grid.configs.get(name, {}))
                cfg.resolve()
        except UserError:  # a ValueError too, already one sentence
            raise
        except (TypeError, ValueError) as err:
            raise UserError(
                f"--grid {path}, entry {name!r}: a value has the wrong type ({err})."
            ) from None
    return grid


def validation_robustness(
    run_dir: Path,
    cfg: DROConfig,
    val_examples: int | None,
    checkpoint: Path | None = None,
    by_component: bool = False,
) -> dict[str, Any]:
    """The study's judgement of a run's leader (``best.pt``, or ``checkpoint``): APGD-CE + APGD-T
    accuracy and clean accuracy on the first ``val_examples`` of the validation split, in the
    run's ball, with the attack's randomness drawn from the run's seed; ``by_component`` adds
    ``val_broken_by``, the digits each of the two attacks broke (APGD-T only those APGD-CE
    left)."""
    seed = cfg.seed
    model = load_classifier(run_dir, model_path=checkpoint).model
    val = load_dataset(cfg.dataset, cfg.data_dir).val
    x, y = subset(val, val_examples) if val_examples else val
    attack = AutoAttackAdapter(cfg.eps, VAL_ATTACK, seed=seed, norm=cfg.norm)  # the run's ball
    with seeded(seed):
        robust = run_attack(attack, model, x, y).accuracy
    judged = {
        "val_examples": len(y),
        "val_apgd_ce_t_acc": robust,
        "val_clean_acc": (predict(model, x) == y).float().mean().item(),
    }
    return judged | ({"val_broken_by": attack.broken_counts()} if by_component else {})


def _run_one(options: dict[str, Any], seed: int, run_dir: Path, val_examples: int | None):
    """Train (or reuse) one run and attack its selected leader on the validation split."""
    cfg = DROConfig(**options, seed=seed).resolve()
    # an unfinished run in the folder: the study starts it afresh (``check_run_folders``)
    results = finished_results(cfg, run_dir) or train(cfg, run_dir)
    cached = run_dir / "study-eval.json"
    if cached.is_file():  # reused if it judged as many validation examples as the grid asks
        kept = json.loads(cached.read_text())
        available = len(load_dataset(cfg.dataset, cfg.data_dir).val[1])
        if kept["val_examples"] == min(val_examples or available, available):
            return results, kept
    evaluation = validation_robustness(run_dir, cfg, val_examples) | {
        "best_epoch": int(load_checkpoint(RunDir(run_dir).best_checkpoint)["epoch"]),
    }
    RunDir(run_dir).write_json("study-eval.json", evaluation)
    return results, evaluation


def check_run_folders(tasks: list[tuple[dict[str, Any], int, Path, int | None]]) -> None:
    """One sentence for the first task's folder that holds a finished run (``results.json``) with
    other options than its grid entry's (the study would delete it to train the entry again), or
    whose entry will train from a warm start's folder that holds no last.pt."""
    for options, seed, run_dir, _ in tasks:
        check_run_folder(DROConfig(**options, seed=seed).resolve(), run_dir)


def run_study(grid: Grid, out: Path, results_dir: Path, jobs: int = 1) -> list[dict[str, Any]]:
    """Train and evaluate every entry of ``grid`` for every seed, in ``jobs`` worker processes of
    one thread each (one run, training then validation attack, is one task); write the table,
    the plot and the JSON into ``results_dir``; return one row per entry (means and standard
    deviations). A run's cost is its own process's CPU time, so ``jobs`` changes the wall clock,
    not the cost axis."""
    from problems.adversarial.study_report import write_study

    if jobs < 1:
        raise UserError("--jobs must be at least 1.")
    entries = grid.entries()
    # seed-major: a study stopped early leaves every entry with its first seeds trained
    keys = [(name, seed) for seed in grid.seeds for name in entries]
    tasks = [
        (entries[name], seed, Path(out) / folder_name(name) / f"seed-{seed}", grid.val_examples)
        for name, seed in keys
    ]
    check_run_folders(tasks)  # before anything trains
    finished = dict(zip(keys, map_tasks(_run_one, tasks, jobs), strict=True))
    rows, runs = [], []
    for name, options in entries.items():
        per_seed = []
        for seed in grid.seeds:
            results, evaluation = finished[name, seed]
            # torch_threads: None for runs trained before it was recorded
            timed = ("train_seconds", "train_cpu_seconds", "torch_threads")
            seconds = {k: results.get(k) for k in timed}
            per_seed.append({"seed": seed} | seconds | evaluation)
        runs.append({"entry": name, "options": options, "runs": per_seed})
        row = {
            "entry": name,
            "reference": options.get("follower", "2-step") in HAND_DESIGNED_FOLLOWERS,
        }
        for key in ("val_apgd_ce_t_acc", "val_clean_acc", "train_seconds", "train_cpu_seconds"):
            # runs trained before CPU time was recorded have none: the mean is over those that do
            values = [r[key] for r in per_seed if r[key] is not None]
            std = key.removesuffix("_acc") + "_std"  # val_clean_std, train_seconds_std, ...
            row[key], row[std] = mean_std(values) if values else (None, None)
            row[key.removesuffix("_acc") + "_seeds"] = len(values)  # fewer: the table says so
        rows.append(row)
    pgm10 = next((r for r in rows if r["entry"] == "pgm-10"), None)
    for row in rows:
        for key, ratio in (("train_seconds", "seconds_vs_pgm10"), ("train_cpu_seconds", "cpu_vs_pgm10")):  # fmt: skip
            known = row[key] is not None and pgm10 and pgm10[key]
            row[ratio] = row[key] / pgm10[key] if known else None
    write_study(grid, rows, runs, Path(results_dir))
    return rows
