"""The terminal tables: every cell under its own header when rows differ in their keys."""

from __future__ import annotations

from bilevel.report import rich_table


def test_rows_with_other_keys_keep_each_cell_under_its_header() -> None:
    """A bench row without CPU seconds (an older run reused) used to shift its wall ratio under
    the CPU column: the columns came from the first row, the cells from each row's own values."""
    rows = [
        {"method": "new", "train_cpu_seconds": 5.0, "ratio": 0.5},
        {"method": "old", "ratio": 1.0, "norm": "l2"},
    ]
    table = rich_table("t", rows)
    columns = {column.header: list(column.cells) for column in table.columns}
    assert columns == {
        "method": ["new", "old"],
        "train cpu seconds": ["5.0000", ""],
        "ratio": ["0.5000", "1.0000"],
        "norm": ["", "l2"],
    }


def test_bench_dro_grid_names_the_setting_its_grid_trains_in(monkeypatch, tmp_path) -> None:
    """The title said "mnist5k, small CNN, ε = 0.3" whatever the grid's model and ε."""
    import json

    from typer.testing import CliRunner

    from cli import app
    from problems.adversarial import bench

    row = {"method": "pgm-10", "clean_acc": 0.9, "train_seconds": 1.0}
    monkeypatch.setattr(bench, "bench_grid", lambda *args: [row])
    grid = tmp_path / "g.json"
    base = {"epochs": 1, "eps": 0.1, "model": "trades-cnn"}
    configs = {"default": {"follower": "2-step"}}
    grid.write_text(json.dumps({"base": base, "references": ["pgm-10"], "configs": configs}))
    args = ["bench", "dro", "--grid", str(grid), "--out", str(tmp_path / "runs")]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # the title wraps to the table's width
    assert "bench dro: mnist5k, trades-cnn, ε = 0.1 (test split" in text and "0.3" not in text
