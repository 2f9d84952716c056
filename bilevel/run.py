"""A run is a folder (DESIGN.md, "Conventions"): ``config.json``, ``metrics.jsonl``, checkpoints,
``report.md`` and plots. Every write goes to a temporary name first and is then renamed, so a
killed process or a bad input never leaves a broken file where a good one was.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from bilevel.errors import UserError

IGNORED_ON_RESUME = ("resume", "out", "device")  # options that may differ between run and resume


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_figure(fig: Any, path: Path) -> None:
    """A matplotlib figure as a PNG (100 dpi), written atomically; the figure is then closed."""
    import matplotlib.pyplot as plt  # only where figures are drawn

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def table_cell(value: Any) -> str:
    """A value in a markdown table of a report: floats to 4 decimals, anything else as it is."""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)``; a missing, corrupt or foreign file is a ``UserError``."""
    if not path.is_file():
        raise UserError(f"No checkpoint at {path}; train a run first or check the path.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, ValueError) as err:
        raise UserError(
            f"{path} is not a readable checkpoint ({type(err).__name__}); "
            "it may be corrupt or from another program: retrain or pick another file."
        ) from None
    if not isinstance(state, dict):
        raise UserError(f"{path} is not a bilevel-l2l checkpoint; pick a file this project wrote.")
    return state


class RunDir:
    """One run's folder and the files in it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def last_checkpoint(self) -> Path:
        return self.path / "last.pt"

    @property
    def best_checkpoint(self) -> Path:
        return self.path / "best.pt"

    def prepare(
        self, config: dict[str, Any], resume: bool, legacy: dict[str, Any] | None = None
    ) -> None:
        """Start a new run (refusing to overwrite one) or check that a resumed run is the same.

        ``legacy``: for options newer than the run folder (absent from its ``config.json``), the
        value that the older code behaved as; an absent option without one is not compared.
        """
        if resume:
            if not self.config_path.is_file() or not self.last_checkpoint.is_file():
                raise UserError(
                    f"--resume: {self.path} holds no run to resume; drop --resume to start one."
                )
            try:
                old = json.loads(self.config_path.read_text())
            except (json.JSONDecodeError, OSError):
                raise UserError(
                    f"--resume: {self.config_path} is unreadable; start anew."
                ) from None
            old = {k: v for k, v in (legacy or {}).items() if k in config} | old
            diff = sorted(k for k in old if k not in IGNORED_ON_RESUME and old[k] != config.get(k))
            if diff:
                shown = ", ".join(f"{k} ({old.get(k)!r} vs {config.get(k)!r})" for k in diff[:4])
                raise UserError(
                    f"--resume: {self.path} was trained with another configuration ({shown}); "
                    "resume with the same options or choose another --out."
                )
            return
        if self.config_path.exists() or self.last_checkpoint.exists():
            raise UserError(
                f"{self.path} already holds a run; pass --resume to continue it "
                "or choose another --out."
            )
        self.write_json("config.json", config)

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_text(self.path / name, json.dumps(obj, indent=2, sort_keys=True) + "\n")

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Rewrite ``metrics.jsonl`` whole (atomically) from the rows the checkpoint holds, so a
        resumed run never loses or repeats an epoch."""
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.is_file():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line]
