"""Checks of the paths a command is given, before it reads or writes anything: each problem is
one sentence (a ``UserError``, exit code 2), and nothing is created or changed by checking.

- an output folder (``--out``, a run folder to resume or evaluate into): not a file, and
  writable, or makeable inside a writable folder;
- an output file (``--json``): not a folder, in a folder that can be written or made;
- an input folder (``--data-dir``, ``--cache-dir``): not a file; it is only written to when
  something must be downloaded or cached, and is checked as an output folder then.

None of them may be empty: ``Path("")`` is ".", so ``--out ''`` would train into the current
folder. A typer option typed ``Path`` turns "" into "." before a command sees it; the path options
of ``cli.py`` parse with ``keep_empty`` (``bilevel.commands.path_option``) to keep it "".
"""

from __future__ import annotations

import os
from pathlib import Path

from bilevel.errors import UserError


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path.cwd()


def keep_empty(value: str | Path) -> Path | str:
    """A path option's value as a ``Path``, but "" kept as "" for the checks below to refuse (a
    typer ``parser``)."""
    return "" if value == "" else Path(value)


def check_not_empty(path: str | Path, option: str, kind: str = "folder") -> None:
    """One sentence when ``path`` is "" (which ``Path`` would read as the current folder);
    ``kind``: what the option names, a "folder" or a "file"."""
    if str(path) == "":
        what = "a folder name" if kind == "folder" else "a file name"
        raise UserError(f"{option} is empty; give {what}.")


def check_output_folder(path: str | Path, option: str = "--out") -> None:
    """One sentence unless ``path`` is a folder this process can write, or can be made as one."""
    check_not_empty(path, option)
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise UserError(
            f"{option} {path} is a file, not a folder; choose a folder path (it is made if missing)."
        )
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise UserError(f"{option} {path} cannot be made, since {existing} is a file; choose another {option}.")  # fmt: skip
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == path else f" (nor {existing}, where it would be made)"
        raise UserError(
            f"{option} {path} is not writable for this user{where}; choose another {option} or "
            "change its permissions."
        )


def check_output_file(path: str | Path, option: str) -> None:
    """One sentence unless ``path`` names a file that can be written (its folder is made)."""
    check_not_empty(path, option, "file")
    path = Path(path).expanduser()
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder; give a file name, such as {path / 'out.json'}.")  # fmt: skip
    existing = _nearest_existing(path.parent)
    if not existing.is_dir():
        raise UserError(f"{option} {path} cannot be written, since {existing} is a file; choose another {option}.")  # fmt: skip
    check_output_folder(path.parent, option)


def check_input_folder(path: str | Path, option: str) -> None:
    """One sentence when ``path``, or the folder it would be made in, is a file."""
    check_not_empty(path, option)
    path = Path(path).expanduser()
    existing = _nearest_existing(path)
    if not existing.is_dir():
        where = "" if existing == path else f" (in {existing}, which is a file)"
        raise UserError(
            f"{option} {path} is a file, not a folder{where}; give the folder that holds the data."
        )


def check_paths(
    folders: dict[str, str | Path | None] | None = None,
    files: dict[str, str | Path | None] | None = None,
    inputs: dict[str, str | Path | None] | None = None,
) -> None:
    """Check a command's paths by option name (``{"--out": path}``): output folders, output
    files and input folders; None values are options left out."""
    for option, path in (folders or {}).items():
        if path is not None:
            check_output_folder(path, option)
    for option, path in (files or {}).items():
        if path is not None:
            check_output_file(path, option)
    for option, path in (inputs or {}).items():
        if path is not None:
            check_input_folder(path, option)
