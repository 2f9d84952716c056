"""A run's report layer (``bilevel.report``): what ``report.md`` holds and in which order, what
the curves' panels draw, and the tables' columns."""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure

from bilevel.report import loss_panel, markdown_table, rich_table, validation_panel, write_report
from bilevel.run import RunDir

HISTORY = [
    {"epoch": 1, "leader_loss": 0.9, "val_acc": 0.5},
    {"epoch": 2, "leader_loss": 0.7, "val_acc": 0.6},
    {"epoch": 3, "leader_loss": 0.6, "val_acc": 0.7},
]


def _drawn(panel, history, *args) -> dict[str, tuple[list, list]]:
    """Each line a panel draws, by its label: (x, y)."""
    ax = Figure().subplots()
    panel(ax, [row["epoch"] for row in history], history, *args)
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.lines}


def test_report_md_holds_the_results_notes_epochs_and_options_in_order(tmp_path: Path) -> None:
    run = tmp_path / "toy"
    run.mkdir()
    config = {"follower": "grad", "lr": 0.2, "note": None}
    notes = ("First note.", "Second note.")
    write_report(RunDir(run), config, HISTORY, {"test_acc": 0.9, "best_epoch": 3}, notes=notes)
    lines = (run / "report.md").read_text().splitlines()
    assert lines[0] == "# Run toy"
    results = lines.index("| metric | value |")
    assert lines[results + 2 : results + 4] == ["| test_acc | 0.9000 |", "| best_epoch | 3 |"]
    # every note, in order, after the test table and before the epochs
    assert lines.index("First note.") < lines.index("Second note.") < lines.index("## Per epoch")
    assert results < lines.index("First note.")
    epochs = lines.index("| epoch | leader_loss | val_acc |")
    assert lines[epochs + 2 :][:3] == [
        "| 1 | 0.9000 | 0.5000 |",
        "| 2 | 0.7000 | 0.6000 |",
        "| 3 | 0.6000 | 0.7000 |",
    ]
    # options as typed on the command line: a string is not quoted
    assert {"| follower | grad |", "| lr | 0.2 |", "| note | None |"} <= set(lines)
    assert "![training curves](curves.png)" in lines
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_report_curves_draw_the_panels_given_against_the_epochs(tmp_path: Path) -> None:
    """A problem's own panels draw curves.png (the default pair would drop its accuracy and gap
    panels), each against the history's epoch numbers."""
    calls = []
    run = tmp_path / "run"
    run.mkdir()
    resumed = HISTORY[1:]  # epochs 2 and 3
    write_report(RunDir(run), {}, resumed, {}, panels=[lambda ax, e, h: calls.append((e, h))])
    assert calls == [([2, 3], resumed)]


def test_markdown_table_takes_keys_in_the_order_given_or_first_seen() -> None:
    rows = [{"b": 1, "a": 2.5}, {"c": "x", "a": 3}]
    assert markdown_table(rows)[0] == "| b | a | c |"  # first appearance, not alphabetical
    assert markdown_table(rows, ["a", "c"]) == ["| a | c |", "|---|---|", "| 2.5000 |  |", "| 3 | x |"]  # fmt: skip
    assert markdown_table(rows, ["a"], cell=lambda v: f"<{v}>")[2:] == ["| <2.5> |", "| <3> |"]


def test_rich_table_aligns_numbers_right_and_the_method_name_left() -> None:
    table = rich_table("t", [{"method": "pgm-10", "clean_acc": 0.9}])
    assert {c.header: c.justify for c in table.columns} == {"method": "left", "clean acc": "right"}


def test_the_loss_panel_draws_each_loss_any_epoch_has_and_no_other() -> None:
    """A loss some epochs lack is drawn with gaps; one that no epoch has is not in the legend."""
    partial = [dict(row) for row in HISTORY]
    partial[1]["follower_objective"] = 0.3
    drawn = _drawn(loss_panel, partial)
    assert set(drawn) == {"leader loss L", "follower objective q"}
    x, y = drawn["follower objective q"]
    assert x == [1, 2, 3] and math.isnan(y[0]) and y[1] == 0.3 and math.isnan(y[2])
    assert set(_drawn(loss_panel, HISTORY)) == {"leader loss L"}


def test_the_validation_panel_draws_the_validation_metrics_of_its_suffix_only() -> None:
    """The accuracy panel (suffix "acc") draws val_*_acc, not the validation losses, nor the
    follower gap's gap_val_* figures, which have a panel of their own."""
    history = [
        {"epoch": 1, "val_pgd10_acc": 0.2, "val_clean_acc": 0.8, "val_clean_loss": 0.5,
         "gap_val_pgd10_acc": 0.1, "train_acc": 0.9},
    ]  # fmt: skip
    assert list(_drawn(validation_panel, history, "acc")) == ["val_clean_acc", "val_pgd10_acc"]
    assert list(_drawn(validation_panel, history)) == [
        "val_clean_acc",
        "val_clean_loss",
        "val_pgd10_acc",
    ]
