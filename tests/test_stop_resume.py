"""Stops that keep a run: SIGINT and SIGTERM finish the batch, write ``last.pt`` at that batch,
print one line and exit 130 / 143; a run killed mid-write or before its first checkpoint, a full
disk, a NaN, and a damaged ``metrics.jsonl`` all leave a folder that resumes (or restarts) to the
metrics of an unbroken run."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fault_runner import signalling_step
from helpers import metrics_without_time
from typer.testing import CliRunner

from bilevel.loop import JointTrainer
from bilevel.run import RunDir
from cli import app

ROOT = Path(__file__).resolve().parents[1]
# 3 batches per epoch, 2 epochs: step 2 is inside epoch 1, step 5 inside epoch 2
TINY = ["solve", "adversarial-dro", "--follower", "grad", "--train-size", "48", "--eval-size"]
TINY += ["16", "--batch-size", "16", "--epochs", "2", "--eps", "0.1"]
runner = CliRunner()


def solve(out: Path, *extra: str):
    return runner.invoke(app, [*TINY, "--out", str(out), *extra], catch_exceptions=False)


def faulty(fault: str, step: int, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """The same command in a fresh process, with a fault injected (``fault_runner.py``)."""
    args = [sys.executable, "tests/fault_runner.py", fault, str(step), *TINY, "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    return subprocess.run(
        [*args, *extra], cwd=ROOT, capture_output=True, text=True, env=env, timeout=240
    )


def results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def same_as(out: Path, unbroken: Path) -> bool:
    """Every metric of every epoch, and the test table, equal to the unbroken run's."""
    test = {k: v for k, v in results(out).items() if "seconds" not in k}
    reference = {k: v for k, v in results(unbroken).items() if "seconds" not in k}
    return metrics_without_time(out) == metrics_without_time(unbroken) and test == reference


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "unbroken"
    assert solve(out).exit_code == 0
    return out


def signal_before_step(monkeypatch, n: int, *signals: signal.Signals) -> None:
    """This process sends itself ``signals`` just before its ``n``-th training step."""
    monkeypatch.setattr(JointTrainer, "step", signalling_step(JointTrainer.step, n, list(signals)))


def test_sigint_keeps_the_batch_and_resume_ends_as_the_unbroken_run(
    unbroken, tmp_path, monkeypatch
) -> None:
    out = tmp_path / "stopped"
    signal_before_step(monkeypatch, 5, signal.SIGINT)  # arrives in batch 2 of epoch 2
    stopped = solve(out)
    assert stopped.exit_code == 130
    assert stopped.output.strip().splitlines()[-1] == (
        f"Stopped by SIGINT after batch 2 of 3 in epoch 2; {out} keeps last.pt (after batch 2 "
        "of epoch 2), metrics.jsonl (epoch 1) and best.pt; to continue, rerun the same command "
        "with --resume."
    )
    partial = torch.load(out / "last.pt", weights_only=True)["partial"]
    assert (partial["epoch"], partial["batches"]) == (2, 2)
    assert len(RunDir(out).read_metrics()) == 1
    monkeypatch.undo()
    assert solve(out, "--resume").exit_code == 0
    assert same_as(out, unbroken)


def test_a_bare_resume_continues_with_the_options_the_run_recorded(unbroken, tmp_path) -> None:
    out = tmp_path / "bare"
    assert solve(out, "--interrupt-after-epoch", "1").exit_code == 0
    bare = ["solve", "adversarial-dro", "--out", str(out), "--resume"]
    other = runner.invoke(app, [*bare, "--eps", "0.2"])  # a typed option still has to agree
    assert other.exit_code == 2 and "another configuration (eps (0.1 vs 0.2))" in other.output
    resumed = runner.invoke(app, bare, catch_exceptions=False)  # --follower grad, ε 0.1 ...
    assert resumed.exit_code == 0, resumed.output
    assert same_as(out, unbroken)


def test_a_resume_may_name_another_data_dir(unbroken, tmp_path) -> None:
    """--data-dir says where data are read, not what is trained: typed on a resume (the same
    data seen from another working folder) it was refused as another configuration."""
    out = tmp_path / "moved"
    assert solve(out, "--interrupt-after-epoch", "1").exit_code == 0
    args = ["solve", "adversarial-dro", "--out", str(out), "--resume"]
    resumed = runner.invoke(app, [*args, "--data-dir", str(tmp_path)], catch_exceptions=False)
    assert resumed.exit_code == 0, resumed.output
    assert same_as(out, unbroken)
    assert json.loads((out / "config.json").read_text())["data_dir"] == "./data"  # as recorded


def test_a_bare_resume_of_a_hand_designed_run_is_not_refused_its_recorded_levers(tmp_path):
    """config.json records every option resolved, the learned follower's too (a PGM run's at
    their hand-designed values, slim attacker and all): taken from the folder on --resume, they
    are not typed options its follower would ignore."""
    out = tmp_path / "pgm"
    pgm = [*TINY[:2], "--follower", "pgm", "--pgm-steps", "2", *TINY[4:], "--out", str(out)]
    assert runner.invoke(app, [*pgm, "--interrupt-after-epoch", "1"]).exit_code == 0
    recorded = json.loads((out / "config.json").read_text())
    assert recorded["attacker"] == "slim" and recorded["attacker_sign_step"] == 0.0
    bare = ["solve", "adversarial-dro", "--out", str(out), "--resume"]
    resumed = runner.invoke(app, bare, catch_exceptions=False)
    assert resumed.exit_code == 0, resumed.output
    assert len(RunDir(out).read_metrics()) == 2


def test_sigterm_exits_143_with_a_checkpoint_of_the_batch(tmp_path) -> None:
    out = tmp_path / "terminated"
    proc = faulty("SIGTERM", 1, out)
    assert proc.returncode == 143, proc.stderr[-2000:]
    assert proc.stderr.strip() == (
        f"Stopped by SIGTERM after batch 1 of 3 in epoch 1; {out} keeps last.pt (after batch 1 "
        "of epoch 1); to continue, rerun the same command with --resume."
    )
    partial = torch.load(out / "last.pt", weights_only=True)["partial"]
    assert (partial["epoch"], partial["batches"]) == (1, 1)
    assert not (out / "metrics.jsonl").exists()


def test_a_second_sigint_stops_at_once_and_says_what_is_kept(tmp_path, monkeypatch) -> None:
    out = tmp_path / "twice"
    signal_before_step(monkeypatch, 2, signal.SIGINT, signal.SIGINT)  # Ctrl-C, Ctrl-C
    stopped = solve(out)
    assert stopped.exit_code == 130
    line = stopped.output.strip().splitlines()[-1]
    assert line.startswith("Stopped at once by a second SIGINT;")
    assert "holds only config.json" in line and "start over" in line
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["config.json"]


def test_killed_while_writing_a_checkpoint_the_old_one_survives_and_resumes(
    unbroken, tmp_path
) -> None:
    out = tmp_path / "killed"
    proc = faulty("kill-in-checkpoint", 2, out)  # the end of epoch 2's write, cut halfway
    assert proc.returncode == -9
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 1
    assert list(out.glob(".last.pt.*.partial"))  # the half-written file, never renamed
    assert solve(out, "--resume").exit_code == 0
    assert not list(out.glob(".*.partial"))
    assert same_as(out, unbroken)


def test_a_kill_between_last_pt_and_best_pt_is_mended_at_the_resume(unbroken, tmp_path) -> None:
    """last.pt is written first and records the best epoch; a kill before best.pt follows leaves
    last.pt at that epoch, and the resume writes best.pt from it, as the unbroken run holds it."""
    out = tmp_path / "best"
    proc = faulty("kill-before-best", 2, out)  # epoch 2 is the unbroken run's best
    assert proc.returncode == -9
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 2
    assert torch.load(out / "best.pt", weights_only=True)["epoch"] == 1
    assert solve(out, "--resume").exit_code == 0
    best, reference = (torch.load(p / "best.pt", weights_only=True) for p in (out, unbroken))
    assert best["epoch"] == reference["epoch"] == 2
    assert all(torch.equal(best["leader"][k], v) for k, v in reference["leader"].items())


def test_a_resume_rewrites_a_best_pt_that_is_no_checkpoint(unbroken, tmp_path) -> None:
    out = tmp_path / "garbled"
    shutil.copytree(unbroken, out)
    (out / "best.pt").write_bytes(b"not a checkpoint")  # the last epoch is the best one
    assert solve(out, "--resume").exit_code == 0
    best, reference = (torch.load(p / "best.pt", weights_only=True) for p in (out, unbroken))
    assert best["epoch"] == reference["epoch"]
    assert all(torch.equal(best["leader"][k], v) for k, v in reference["leader"].items())


def test_a_run_killed_before_its_first_checkpoint_resumes_afresh(unbroken, tmp_path) -> None:
    out = tmp_path / "early"
    proc = faulty("exit", 2, out)  # os._exit(1) before batch 2 of epoch 1
    assert proc.returncode == 1 and not (out / "last.pt").exists()
    assert solve(out, "--resume").exit_code == 0
    assert same_as(out, unbroken)


def nan_from_step(monkeypatch, n: int) -> None:
    """The training loss is NaN from this process's ``n``-th step on (as a too large lr makes it)."""
    step, count = JointTrainer.step, [0]

    def nan_step(self, batch):
        count[0] += 1
        out = step(self, batch)
        return {k: v * float("nan") for k, v in out.items()} if count[0] >= n else out

    monkeypatch.setattr(JointTrainer, "step", nan_step)


def test_a_plain_rerun_starts_over_after_a_nan_in_epoch_one(tmp_path, monkeypatch) -> None:
    out = tmp_path / "nan"
    nan_from_step(monkeypatch, 1)
    first = solve(out, "--lr", "0.5", "--epochs", "1")
    assert first.exit_code == 2
    assert first.output.strip().splitlines()[-1] == (
        "error: The training loss became NaN or infinite in epoch 1; no checkpoint was written "
        f"yet, so {out} holds only config.json; lower the learning rate or ε and rerun."
    )
    monkeypatch.undo()
    second = solve(out, "--epochs", "1")  # the same --out, other options: it starts over
    assert second.exit_code == 0, second.output
    assert json.loads((out / "config.json").read_text())["lr"] == 0.05


def test_a_nan_after_a_checkpoint_names_the_one_kept(tmp_path, monkeypatch) -> None:
    nan_from_step(monkeypatch, 4)  # epoch 2
    out = tmp_path / "nan2"
    result = solve(out)
    assert result.exit_code == 2
    assert "NaN or infinite in epoch 2" in result.output
    assert "keeps last.pt (end of epoch 1), metrics.jsonl (epoch 1) and best.pt" in result.output
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 1


def test_a_full_disk_is_one_sentence_and_the_old_checkpoint_survives(tmp_path, monkeypatch):
    save, count, before = torch.save, [0], {}
    out = tmp_path / "full"

    def full_disk(obj, f, *args, **kwargs):
        if ".last.pt." in str(getattr(f, "name", "")):
            count[0] += 1
            if count[0] == 2:
                before["last.pt"] = (out / "last.pt").read_bytes()
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    result = solve(out)
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if "error" in line]  # not the bar
    assert len(errors) == 1 and errors[0].startswith(f"error: Could not write {out}/last.pt")
    assert "(No space left on device)" in errors[0] and errors[0].endswith(
        "keeps last.pt (end of epoch 1), metrics.jsonl (epoch 1) and best.pt."
    )
    assert (out / "last.pt").read_bytes() == before["last.pt"]
    assert not list(out.glob(".*.partial"))


def test_a_full_disk_while_rewriting_metrics_or_config_keeps_the_old_file_whole(tmp_path) -> None:
    """metrics.jsonl is rewritten whole at each epoch and config.json at a run's start: a write
    cut short by a full disk (here a file size limit, which fails the write part way, with EFBIG
    where a full disk gives ENOSPC) leaves the file as it was, never a prefix of the new one."""
    run = RunDir(tmp_path)
    run.write_metrics([{"epoch": 1, "loss": 0.5}])
    run.write_json("config.json", {"seed": 0})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    limit = 64  # bytes: above either file as written here, below either rewrite in the child
    child = (
        "import resource, signal, sys\n"
        "from bilevel.run import RunDir\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails; the process lives\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
        "run = RunDir(sys.argv[1])\n"
        "rows = [{'epoch': e, 'loss': 0.5, 'note': 'x' * 40} for e in (1, 2)]\n"
        "for name, write in (('metrics', run.write_metrics), ('config', run.write_json)):\n"
        "    try:\n"
        "        write(rows) if name == 'metrics' else write('config.json', rows[1])\n"
        "    except Exception as err:\n"
        "        print(name, type(err).__name__)\n"
    )
    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-c", child, str(tmp_path)]
    done = subprocess.run(command, cwd=root, text=True, capture_output=True, timeout=120)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before, done.stdout
    assert done.stdout.split("\n") == ["metrics WriteError", "config WriteError", ""], done


def test_a_full_disk_at_the_first_best_pt_says_there_is_none(tmp_path, monkeypatch):
    save, out = torch.save, tmp_path / "full"

    def full_disk(obj, f, *args, **kwargs):
        if ".best.pt." in str(getattr(f, "name", "")):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    result = solve(out)
    assert result.exit_code == 2
    assert result.output.strip().endswith(
        "keeps last.pt (end of epoch 1), metrics.jsonl (epoch 1)."
    ), result.output
    assert not (out / "best.pt").exists()


def test_resume_repairs_a_truncated_metrics_line(unbroken, tmp_path) -> None:
    out = tmp_path / "cut"
    assert solve(out, "--interrupt-after-epoch", "1").exit_code == 0
    text = (out / "metrics.jsonl").read_text()
    (out / "metrics.jsonl").write_text(text[: len(text) // 2])  # a line cut in the middle
    assert solve(out, "--resume").exit_code == 0
    assert same_as(out, unbroken)


def test_metrics_lines_that_are_not_whole_json_objects_are_left_out(tmp_path) -> None:
    """A number or a list on a line (an edit), or a line cut short, is no epoch's row, and the
    curves evaluate and solve gail plot read every row kept as one (mutation round 7 found the
    check unpinned)."""
    run = RunDir(tmp_path)
    lines = ['{"epoch": 1, "loss": 0.5}', "3", "[1, 2]", '"text"', '{"epoch": 2, "lo']
    run.metrics_path.write_text("\n".join(lines) + "\n")
    assert run.read_metrics() == [{"epoch": 1, "loss": 0.5}]


def test_the_signal_handlers_are_given_back_after_training() -> None:
    """After a run, Ctrl-C is the caller's again (a kept handler would swallow it)."""
    import signal

    from bilevel.stopping import StopRequests

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with StopRequests():
        pass
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
