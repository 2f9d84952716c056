"""Atomic file writes: every file goes to a temporary name in its folder first and is then
renamed over the old one, so a killed process or a full disk never leaves a broken file where a
good one was. A write that fails is one sentence (``WriteError``), and the old file survives.

Temporary files are named ``.<name>.<random>.partial``; a process killed mid-write can leave
one behind, which ``RunDir.prepare`` removes. Files get the usual mode of a new file (0666 less
the umask), as ``open`` would give them, not ``mkstemp``'s private 0600.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from bilevel.errors import UserError

PARTIAL_SUFFIX = ".partial"


class WriteError(UserError):
    """A file could not be written (disk full, read-only folder, a file where a folder must be)."""


def is_cut_write(path: Path) -> bool:
    """Whether ``path`` may be a temporary file of a write cut short by a kill: a hidden regular
    file ``.<name>.<random>.partial`` (a folder or a link of that name is a user's)."""
    name = path.name
    hidden_partial = name.startswith(".") and name.endswith(PARTIAL_SUFFIX)
    return hidden_partial and path.is_file() and not path.is_symlink()


def write_error(path: Path, err: OSError) -> WriteError:
    """The one sentence for an ``OSError`` met while writing ``path``."""
    reason = err.strerror or type(err).__name__
    return WriteError(
        f"Could not write {path} ({reason}); free some disk space or choose a folder you can "
        "write to."
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, dump: Callable[[BinaryIO], Any]) -> None:
    """Make ``path`` by ``dump(file)`` on a temporary file, synced, and an atomic rename over
    ``path``. The temporary is a file object, so a full disk is an ``OSError`` for
    ``torch.save`` too, not a ``RuntimeError``."""
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX, dir=path.parent)
        os.close(fd)
        with open(tmp, "wb") as f:  # a named file object, as ``open`` gives (``f.name``)
            dump(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise write_error(path, err) from err
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Sync ``folder``, so that a rename into it survives a power cut, not only a crash of the
    process. Best effort: the file is already in place, and a file system that cannot sync a
    folder (or a system that cannot open one) leaves the rename to the kernel's own flush."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see the module docstring)."""
    _atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    """``atomic_write_bytes`` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode())


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save(obj)`` to ``path`` atomically (see the module docstring)."""
    _atomic_write(path, lambda f: torch.save(obj, f))


def new_figure(
    *args: Any, figsize: tuple[float, float] | None = None, **kwargs: Any
) -> tuple[Any, Any]:
    """A matplotlib ``Figure`` of ``figsize`` inches and its ``Figure.subplots(*args, **kwargs)``.

    The figure is made without pyplot: no backend is chosen or switched (a user's interactive one
    is left alone) and no figure manager keeps it alive. matplotlib is imported here, where a
    figure is drawn, not by the modules that can draw one: it would add 0.3 s to every command."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


def atomic_write_figure(fig: Any, path: Path) -> None:
    """A matplotlib figure (``new_figure``'s) as a PNG (100 dpi), written atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(path, buffer.getvalue())
