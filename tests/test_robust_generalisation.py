"""benchmarks/robust_generalisation.py: the robust generalisation gap at the selected epoch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import load_script


def load_benchmark():
    return load_script("benchmarks", "robust_generalisation")


def write_run(folder: Path, best: int, probe_pgd: list[float], val_pgd: list[float]) -> None:
    folder.mkdir(parents=True)
    rows = [
        {"epoch": e + 1, "gap_probe_clean_acc": 0.99, "gap_probe_pgd10_acc": p,
         "val_clean_acc": 0.96, "val_pgd10_acc": v}
        for e, (p, v) in enumerate(zip(probe_pgd, val_pgd, strict=True))
    ]  # fmt: skip
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "results.json").write_text(json.dumps({"best_epoch": best}))


def test_the_gap_is_read_at_the_epoch_selected_on_validation(tmp_path, capsys) -> None:
    script = load_benchmark()
    write_run(tmp_path / "a", best=2, probe_pgd=[0.5, 0.9, 0.95], val_pgd=[0.4, 0.8, 0.7])
    write_run(tmp_path / "b", best=3, probe_pgd=[0.5, 0.9, 0.96], val_pgd=[0.4, 0.8, 0.86])
    a = script.selected_epoch(tmp_path / "a")
    assert a["epoch"] == 2 and a["robust_gap"] == pytest.approx(0.1)  # not the last epoch's 0.25
    script.main([str(tmp_path / "a"), str(tmp_path / "b")])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == "| mean of 2 | | 0.990 | 0.930 | 0.960 | 0.830 | 0.100 |"


def test_a_run_without_the_instrument_is_one_sentence(tmp_path) -> None:
    script = load_benchmark()
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "val_pgd10_acc": 0.8}) + "\n")
    (folder / "results.json").write_text(json.dumps({"best_epoch": 1}))
    with pytest.raises(SystemExit, match="no gap_probe_clean_acc"):
        script.selected_epoch(folder)


@pytest.mark.parametrize("script", ["apgd_share", "square_share"])
def test_the_attack_probes_refuse_a_folder_that_is_not_a_run_in_one_line(tmp_path, script) -> None:
    """The probes of finished runs share robust_generalisation's command line: a folder that is
    not a run is one ``error:`` line and exit code 2, and rows already probed stay in --json."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "rows.json"
    done = subprocess.run(
        [sys.executable, str(root / "benchmarks" / f"{script}.py"), str(tmp_path / "none"),
         "--json", str(out)],
        capture_output=True, text=True, cwd=root, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error:") and done.stderr.count("\n") == 1
    assert not out.exists()  # nothing probed, nothing written
