"""A run is a folder: ``config.json``, ``metrics.jsonl``, checkpoints, ``report.md`` and plots.

Every write is atomic (``bilevel.files``). One process at a time trains into a folder: ``prepare``
takes an advisory lock on ``<folder>/.lock`` (``flock``), which the kernel drops when the process
ends, however it ends, so a killed run never leaves the folder blocked. A folder that holds a
``config.json`` but no ``last.pt`` (a run that stopped before its first checkpoint: a NaN or a kill
in epoch 1) holds nothing to keep: a plain rerun starts over in it, and ``--resume`` starts it
afresh from the same options. A run without ``last.pt`` starts only in such a folder or an empty
one: anything else there (a finished or evaluated run's files once ``last.pt`` is gone, a
``config.json`` that is no run's, a file of the user's) is named in one sentence and kept.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from typing import IO, Any

import torch

from bilevel.errors import UserError
from bilevel.files import PARTIAL_SUFFIX, atomic_write_text, is_cut_write, write_error
from bilevel.files import atomic_torch_save as atomic_torch_save  # re-exported, as are the next
from bilevel.files import atomic_write_bytes as atomic_write_bytes
from bilevel.files import atomic_write_figure as atomic_write_figure
from bilevel.files import new_figure as new_figure
from bilevel.paths import check_output_folder
from bilevel.recorded import IGNORED_ON_RESUME, READ_FROM_ON_RESUME, differing_options

try:
    import fcntl
except ImportError:  # not POSIX: no lock
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"
_HELD: dict[Path, IO[str]] = {}  # folders this process holds the lock of


def json_text(obj: Any) -> str:
    """A run folder's JSON files as ``RunDir.write_json`` writes them: indented, keys sorted."""
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def load_checkpoint(path: Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)``; a missing, corrupt or foreign file is a ``UserError``."""
    if not path.is_file():
        raise UserError(f"No checkpoint at {path}; train a run first or check the path.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    # a damaged file fails in the unpickler with whichever error its bytes lead to (KeyError,
    # IndexError, struct.error, ...): every ordinary exception means "not readable" here
    except Exception as err:
        raise UserError(
            f"{path} is not a readable checkpoint ({type(err).__name__}); "
            "it may be corrupt or from another program: retrain or pick another file."
        ) from None
    if not isinstance(state, dict):
        raise UserError(f"{path} is not a bilevel-l2l checkpoint; pick a file this project wrote.")
    return state


def _same_file(handle: IO[str], path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except OSError:
        return False


class RunDir:
    """One run's folder and the files in it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.config_path = self.path / "config.json"
        self.metrics_path = self.path / "metrics.jsonl"
        self.last_checkpoint = self.path / "last.pt"
        self.best_checkpoint = self.path / "best.pt"

    def prepare(
        self, config: dict[str, Any], resume: bool, legacy: dict[str, Any] | None = None
    ) -> None:
        """Lock the folder; then start a new run, start over where no checkpoint was written, or
        check that a resumed run has the options it was trained with. A refusal changes no file.

        ``legacy``: for options newer than the run folder (absent from its ``config.json``), the
        value that the older code behaved as; an absent option without one is not compared.
        """
        check_output_folder(self.path, "--out")
        # a checkpoint without a readable config.json: one sentence
        recorded = self.read_recorded() if resume else None
        if resume and recorded is None:
            raise UserError(
                f"--resume: {self.path} holds no run to resume; drop --resume to start one."
            )
        self.check_start(config)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise write_error(self.path, err) from None
        self.lock()
        try:
            has_checkpoint = self.last_checkpoint.is_file()
            if resume:
                self._check_same_options(recorded or {}, config, legacy or {})
            elif has_checkpoint:
                self.read_recorded()  # not a run that --resume could continue: say so
                raise UserError(
                    f"{self.path} already holds a run; pass --resume to continue it "
                    "or choose another --out."
                )
        except BaseException:
            self.release()
            raise
        self._claim()
        for leftover in self.path.glob(f".*{PARTIAL_SUFFIX}"):  # a write cut short by a kill
            if is_cut_write(leftover):
                leftover.unlink(missing_ok=True)
        if not has_checkpoint:  # a new run, or one that stopped before its first checkpoint
            self._drop_unfinished()
            self.write_json("config.json", config)

    def check_start(self, config: dict[str, Any]) -> None:
        """Where the folder holds no ``last.pt`` (a new run, or a start over), what ``prepare``
        refuses before it touches anything: files a new run would overwrite or mix with
        (``_check_nothing_to_lose``); also for a caller that checks its folders before any of
        its runs starts."""
        if not self.last_checkpoint.is_file():
            self._check_nothing_to_lose(config)

    def read_recorded(self) -> dict[str, Any] | None:
        """For ``--resume``, before anything is resolved or built from it: ``config.json`` as a
        dict; None where the folder holds neither it nor ``last.pt`` (no run: ``prepare`` says
        so). One sentence, pointing to another ``--out`` only (nothing here can be resumed or
        started over without losing what is there), where the file is unreadable or no JSON
        object, or where ``last.pt`` is there without it."""
        checkpoint = self.last_checkpoint.is_file()
        if not self.config_path.is_file() and not checkpoint:
            return None
        try:
            old = json.loads(self.config_path.read_text())
        except (json.JSONDecodeError, OSError, UnicodeDecodeError):
            old = None
        if isinstance(old, dict):
            return old
        if checkpoint:
            raise UserError(
                f"{self.path} holds a checkpoint (last.pt) without a readable config.json, so "
                "the options it was trained with are unknown and it can be neither resumed nor "
                "started over; choose another --out."
            )
        raise UserError(
            f"--resume: {self.config_path} is unreadable or not a run configuration (damaged or "
            "edited), so there are no options to resume with; choose another --out."
        )

    def _check_same_options(
        self, recorded: dict[str, Any], config: dict[str, Any], legacy: dict[str, Any]
    ) -> None:
        ignored = (*IGNORED_ON_RESUME, *READ_FROM_ON_RESUME)
        diff = differing_options(recorded, config, legacy, ignored)
        if diff:
            shown = ", ".join(
                f"{k} ({v!r} vs {config.get(k)!r})" for k, v in list(diff.items())[:4]
            )
            raise UserError(
                f"--resume: {self.path} was trained with another configuration ({shown}); "
                "resume with the same options or choose another --out."
            )

    def _check_nothing_to_lose(self, config: dict[str, Any]) -> None:
        """One sentence, before anything is touched, unless the folder holds only what a run that
        stopped before its first checkpoint leaves (``_left_by_an_early_stop``)."""
        if not self.path.is_dir():
            return
        kept = [
            p for p in sorted(self.path.iterdir()) if not self._left_by_an_early_stop(p, config)
        ]
        if kept:
            names = [p.name + ("/" if p.is_dir() else "") for p in kept]
            names = [f"{n} (not a run configuration)" if n == "config.json" else n for n in names]
            last = f"{len(names) - 4} more" if len(names) > 4 else names.pop()
            shown = f"{', '.join(names[:4])} and {last}" if names else last
            raise UserError(
                f"{self.path} holds {shown} but no last.pt, so it is not a run that stopped "
                "before its first checkpoint, and a new run would overwrite or mix with what is "
                "there; move that away or choose another --out."
            )

    def _left_by_an_early_stop(self, path: Path, config: dict[str, Any]) -> bool:
        """Whether ``path`` is what a run that never wrote ``last.pt`` leaves: the lock, a write
        cut short, the ``config.json`` that ``prepare`` wrote (as ``write_json`` writes it, with
        an option of ``config`` among its keys, or both empty), or ``best.pt`` of epoch 1 (which
        runs before 2026-12-05 wrote just before the first ``last.pt``; now it follows it)."""
        if path.name == LOCK_NAME:
            return path.is_file()
        if path.name.endswith(PARTIAL_SUFFIX):
            return is_cut_write(path)
        if path == self.config_path:
            try:
                text = path.read_text()
                old = json.loads(text)
            except (json.JSONDecodeError, OSError, UnicodeDecodeError):
                return False
            ours = isinstance(old, dict) and text == json_text(old)
            return ours and (bool(set(old) & set(config)) or old == config == {})
        return path == self.best_checkpoint and self.best_epoch() == 1

    def best_epoch(self) -> int | None:
        """The epoch ``best.pt`` holds; None where there is none, or it cannot be read whole
        (cut short, or not a checkpoint: no file this program wrote)."""
        try:
            return int(load_checkpoint(self.best_checkpoint)["epoch"])
        except Exception:  # missing or unreadable (UserError), no epoch, not a dict ...
            return None

    def _drop_unfinished(self) -> None:
        """Remove the best.pt of an attempt that never wrote ``last.pt`` (an older run's, which
        wrote best.pt first; ``_check_nothing_to_lose`` let only epoch 1's through): it describes
        no run that can go on."""
        self.best_checkpoint.unlink(missing_ok=True)

    def lock(self) -> None:
        """Hold ``.lock`` until ``release`` or the end of the process; another process holding it
        is one sentence. Taking it again in the same process is a no-op."""
        key = self.path.resolve()
        if fcntl is None or (key in _HELD and _same_file(_HELD[key], self.path / LOCK_NAME)):
            return
        self.release()  # a handle on a lock file deleted since (the folder deleted and made again)
        try:
            handle = open(self.path / LOCK_NAME, "a+")  # noqa: SIM115 (held past this function)
        except OSError as err:
            raise write_error(self.path / LOCK_NAME, err) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise UserError(
                f"{self.path} is in use by {owner}; wait for that run to end or choose another "
                "--out."
            ) from None
        _HELD[key] = handle  # the owner's line is written once the run is accepted (``_claim``)

    def clear(self) -> None:
        """Delete everything in the folder but its lock, which this process takes first: a folder
        another process is training in is one sentence, and nothing in it is deleted."""
        if not self.path.is_dir():
            return
        self.lock()
        for child in self.path.iterdir():
            try:
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                elif child.name != LOCK_NAME:
                    child.unlink()
            except OSError as err:
                raise write_error(child, err) from None

    def _claim(self) -> None:
        """Write this process's id into the held lock file, for the sentence another one prints."""
        handle = _HELD.get(self.path.resolve())
        if handle is not None:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            handle.flush()

    def release(self) -> None:
        """Let other processes use the folder (also done by the end of this process)."""
        handle = _HELD.pop(self.path.resolve(), None)
        if handle is not None:
            handle.close()

    def read_config(self) -> dict[str, Any]:
        """``config.json`` as a dict; {} when it is missing or unreadable (``prepare`` says so)."""
        try:
            config = json.loads(self.config_path.read_text())
        except (json.JSONDecodeError, OSError, UnicodeDecodeError):
            return {}
        return config if isinstance(config, dict) else {}

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_text(self.path / name, json_text(obj))

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Rewrite ``metrics.jsonl`` whole (atomically) from the rows the checkpoint holds, so a
        resumed run never loses or repeats an epoch, and a damaged file is repaired."""
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))

    def read_metrics(self) -> list[dict[str, Any]]:
        """The rows of ``metrics.jsonl``, leaving out lines that are not whole JSON objects (a
        file cut short outside this program; ``--resume`` rewrites it from ``last.pt``)."""
        if not self.metrics_path.is_file():
            return []
        rows = []
        for line in self.metrics_path.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
        return rows
