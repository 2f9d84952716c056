"""Load what an evaluation attacks and attacks with from run folders: the selected classifier
(``best.pt``, or a plain state-dict file given with ``--model``), an L2L run's learned attacker
g_φ (rebuilt from its ``config.json`` and loaded from ``last.pt``, the state at the last epoch),
and the threat model the run was trained against: its ε-ball, ‖δ‖ ≤ ε in L∞ or L2.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bilevel.errors import UserError
from bilevel.learned_follower import LearnedFollower
from bilevel.norms import Norm
from bilevel.options import choose
from bilevel.recorded import blame_recorded, check_recorded
from bilevel.run import RunDir, load_checkpoint
from problems.adversarial.ait_config import AITConfig
from problems.adversarial.config import LEARNED, NORMS
from problems.adversarial.data import DatasetInfo, dataset_info
from problems.adversarial.defaults import LEGACY_VALUES, check_eps, dataset_default
from problems.adversarial.dro_config import DROConfig
from problems.adversarial.followers import build_follower
from problems.adversarial.models import build_model


@dataclass
class LoadedModel:
    """A classifier in eval mode with the data set it was trained on."""

    model: nn.Module
    info: DatasetInfo
    config: dict[str, Any]  # the run's config.json ({} for a plain checkpoint)
    checkpoint: Path
    weights: str = "θ"  # or AVERAGE: θ̄, the --leader-ema average


def read_config(run_dir: Path) -> dict[str, Any]:
    """A run folder's ``config.json``; a missing folder or file is one sentence."""
    path = RunDir(run_dir).config_path
    if not Path(run_dir).is_dir():
        raise UserError(f"{run_dir} is not a folder; pass a run folder written by `solve`.")
    if not path.is_file():
        raise UserError(
            f"{run_dir} is not a run folder (no config.json); train one with `solve "
            "adversarial-dro` or evaluate a plain checkpoint with --model."
        )
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, OSError, UnicodeDecodeError):
        raise UserError(f"{path} is unreadable; the run folder may be damaged.") from None
    if isinstance(config, dict) and _gail_run(config):
        raise UserError(
            f"{run_dir} is a GAIL run (solve gail), and evaluate attacks adversarial runs (solve "
            "adversarial-dro or adversarial-ait); a GAIL run's test returns are in its report.md."
        )
    if not isinstance(config, dict) or "dataset" not in config:
        raise UserError(f"{path} is not a bilevel-l2l run configuration.")
    check_recorded((DROConfig, AITConfig), config, path)
    return config


def _gail_run(config: dict[str, Any]) -> bool:
    """Whether a run folder's configuration is one ``solve gail`` wrote: a gymnasium ``env`` and
    a discriminator, no data set."""
    return "dataset" not in config and {"env", "disc_hidden"} <= set(config)


def run_config(run_dir: Path) -> DROConfig:
    """The resolved configuration the run trained with (``as_trained``); a recorded value that
    an option's check refuses is one sentence naming ``config.json`` and the key."""
    config = read_config(run_dir)
    with blame_recorded(config, RunDir(run_dir).config_path, "fix it there"):
        return DROConfig.as_trained(config)


AVERAGE = "θ̄, the --leader-ema average"
"""``LoadedModel.weights`` of a run that averaged its leader; θ otherwise."""


def leader_state(state: dict[str, Any]) -> dict[str, Any]:
    """The leader's state dict in a file of this project, as ``best.pt`` holds it: the selected
    leader ({"leader": state}); from the training checkpoint ``last.pt``, θ̄ where the run kept a
    ``--leader-ema`` average (the trainer's ``leader_average``, an ``AveragedModel`` state whose
    ``module.`` entries are θ̄), θ as last trained otherwise; or the file itself when it is a plain
    state dict. θ̄ because it is what such a run validates, selects and tests: last.pt's raw θ
    beside best.pt's θ̄ would measure averaging as well as the epoch."""
    trainer = state.get("trainer")
    if (average := _leader_average(state)) is not None:
        prefix = "module."
        return {k.removeprefix(prefix): v for k, v in average.items() if k.startswith(prefix)}
    if isinstance(trainer, dict) and isinstance(trainer.get("leader"), dict):
        return trainer["leader"]
    return state.get("leader", state)


def _leader_average(state: dict[str, Any]) -> dict[str, Any] | None:
    """A training checkpoint's ``leader_average`` (θ̄'s ``AveragedModel`` state), or None."""
    trainer = state.get("trainer")
    average = trainer.get("leader_average") if isinstance(trainer, dict) else None
    return average if isinstance(average, dict) else None


def _weights(state: dict[str, Any], checkpoint: Path, run_dir: Path, config: dict) -> str:
    """Which leader a file holds, in words, as ``leader_state`` takes it: θ̄ for a last.pt with
    an average, and for the run's own best.pt when its config.json records --leader-ema; θ for
    anything else."""
    if isinstance(state.get("trainer"), dict):
        return AVERAGE if _leader_average(state) is not None else "θ"
    own_best = checkpoint.resolve() == RunDir(run_dir).best_checkpoint.resolve()
    return AVERAGE if own_best and config.get("leader_ema") else "θ"


def _fit(model: nn.Module, state: dict[str, Any], source: Path, remedy: str) -> None:
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as err:
        raise UserError(
            f"{source} does not fit the model {type(model).__name__} "
            f"({type(err).__name__}); {remedy}."
        ) from None


def _fit_remedy(run_dir: Path, config: dict[str, Any], model_path: Path | None) -> str:
    """What to do when the checkpoint does not fit the model built for it: --arch and --dataset
    choose the model only for a --model file evaluated where no config.json is."""
    if model_path is None:
        return (
            f"best.pt should hold the model {RunDir(run_dir).config_path} names, so the run "
            "folder may be damaged: retrain the run"
        )
    if config:
        return (
            f"the model is the one {RunDir(run_dir).config_path} names (--arch and --dataset "
            "apply only where no config.json is), so pass a checkpoint of that run, or evaluate "
            "the file into another folder with --arch and --dataset"
        )
    return "pass the right --arch and --dataset"


def load_classifier(
    run_dir: Path,
    model_path: Path | None = None,
    dataset: str | None = None,
    arch: str | None = None,
    device: torch.device | str = "cpu",
) -> LoadedModel:
    """The run's selected leader θ (``best.pt``); with ``model_path``, that state dict instead,
    with architecture and data set from the run's config when there is one, else from
    ``arch``/``dataset`` (mnist5k unless given), which are refused where a config.json names the
    model (they would be ignored). This project's checkpoints work too: ``best.pt`` ({"leader":
    state}) and the training checkpoint ``last.pt`` ({"trainer": {"leader": state, ...}}: θ as
    last trained, or θ̄ where the run kept a ``--leader-ema`` average; ``leader_state``).
    """
    if model_path is None:
        config = read_config(run_dir)
        checkpoint = RunDir(run_dir).best_checkpoint
    else:
        config = read_config(run_dir) if RunDir(run_dir).config_path.is_file() else {}
        checkpoint = Path(model_path)
    if config and (arch is not None or dataset is not None):
        raise UserError(
            "--arch and --dataset apply only where no config.json is; "
            f"{RunDir(run_dir).config_path} names the model and the data set, so leave them out."
        )
    info = dataset_info(config.get("dataset", dataset or "mnist5k"))
    name = config.get("model") or arch or dataset_default(info.name, "model")
    model = build_model(name, info.num_classes, info.in_channels, info.mean, info.std)
    state = load_checkpoint(checkpoint)
    _fit(model, leader_state(state), checkpoint, _fit_remedy(run_dir, config, model_path))
    weights = _weights(state, checkpoint, run_dir, config)
    return LoadedModel(model.to(device).eval(), info, config, checkpoint, weights)


def threat_model(
    config: dict[str, Any], dataset: str, norm: str | None = None, eps: float | None = None,
    source: Path | str = "the run",
) -> tuple[Norm, float]:  # fmt: skip
    """The ball {δ : ‖δ‖ ≤ ε} an evaluation attacks in: the run's recorded ``norm`` (L∞ for a run
    older than ``--norm``, ``LEGACY_VALUES``) and, unless ``eps`` is given, its ε. A plain model
    file has no ``config`` ({}): ``norm`` or L∞, ``eps`` or the data set's ε for that norm
    (``dataset_default``). A ``norm`` that contradicts the run's is one sentence: a run is attacked
    in the ball it was trained against. ε ∈ (0, 1] under L∞ (a larger ε allows any image),
    ε ∈ (0, √(C·H·W)] under L2 (the images' diameter)."""
    if norm is not None:
        choose("--norm", norm, NORMS)
    taken = {}  # the values read from the run's config.json: a refusal of one names the file
    if config:
        recorded = taken["norm"] = config.get("norm", LEGACY_VALUES["norm"])
        with blame_recorded(taken, RunDir(source).config_path, "fix it there"):
            choose("--norm", recorded, NORMS)
        if norm is not None and norm != recorded:
            raise UserError(
                f"{source} was trained in the {recorded} ball, so evaluate attacks it there; "
                f"leave out --norm or give --norm {recorded}."
            )
        norm = recorded
    ball = Norm(norm or Norm.LINF.value)
    if eps is None and config.get("eps") is not None:
        eps = taken["eps"] = config["eps"]
    with blame_recorded(taken, RunDir(source).config_path, "fix it there or give --eps"):
        default = dataset_default(dataset, "eps", ball.value)  # only where none is given
        return ball, check_eps(default if eps is None else eps, ball, dataset_info(dataset).pixels)


def learned_attack_loss(run_dir: Path) -> str:
    """The attack loss whose gradient the run's g_φ was trained on: ``cw`` for a run of
    ``--ascent-loss margin``, ``ce`` otherwise (and for folders older than the option)."""
    margin = run_config(run_dir).ascent_loss == "margin"
    return "cw" if margin else "ce"


def load_learned_attacker(run_dir: Path, device: torch.device | str = "cpu") -> LearnedFollower:
    """An L2L run's g_φ (``LearnedFollower``) from ``last.pt``; a run with a hand-designed
    follower has none, which is one sentence."""
    follower_name = read_config(run_dir).get("follower")  # before run_config: an AIT run's
    if follower_name not in LEARNED:  # "ait" is no follower DROConfig knows, yet a valid value
        raise UserError(
            f"{run_dir} was trained with --follower {follower_name}, which has no learned "
            f"attacker; pick a run trained with one of: {', '.join(LEARNED)}."
        )
    cfg = run_config(run_dir)
    follower = build_follower(cfg, dataset_info(cfg.dataset), warm_start=False)
    state = load_checkpoint(RunDir(run_dir).last_checkpoint)
    try:
        follower.load_state_dict(state["trainer"]["follower"])
    except (RuntimeError, KeyError, TypeError) as err:
        raise UserError(
            f"{RunDir(run_dir).last_checkpoint} holds no attacker that fits the run's "
            f"configuration ({type(err).__name__}); the run folder may be damaged."
        ) from None
    return follower.to(device).eval()
