"""The run folders of ``gail-stability``: whether a folder can give its (follower, seed) run,
read before any run starts (``check_folder``: trained afresh, a finished run reused or an
unfinished one resumed, each only with the options and the demonstrations it was trained on),
and the run itself (``run_one``)."""

from __future__ import annotations

import json

from bilevel.errors import UserError
from bilevel.options import json_fits
from bilevel.recorded import differing_options
from bilevel.run import RunDir, load_checkpoint
from problems.imitation.config import LEGACY_VALUES, GAILConfig
from problems.imitation.solve import solve_gail

RETURN = "val_normalised_return"
FIDELITY = ("val_action_error", "val_action_agreement")  # continuous, discrete actions


def check_folder(cfg: GAILConfig, out: str, digests: frozenset[str]) -> None:
    """One sentence unless the run folder ``out`` can give the run of ``cfg``: empty or missing
    (trained), holding a run of ``cfg``'s options, finished (reused) or not (resumed), or what
    a run that stopped before its first checkpoint leaves (started over). A run's last.pt must
    record one of ``digests`` (``gail.accepted_digests`` of today's demonstrations) where it
    records one: a retrained expert gives new demonstrations under the same options. Reads,
    never writes: every folder is checked before any run starts."""
    run = RunDir(out)
    config = json.loads(json.dumps(cfg.to_dict()))
    finished = (run.path / "results.json").is_file()
    if not (finished or run.last_checkpoint.is_file()):
        run.check_start(config)
        return
    kind, use = ("a finished", "reused") if finished else ("an unfinished", "resumed")
    delete = "delete that folder to train that seed again"
    try:
        old = run.read_recorded()  # this command's own sentence for a file it cannot read
    except UserError:
        old = None
    if old is None:
        raise UserError(
            f"{out} holds {kind} run whose config.json is missing or unreadable, so it cannot "
            f"be {use}; {delete}."
        )
    # as ``RunDir.prepare`` compares a resumed run's, paths included (the demonstrations
    # themselves are compared by their digest, below)
    if diff := differing_options(old, config, LEGACY_VALUES):
        shown = ", ".join(
            f"{k} {v!r} there, {config.get(k)!r} here" for k, v in list(diff.items())[:4]
        )
        raise UserError(
            f"{out} holds {kind} run with other options ({shown}); use another --out or the "
            f"options it was run with, or {delete}."
        )
    if finished and (problem := _metrics_problem(run, cfg.epochs)):
        raise UserError(
            f"{out} holds a finished run with {problem}, so it cannot be reused; {delete}."
        )
    trained_on = _trained_digest(run)
    if trained_on is not None and trained_on not in digests:
        raise UserError(
            f"{out} holds {kind} run trained on other demonstrations (digest {trained_on}; "
            f"was the expert retrained, or the cache changed?), so it cannot be {use}; {delete}."
        )


def _trained_digest(run: RunDir) -> str | None:
    """The digest of the demonstrations a finished run trained on, from its ``last.pt``; None
    where it cannot tell (no readable last.pt, or one older than the digest)."""
    try:
        state = load_checkpoint(run.last_checkpoint)
    except UserError:
        return None
    problem = state.get("trainer", {}).get("problem", {}) if isinstance(state, dict) else {}
    return problem.get("demos_digest") if isinstance(problem, dict) else None


def _metrics_problem(run: RunDir, epochs: int) -> str | None:
    """What is wrong with a finished run's metrics.jsonl, for the summary (which reads every
    epoch's row of every run): None when it holds one whole row, with the normalised return,
    the environment steps and the fidelity, for each of its ``epochs``."""
    if not run.metrics_path.is_file():
        return "no metrics.jsonl"
    try:
        lines = run.metrics_path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return "an unreadable metrics.jsonl"
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not (
            isinstance(row, dict)
            and all(json_fits(row.get(key), float) for key in (RETURN, "env_steps"))
            and any(json_fits(row.get(key), float) for key in FIDELITY)
        ):
            return f"a metrics.jsonl whose line {number} is not a whole row (cut short or edited)"
    if len(lines) != epochs:
        return f"a metrics.jsonl of {len(lines)} rows for its {epochs} epochs"
    return None


def run_one(cfg: GAILConfig, out: str) -> str:
    """The run of ``cfg`` in ``out`` (``check_folder`` accepted it): reused when finished,
    resumed when it has a checkpoint, else trained."""
    run = RunDir(out)
    if not (run.path / "results.json").is_file():
        solve_gail(cfg, out, resume=run.last_checkpoint.is_file(), show_progress=False)
    return out
