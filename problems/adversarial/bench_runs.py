"""The run folders a bench or study trains into (``out/<label>/seed-<s>``): their names, whether
a finished run in one asks for the same training as a configuration (and may be reused), the
refusal of a finished run of other options, a fresh run under the folder's lock, and what a
configuration trains, as a bench's JSON records it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from bilevel.errors import UserError
from bilevel.recorded import IGNORED_ON_RESUME, READ_FROM_ON_RESUME
from bilevel.run import RunDir
from problems.adversarial.checks import check_warm_start
from problems.adversarial.defaults import LEGACY_VALUES
from problems.adversarial.dro_config import DROConfig
from problems.adversarial.solve import solve


def folder_name(label: str) -> str:
    """A label ("grad (fused)") as a folder name ("grad_fused"); never "." or ".." (dots and
    underscores at either end are dropped), so a run stays inside its study's folder."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", label).strip("_.")


def recorded_differences(cfg: DROConfig, run_dir: Path) -> dict[str, tuple[Any, Any]]:
    """The options ``run_dir``'s config.json records otherwise than ``cfg`` asks, as
    ``{option: (recorded, asked)}`` (the options that may differ on --resume, e.g. the device,
    and the paths data are read from, aside; an option newer than the folder counts as what the
    run did, ``LEGACY_VALUES``, where ``cfg`` has that option: DRO's, such as ``ascent_loss``,
    are no AIT run's)."""
    wanted = cfg.to_dict()
    legacy = {k: v for k, v in LEGACY_VALUES.items() if k in wanted}
    recorded = legacy | RunDir(run_dir).read_config()
    keys = (set(recorded) | set(wanted)) - {*IGNORED_ON_RESUME, *READ_FROM_ON_RESUME}
    pairs = {k: (recorded.get(k), wanted.get(k)) for k in sorted(keys)}
    return {k: pair for k, pair in pairs.items() if pair[0] != pair[1]}


def trained_options(cfg: DROConfig) -> dict[str, Any]:
    """What a resolved ``cfg`` trains, alike for each of its seeds: its options, the seed, those
    that may differ on --resume (a reused run may have trained on another device) and the paths
    data are read from aside."""
    aside = {"seed", *IGNORED_ON_RESUME, *READ_FROM_ON_RESUME}
    return {k: v for k, v in cfg.to_dict().items() if k not in aside}


def finished_results(cfg: DROConfig, run_dir: Path) -> dict[str, Any] | None:
    """The results of a finished run in ``run_dir`` whose config.json asks for the same training
    as ``cfg`` (``recorded_differences``); else None."""
    results_path = run_dir / "results.json"
    if not results_path.is_file() or recorded_differences(cfg, run_dir):
        return None
    return json.loads(results_path.read_text())


def check_run_folder(cfg: DROConfig, run_dir: Path, reuse: bool = True) -> None:
    """One sentence where ``run_dir`` holds a finished run (``results.json``) with other options
    than ``cfg``: reusing runs, a bench or study would delete it to train ``cfg`` again. Without
    ``reuse`` (a bench without --reuse), a finished run of ``cfg``'s own options is refused too,
    never deleted. A run that will train (none to reuse) needs its warm start's folder
    (``check_warm_start``)."""
    if not (run_dir / "results.json").is_file():
        check_warm_start(cfg)
        return
    if differences := recorded_differences(cfg, run_dir):
        # "here": what this bench or study asks, from a grid or from its own options alike
        shown = ", ".join(
            f"{k} {old!r} there, {new!r} here" for k, (old, new) in list(differences.items())[:4]
        )
        raise UserError(
            f"{run_dir} holds a finished run with other options ({shown}); use another "
            "--out or the options it was run with, or delete that folder to train it again."
        )
    if not reuse:
        raise UserError(
            f"{run_dir} holds a finished run of this configuration; pass --reuse to evaluate "
            "it as it is, or delete that folder to train it again."
        )


def train(cfg: DROConfig, run_dir: Path) -> dict[str, Any]:
    """A fresh run of ``cfg`` in ``run_dir`` (a benchmark always starts afresh); a folder another
    process is training in is refused, before anything in it is deleted."""
    cfg.resolve()  # a bad option stops the bench here, before an earlier run is deleted
    check_warm_start(cfg)
    RunDir(run_dir).clear()
    return solve(cfg, run_dir, show_progress=False)
