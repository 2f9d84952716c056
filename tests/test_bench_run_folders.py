"""A bench's run folders (``problems/adversarial/bench_runs``), asked directly: their names stay
inside the bench's folder, an unfinished run is never reused, a finished one is refused without
--reuse, a refusal names each option that differs, and what a configuration trains is alike
for each of its seeds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bilevel.errors import UserError
from problems.adversarial.bench_runs import (
    check_run_folder,
    finished_results,
    folder_name,
    trained_options,
)
from problems.adversarial.dro_config import DROConfig


def config(**options) -> DROConfig:
    return DROConfig(**({"train_size": 64, "eval_size": 16, "epochs": 1} | options)).resolve()


def run_folder(tmp_path: Path, cfg: DROConfig, results: dict | None, **recorded) -> Path:
    """A run folder of ``cfg`` (``recorded`` overrides what its config.json holds), finished
    where ``results`` is given."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(cfg.to_dict() | recorded))
    if results is not None:
        (run / "results.json").write_text(json.dumps(results))
    return run


@pytest.mark.parametrize("label", ["..", ".", "../..", " . ", "._", "grad (fused)"])
def test_a_label_is_a_folder_inside_the_benchs_own(tmp_path: Path, label: str) -> None:
    name = folder_name(label)
    assert name not in (".", "..") and not name.startswith((".", "_"))
    assert (tmp_path / name / "seed-0").resolve().is_relative_to(tmp_path.resolve())
    assert folder_name("grad (fused)") == "grad_fused"


def test_an_unfinished_run_of_the_same_options_is_not_reused(tmp_path: Path) -> None:
    cfg = config()
    run = run_folder(tmp_path, cfg, results=None)  # config.json, but no results.json yet
    assert finished_results(cfg, run) is None


def test_a_finished_run_is_refused_without_reuse_and_kept(tmp_path: Path) -> None:
    cfg = config()
    run = run_folder(tmp_path, cfg, results={"test_clean_acc": 0.5})
    with pytest.raises(UserError, match="finished run of this configuration; pass --reuse"):
        check_run_folder(cfg, run, reuse=False)
    check_run_folder(cfg, run, reuse=True)
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "results.json"]


def test_a_refusal_names_each_option_that_differs(tmp_path: Path) -> None:
    run = run_folder(tmp_path, config(), results={})
    with pytest.raises(UserError) as refused:
        check_run_folder(config(epochs=2, lr=0.01), run)
    said = str(refused.value)
    assert "epochs 1 there, 2 here" in said and "lr 0.05 there, 0.01 here" in said, said


def test_what_a_configuration_trains_is_alike_for_each_seed() -> None:
    trained = trained_options(config(seed=0))
    assert "seed" not in trained
    assert trained == trained_options(config(seed=3))
    assert trained != trained_options(config(epochs=2))


def test_a_finished_run_is_reused_whatever_path_its_data_were_read_from(tmp_path: Path) -> None:
    """--data-dir says where data are read from, not what is trained (a resume takes another one,
    the folder seen from elsewhere): a finished run recorded with another path is reused, not
    refused as "other options"; a trained option that differs still is."""
    cfg = config()
    elsewhere = str(tmp_path / "elsewhere" / "data")
    run = run_folder(tmp_path, cfg, results={"test_clean_acc": 0.5}, data_dir=elsewhere)
    check_run_folder(cfg, run, reuse=True)
    assert finished_results(cfg, run) == {"test_clean_acc": 0.5}
    other = config(epochs=2)
    assert finished_results(other, run) is None
    with pytest.raises(ValueError, match="other options \\(epochs 1 there, 2 here\\)"):
        check_run_folder(other, run, reuse=True)


def test_a_bench_reuses_a_finished_run_whose_warm_start_is_gone_and_refuses_a_new_one(
    tmp_path: Path,
) -> None:
    """--attacker-init's folder is read where a run starts afresh: a finished run warm-started
    from a folder since deleted is reused; a run that would train from it is refused."""
    cfg = config(follower="grad", attacker_init=str(tmp_path / "gone"))  # resolves: no check
    check_run_folder(cfg, run_folder(tmp_path, cfg, results={}), reuse=True)
    with pytest.raises(UserError, match="--attacker-init: .*gone holds no last.pt"):
        check_run_folder(cfg, tmp_path / "empty", reuse=True)
