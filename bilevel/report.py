"""The report layer of every run and command: table cells and tables (markdown for files, rich for
the terminal), training curves with one plot hook (a list of panels) per problem, and a run's
``report.md``. Every file is written atomically (``bilevel.files``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bilevel.files import atomic_write_figure, atomic_write_text, new_figure

if TYPE_CHECKING:
    from bilevel.run import RunDir

Rows = list[dict[str, Any]]
Panel = Callable[[Any, list[int], Rows], None]  # (matplotlib axes, epochs, metric rows): draws one


def table_cell(value: Any) -> str:
    """A value in a table: floats to 4 decimals, anything else as it is."""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def markdown_table(
    rows: Rows, keys: Sequence[str] | None = None, cell: Callable[[Any], str] = table_cell
) -> list[str]:
    """The lines of a markdown table: one column per key (every row's keys, in order of first
    appearance, unless ``keys`` names them), one line per row, each value written by ``cell``; a
    missing value is blank."""
    keys = list(keys or dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    return lines + ["| " + " | ".join(cell(row.get(k, "")) for k in keys) + " |" for row in rows]


def print_table(console: Any, title: str, rows: Rows) -> None:
    """``rows`` as a rich table on ``console`` (the terminal's version of ``markdown_table``)."""
    console.print(rich_table(title, rows))


def rich_table(title: str, rows: Rows) -> Any:
    """A ``rich.table.Table`` of ``rows``: a column for every key of any row, in the order they
    first appear; a row without one leaves its cell empty."""
    from rich.table import Table

    table = Table(title=title)
    keys = list(dict.fromkeys(key for row in rows for key in row))  # rows may differ in keys
    for key in keys:
        # spaces let a long header wrap instead of being cut to "seconds_per_…"
        table.add_column(key.replace("_", " "), justify="right" if key != "method" else "left")
    for row in rows:
        table.add_row(*(table_cell(row.get(key, "")) for key in keys))
    return table


def loss_panel(ax: Any, epochs: list[int], history: Rows) -> None:
    """The epoch means of the leader loss L and the follower objective q."""
    for key, label in (("leader_loss", "leader loss L"), ("follower_objective", "follower objective q")):  # fmt: skip
        if any(key in row for row in history):
            ax.plot(
                epochs, [row.get(key, float("nan")) for row in history], marker="o", label=label
            )
    ax.set(xlabel="epoch", ylabel="mean over the epoch", title="training losses")
    ax.legend()


def validation_panel(ax: Any, epochs: list[int], history: Rows, suffix: str = "") -> None:
    """Every ``val_*`` metric (ending in ``suffix``) against epochs."""
    keys = sorted(
        {k for row in history for k in row if k.startswith("val_") and k.endswith(suffix)}
    )
    for key in keys:
        ax.plot(epochs, [row.get(key, float("nan")) for row in history], marker="o", label=key)
    ax.set(xlabel="epoch", ylabel="value", title="validation split")
    ax.legend()


DEFAULT_PANELS: tuple[Panel, ...] = (loss_panel, validation_panel)


def plot_curves(path: Path, history: Rows, panels: Sequence[Panel] = DEFAULT_PANELS) -> None:
    """One figure, one panel per hook, side by side, written to ``path`` as a PNG."""
    epochs = [row["epoch"] for row in history]
    fig, axes = new_figure(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        panel(ax, epochs, history)
    fig.tight_layout()
    atomic_write_figure(fig, path)


def write_report(
    run: RunDir,
    config: dict[str, Any],
    history: Rows,
    results: dict[str, Any],
    panels: Sequence[Panel] = DEFAULT_PANELS,
    notes: Sequence[str] = (),
) -> None:
    """``report.md`` (the test table, ``notes``, the per-epoch metrics and every resolved option)
    and ``curves.png`` (``panels``)."""
    lines = [f"# Run {run.path.name}", "", "## Test split (best epoch on the validation split)", ""]
    lines += markdown_table([{"metric": k, "value": v} for k, v in results.items()])
    for note in notes:
        lines += ["", note]
    lines += ["", "## Per epoch", "", *markdown_table(history)]
    lines += ["", "## Configuration", "", "| option | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in config.items()]
    lines += ["", "![training curves](curves.png)", ""]
    atomic_write_text(run.path / "report.md", "\n".join(lines))
    plot_curves(run.path / "curves.png", history, panels)
