"""A comma-separated list of names (a bench's --methods or --directions, gail-stability's
--followers) names each one once: the benches keyed their rows by name, so ``pgm,pgm`` trained and
reported PGM once without a word, and a table had fewer rows than the list asked for."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app

TINY = ["--epochs", "1", "--train-size", "32", "--eval-size", "8", "--no-autoattack"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["bench", "dro", *TINY, "--methods", "fgsm,pgm, pgm"], "--methods names pgm twice"),
        (["bench", "ait", *TINY, "--methods", "ait,ait"], "--methods names ait twice"),
        (["bench", "ait", *TINY, "--directions", "away,away"], "--directions names away twice"),
        (
            ["bench", "speed", "--model", "small-cnn", "--methods", "plain,plain"],
            "names plain twice",
        ),
        (["gail-stability", "--steps", "300", "--followers", "adam,adam"], "names adam twice"),
    ],
)
def test_a_name_listed_twice_is_one_sentence_and_nothing_runs(args, words, tmp_path: Path) -> None:
    out = [] if args[1] == "speed" else ["--out", str(tmp_path / "runs")]
    json_path = [] if args[0] == "gail-stability" else ["--json", str(tmp_path / "t.json")]
    result = CliRunner().invoke(app, [*args, *out, *json_path])
    assert result.exit_code == 2 and words in result.output, result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists() and not (tmp_path / "t.json").exists()
