"""The help a user reads: each paragraph of a command's docstring flows, for the terminal to wrap
(typer's rich help kept the docstring's line breaks, mid-sentence, in the command list and in
every paragraph after the first)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cli import app


@pytest.mark.parametrize(
    ("args", "sentence"),
    [
        (["bench", "--help"], "(trained one after another in this process); clean"),
        (["bench", "--help"], "3 seeds each, judged by APGD-CE + APGD-T"),
        (["solve", "adversarial-dro", "--help"], "(gloo on CPU, nccl on GPU)"),
    ],
)
def test_a_command_s_help_is_not_broken_mid_sentence(args: list[str], sentence: str) -> None:
    result = CliRunner().invoke(app, args, env={"COLUMNS": "250"})  # wide enough for no wrap
    assert result.exit_code == 0 and sentence in result.output, result.output
