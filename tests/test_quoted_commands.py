"""What the README and docs quote still runs as written: every ``cli.py`` command they give parses
under today's options (flag names and value types, and a ``--levers`` object's names and types;
nothing is trained: a command's own checks of its values are not run). A renamed flag or lever
would otherwise leave the command quoted beside a figure failing for the next user who copies it
(the grid files they name: ``test_unused_options.py::test_every_grid_of_the_study_still_loads``)."""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

import pytest
import typer
from helpers import ROOT

from bilevel.errors import UserError
from bilevel.options import check_levers
from cli import app
from problems.adversarial.ait_config import AITConfig
from problems.adversarial.dro_config import DROConfig

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
INLINE = re.compile(r"`([^`]*\bcli\.py [^`]+)`")  # a command in a code span, wrapped or not
FENCED = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)  # its language, its lines


def quoted_commands() -> list[tuple[str, str]]:
    """(where, the arguments after ``cli.py``) of every command the docs quote, inline or in a
    fenced block, one per ``&&``-separated part, comments dropped."""
    found = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        spans, prose = [], text  # prose: the text with its fenced blocks blanked, lines kept
        for block in FENCED.finditer(text):
            offset = block.start(2)
            for line in block.group(2).splitlines(keepends=True):
                if "cli.py" in line and block.group(1) in ("", "bash", "sh"):
                    spans.append((offset, line))
                offset += len(line)
            blank = re.sub(r"[^\n]", " ", block.group(0))
            prose = prose[: block.start()] + blank + prose[block.end() :]
        spans += [(m.start(), m.group(1)) for m in INLINE.finditer(prose)]
        for start, span in spans:
            where = f"{path.name}:{text.count(chr(10), 0, start) + 1}"
            for part in span.split("&&"):
                words = shlex.split(part, comments=True)
                if "cli.py" in words:
                    found.append((where, shlex.join(words[words.index("cli.py") + 1 :])))
    return found


def test_the_docs_quote_commands() -> None:
    """Not vacuous: the README's usage block and the results' commands are found."""
    commands = quoted_commands()
    assert len(commands) > 80
    assert any(args.startswith("bench dro --grid") for _, args in commands)


def parse_only() -> Any:
    """The command line of ``cli.py`` with every command's body replaced by nothing: parsing
    checks each flag's name and its value's type, as typer would before running it."""
    root = typer.main.get_command(app)
    pending = [root]
    while pending:
        command = pending.pop()
        if getattr(command, "commands", None):
            pending.extend(command.commands.values())
        else:
            command.callback = lambda *args, **kwargs: None
    return root


def parse(args: list[str]) -> int:
    """The exit code of parsing ``args`` as a user's shell would (0: accepted; 2: a usage error,
    its sentence on stderr)."""
    try:
        parse_only().main(args, prog_name="cli.py")
    except SystemExit as stop:
        return stop.code or 0
    return 0


LEVER_CLASSES = {"ait": AITConfig, "speed": DROConfig}  # whose options each bench's levers are


@pytest.mark.parametrize(("where", "args"), quoted_commands())
def test_a_quoted_command_parses_under_today_s_options(where: str, args: str, capsys) -> None:
    words = shlex.split(args)
    assert parse(words) == 0, f"{where}: cli.py {args}\n{capsys.readouterr().err}"
    if "--levers" in words:
        levers = json.loads(words[words.index("--levers") + 1])
        check_levers(LEVER_CLASSES[words[1]], levers, f"{where} --levers")


def test_a_renamed_flag_would_be_caught(capsys) -> None:
    """The check can fail: a flag no command has, a value of the wrong type, an unknown lever."""
    assert parse(["bench", "dro", "--no-such-flag"]) == 2
    assert "No such option" in capsys.readouterr().err
    assert parse(["solve", "adversarial-dro", "--epochs", "ten"]) == 2
    with pytest.raises(UserError, match="unknown lever"):
        check_levers(AITConfig, {"no_such_lever": True}, "--levers")
