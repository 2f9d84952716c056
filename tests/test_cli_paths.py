"""Every command checks its paths and counts the same way: a file where a folder belongs, a
folder that cannot be written, ``--resume`` into a read-only run, and a count below 1 are each one
sentence with exit code 2, before anything is read, trained or written; two processes never train
into one folder; and the help shows every default."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from helpers import held_lock
from typer.testing import CliRunner

from bilevel.files import atomic_write_text
from bilevel.loop import JointTrainer
from bilevel.run import LOCK_NAME, RunDir
from cli import app
from problems.imitation import ppo_expert

ROOT = Path(__file__).resolve().parents[1]
GAIL = ["--steps", "600", "--n-envs", "1", "--n-steps", "200", "--eval-episodes", "1"]
runner = CliRunner()


def run_cli(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def one_sentence(result, words: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert words in result.output, result.output


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# (command, option): the option of that command that names a folder it writes into
OUT_FOLDERS = [
    (["solve", "adversarial-dro"], "--out"),
    (["solve", "adversarial-ait"], "--out"),
    (["solve", "gail", *GAIL], "--out"),
    (["bench", "dro"], "--out"),
    (["bench", "ait"], "--out"),
    (["gail-stability"], "--out"),
    (["gail-stability"], "--cache-dir"),
    (["bench", "l2l", "--grid", ROOT / "benchmarks/l2l/final.json"], "--out"),
    (["bench", "l2l", "--grid", ROOT / "benchmarks/l2l/final.json"], "--results"),
    (["expert", "train", "--env", "MountainCar-v0"], "--cache-dir"),
    (["solve", "adversarial-dro"], "--data-dir"),
    (["solve", "adversarial-ait"], "--data-dir"),
    (["solve", "gail", *GAIL], "--cache-dir"),
]


@pytest.mark.parametrize(("command", "option"), OUT_FOLDERS)
def test_a_file_where_a_folder_belongs_is_one_sentence(tmp_path, command, option) -> None:
    (tmp_path / "a-file").write_text("mine\n")
    before = snapshot(tmp_path)
    one_sentence(run_cli(*command, option, tmp_path / "a-file"), "is a file")
    one_sentence(run_cli(*command, option, tmp_path / "a-file" / "run"), "is a file")
    assert snapshot(tmp_path) == before


def _tripwire(*args, **kwargs):
    raise AssertionError("trained after all")


EMPTY = [*OUT_FOLDERS, *[(["bench", b], "--json") for b in ("dro", "ait", "speed")]]


@pytest.mark.parametrize(("command", "option"), [*EMPTY, (["evaluate"], "RUN_DIR")])
def test_an_empty_path_is_one_sentence_not_the_current_folder(
    tmp_path, monkeypatch, command, option
) -> None:
    """``Path("")`` is ".": ``--out ''`` trained into the current folder. Every path option of the
    shared check refuses "" before anything is read, trained (the wire) or written."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(JointTrainer, "step", _tripwire)
    monkeypatch.setattr(ppo_expert, "train_expert", _tripwire)
    args = [*command, ""] if option == "RUN_DIR" else [*command, option, ""]
    one_sentence(run_cli(*args), f"error: {option} is empty; give a")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("option", ["--surrogate", "--attacker-from", "--model", "--compare"])
def test_an_empty_path_of_evaluate_is_one_sentence_not_the_current_folder(
    tmp_path, monkeypatch, option
) -> None:
    """evaluate's other paths name runs or a checkpoint to read: "" would read the current folder
    (a run there is attacked, compared or loaded in its stead); refused before the run is read."""
    monkeypatch.chdir(tmp_path)
    one_sentence(
        run_cli("evaluate", "no-such-run", option, ""), f"error: {option} is empty; give a"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["bench", "dro"], ["bench", "ait"], ["bench", "speed"]])
def test_a_json_path_that_cannot_be_a_file_is_one_sentence(tmp_path, command) -> None:
    (tmp_path / "a-file").write_text("mine\n")
    before = snapshot(tmp_path)
    out = ["--out", tmp_path / "runs"] if command[1] != "speed" else []
    one_sentence(run_cli(*command, *out, "--json", tmp_path), "is a folder")
    one_sentence(
        run_cli(*command, *out, "--json", tmp_path / "a-file" / "t.json"),
        "cannot be written, since",
    )
    assert snapshot(tmp_path) == before


def test_evaluate_into_a_file_is_one_sentence(tmp_path) -> None:
    (tmp_path / "a-file").write_text("mine\n")
    one_sentence(run_cli("evaluate", tmp_path / "a-file"), "not a folder")
    assert (tmp_path / "a-file").read_text() == "mine\n"


@pytest.fixture
def read_only(tmp_path):
    """A folder this test's user cannot write; root, whom permissions do not stop, runs the
    command as ``nobody`` instead (``cli`` below)."""
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        yield folder
        folder.chmod(0o755)
        return
    top = Path(tempfile.mkdtemp(prefix="bilevel-ro-"))  # not under pytest's 0700 tmp folder
    top.chmod(0o755)
    yield top
    shutil.rmtree(top)


AS_NOBODY = """
import contextlib, io, os, sys
from cli import app  # imported as root: the interpreter lives under /root, which nobody may read
import problems.adversarial.solve  # what solve imports once it runs
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    app(args=[*sys.argv[1:3], "--help"], prog_name="cli.py")  # and what typer imports lazily
os.setgroups([]); os.setgid(65534); os.setuid(65534)  # from here on, an ordinary user
app(args=sys.argv[1:], prog_name="cli.py")
"""


def cli_as_other_user(*args: object) -> tuple[int, str]:
    """``cli.py ARGS`` as a user who may not write root's folders (root: as nobody)."""
    if os.geteuid() != 0:
        result = run_cli(*args)
        return result.exit_code, result.output
    proc = subprocess.run(
        [sys.executable, "-c", AS_NOBODY, *map(str, args)], cwd=ROOT, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize(("command", "option"), [
    (["solve", "adversarial-dro"], "--out"),
    (["solve", "gail", *GAIL], "--out"),
    (["bench", "dro"], "--out"),
    (["solve", "adversarial-dro", "--dataset", "cifar10"], "--data-dir"),  # a download to write
])  # fmt: skip
def test_an_unwritable_folder_is_one_sentence(read_only, command, option) -> None:
    writable = read_only / "writable"
    writable.mkdir(mode=0o777)
    writable.chmod(0o777)
    if os.geteuid() != 0:
        read_only.chmod(0o555)
    out = ["--out", writable / "run"] if option != "--out" else []
    code, output = cli_as_other_user(*command, *out, option, read_only / "sub")
    assert code == 2 and "Traceback" not in output
    assert output.strip().startswith(f"error: {option} {read_only / 'sub'} is not writable")
    assert len(output.strip().splitlines()) == 1
    assert [p.name for p in read_only.iterdir()] == ["writable"] and not any(writable.iterdir())


def test_resume_into_a_read_only_run_is_one_sentence_and_changes_nothing(read_only) -> None:
    (read_only / "config.json").write_text('{"follower": "grad"}\n')
    (read_only / "last.pt").write_bytes(b"a checkpoint")
    before = snapshot(read_only)
    if os.geteuid() != 0:
        read_only.chmod(0o555)
    code, output = cli_as_other_user("solve", "adversarial-dro", "--out", read_only, "--resume")
    assert code == 2 and "not writable" in output and "Traceback" not in output
    assert snapshot(read_only) == before


COUNTS = [
    *[(["solve", "adversarial-dro"], o) for o in ("--epochs", "--batch-size")],
    (["solve", "adversarial-dro", "--follower", "pgm"], "--pgm-steps"),  # PGM-k's k
    *[(["solve", "adversarial-dro"], o) for o in ("--follower-steps", "--train-size", "--eval-size")],
    *[(["solve", "adversarial-ait"], o) for o in ("--epochs", "--eval-size")],
    *[(["bench", "dro"], o) for o in ("--epochs", "--train-size", "--eval-size")],
    (["bench", "ait"], "--epochs"),
    *[(["bench", "speed"], o) for o in ("--batch-size", "--batches", "--rounds")],
    *[(["evaluate", "{tmp}"], o) for o in ("--n-examples", "--restarts", "--batch-size")],
    *[(["solve", "gail", *GAIL], o) for o in ("--steps", "--n-envs", "--test-episodes")],
    *[(["gail-stability"], o) for o in ("--seeds", "--jobs", "--steps")],
    (["expert", "train", "--env", "MountainCar-v0"], "--steps"),
]  # fmt: skip


BENCHES = (["bench", "dro"], ["bench", "ait"])


@pytest.mark.parametrize("value", ["0", "-5"])
@pytest.mark.parametrize(("command", "option"), COUNTS)
def test_every_count_is_at_least_one_in_every_command(tmp_path, command, option, value) -> None:
    command = [str(tmp_path) if a == "{tmp}" else a for a in command]
    writes_a_run = command[0] in ("solve", "gail-stability") or command[:2] in BENCHES
    out = ["--out", str(tmp_path / "out")] if writes_a_run else []
    cache = ["--cache-dir", str(tmp_path / "cache")] if command[0] == "expert" else []
    result = run_cli(*command, *out, *cache, option, value)
    one_sentence(result, option)
    least = 2 if command[0] == "gail-stability" and option == "--seeds" else 1  # runs compared
    assert f"at least {least}" in result.output
    assert list(tmp_path.iterdir()) == []  # nothing made, nothing trained


def test_a_second_process_on_the_same_out_is_refused_until_the_first_dies(tmp_path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    args = ["solve", "adversarial-dro", "--follower", "none", "--train-size", "16"]
    args += ["--eval-size", "8", "--batch-size", "16", "--epochs", "1", "--out", out]
    with held_lock(out) as pid:  # another run's process, killed at the end of the block
        before = snapshot(out)
        one_sentence(run_cli(*args), f"is in use by pid {pid}")
        assert snapshot(out) == before
    assert run_cli(*args).exit_code == 0  # the dead process does not block the folder


def test_a_folder_locked_by_another_runs_own_lock_is_refused(tmp_path) -> None:
    """As above, but the other process takes the lock as a second `solve` on the same --out
    does, with RunDir.lock (held_lock takes it exclusively whatever RunDir does): two shared
    locks would both be granted, and both runs would train into one folder."""
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from bilevel.run import RunDir; "
         "RunDir(sys.argv[1]).lock(); print('held', flush=True); sys.stdin.read()", str(out)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        args = ["solve", "adversarial-dro", "--follower", "none", "--train-size", "16"]
        args += ["--eval-size", "8", "--batch-size", "16", "--epochs", "1", "--out", out]
        before = snapshot(out)
        one_sentence(run_cli(*args), "is in use by another process")  # no owner line: not _claim's
        assert snapshot(out) == before
    finally:
        holder.kill()
        holder.wait()


def test_clearing_a_folder_keeps_its_lock_so_no_other_process_can_take_the_folder(tmp_path) -> None:
    """``RunDir.clear`` (bench's retrain of a run) deletes the folder's files but not ``.lock``:
    deleting it while held would let a second process create a new lock file and lock that, and
    both would then train into one folder."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text("{}\n")
    (out / "plots").mkdir()
    RunDir(out).clear()
    try:
        assert [p.name for p in out.iterdir()] == [LOCK_NAME]
        probe = subprocess.run(
            [sys.executable, "-c", "import sys\nfrom bilevel.errors import UserError\n"
             "from bilevel.run import RunDir\ntry:\n    RunDir(sys.argv[1]).lock()\n"
             "except UserError:\n    print('refused')\nelse:\n    print('taken')", str(out)],
            capture_output=True, text=True, cwd=ROOT, check=True,
        )  # fmt: skip
        assert probe.stdout.strip() == "refused"
    finally:
        RunDir(out).release()


def test_files_get_the_umask_mode_not_a_private_one(tmp_path) -> None:
    for umask in (0o022, 0o002):
        old = os.umask(umask)
        try:
            atomic_write_text(tmp_path / f"f{umask}", "x")
        finally:
            os.umask(old)
        assert stat.S_IMODE((tmp_path / f"f{umask}").stat().st_mode) == 0o666 & ~umask


def test_a_file_and_then_its_folder_are_synced_so_the_rename_survives_a_power_cut(
    tmp_path, monkeypatch
) -> None:
    synced: list[tuple[bool, int]] = []  # (is a folder, inode) of every descriptor synced
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        st = os.fstat(fd)
        synced.append((stat.S_ISDIR(st.st_mode), st.st_ino))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    atomic_write_text(tmp_path / "results.json", "{}")
    folder = (True, tmp_path.stat().st_ino)
    assert folder in synced
    assert synced.index(folder) > 0  # after the file's own sync: the rename is what it keeps
    assert not synced[0][0]


def test_help_shows_every_default_and_a_no_compile_form() -> None:
    text = " ".join(run_cli("solve", "adversarial-dro", "--help").output.replace("│", " ").split())
    for words in ("default: slim on mnist5k", "default: 0.0625 mnist5k", "1/2 and 3/4 of"):
        assert words in text, words
    assert "--no-compile" in text
