"""What ``evaluate`` loads from a run folder (``problems.adversarial.evaluation.runs``), without
training: the classifier and which weights it is, the threat model of a run older than --norm,
a --model file's data set, and the run's learned attacker g_φ."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import untrained_dro_run

from bilevel.errors import UserError
from bilevel.norms import Norm
from problems.adversarial.data import dataset_info
from problems.adversarial.dro_config import DROConfig
from problems.adversarial.evaluation.runs import (
    AVERAGE,
    learned_attack_loss,
    load_classifier,
    load_learned_attacker,
    read_config,
    threat_model,
)
from problems.adversarial.followers import build_follower
from problems.adversarial.models import build_model


def test_a_config_json_of_other_bytes_than_text_is_one_sentence(tmp_path: Path) -> None:
    run = untrained_dro_run(tmp_path / "run")
    (run / "config.json").write_bytes(b"\xff\xfe{\x00")
    with pytest.raises(UserError, match="config.json is unreadable; the run folder may be"):
        read_config(run)


@pytest.mark.parametrize("recorded", [{"lr": 0.1}, {}, [1, 2]])
def test_a_config_json_that_names_no_data_set_is_no_run_of_this_project(recorded, tmp_path) -> None:
    """Evaluated, it would attack a small CNN on mnist5k whatever trained best.pt."""
    run = untrained_dro_run(tmp_path / "run")
    (run / "config.json").write_text(json.dumps(recorded))
    with pytest.raises(UserError, match="config.json is not a bilevel-l2l run configuration"):
        load_classifier(run)


def test_the_loaded_classifier_is_in_eval_mode(tmp_path: Path) -> None:
    """Dropout and batch norm as trained would make every attack's score a random draw."""
    assert not load_classifier(untrained_dro_run(tmp_path / "run")).model.training


def test_a_model_file_without_a_config_json_is_built_for_the_dataset_given(tmp_path: Path) -> None:
    info = dataset_info("cifar10")
    model = build_model("small-cnn", info.num_classes, info.in_channels, info.mean, info.std)
    torch.save(model.state_dict(), tmp_path / "cifar.pt")
    loaded = load_classifier(tmp_path / "eval", tmp_path / "cifar.pt", "cifar10", "small-cnn")
    assert loaded.info.name == "cifar10" and loaded.config == {} and loaded.weights == "θ"


def test_only_the_runs_own_best_pt_is_called_the_average(tmp_path: Path) -> None:
    """Under --leader-ema a run's best.pt holds θ̄; a file elsewhere (a copy, another run's), or a
    run without the option, is named θ: nothing says it is an average."""
    averaged = untrained_dro_run(tmp_path / "ema", leader_ema=0.5)
    assert load_classifier(averaged).weights == AVERAGE
    elsewhere = tmp_path / "copy.pt"
    elsewhere.write_bytes((averaged / "best.pt").read_bytes())
    assert load_classifier(averaged, model_path=elsewhere).weights == "θ"
    assert load_classifier(untrained_dro_run(tmp_path / "plain")).weights == "θ"


def test_a_run_older_than_norm_is_attacked_in_its_recorded_linf_ball() -> None:
    config = {"dataset": "mnist5k", "eps": 0.1}  # no "norm": written before the option
    assert threat_model(config, "mnist5k") == (Norm.LINF, 0.1)
    assert threat_model(config, "mnist5k", eps=0.2) == (Norm.LINF, 0.2)  # --eps wins
    assert threat_model({}, "mnist5k", "l2") == (Norm.L2, 1.5)  # the data set's L2 ε


def _learned_run(folder: Path, **recorded) -> Path:
    """An untrained L2L run (the 2-step RNN) with a last.pt holding its g_φ."""
    run = untrained_dro_run(folder, follower="2-step", **recorded)
    config = DROConfig.as_trained(json.loads((run / "config.json").read_text()))
    follower = build_follower(config, dataset_info("mnist5k"), warm_start=False)
    torch.save({"trainer": {"follower": follower.state_dict()}}, run / "last.pt")
    return run


def test_the_learned_attacker_loads_in_eval_mode_without_its_warm_start(tmp_path: Path) -> None:
    """g_φ comes from the run's own last.pt: the --attacker-init folder it was warm-started from
    is not read (by evaluation time it may hold a run of a hand-designed follower, and no g_φ)."""
    init = tmp_path / "init"
    init.mkdir()
    torch.save({"trainer": {"follower": None}}, init / "last.pt")
    run = _learned_run(tmp_path / "run", attacker_init=str(init))
    follower = load_learned_attacker(run)
    assert follower.steps == 2 and not follower.net.training
    assert learned_attack_loss(run) == "ce"


def test_a_last_pt_without_an_attacker_is_one_sentence(tmp_path: Path) -> None:
    run = _learned_run(tmp_path / "run")
    torch.save({"trainer": {}}, run / "last.pt")
    with pytest.raises(UserError, match="holds no attacker that fits the run's configuration"):
        load_learned_attacker(run)
