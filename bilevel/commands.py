"""What every command of ``cli.py`` shares: one sentence and an exit code for every known way to
stop (``user_errors``), tables on the terminal, typer options that are not a run's configuration,
and the parsing of comma-separated lists. Knows nothing of any problem; the commands themselves
live beside their problems (``problems.adversarial.commands`` and ``.bench_commands``,
``problems.imitation.commands``).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from bilevel import report
from bilevel.command_options import parse_list
from bilevel.distributed import leave_process_group
from bilevel.errors import Stopped, UserError
from bilevel.options import check_named_once, check_seeds
from bilevel.paths import keep_empty
from bilevel.stopping import INTERRUPTED_KEEPS, Interrupted, signals_raise

console = Console()


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Every known way for a command to stop, as one line on stderr and an exit code: a
    ``UserError`` exits 2 (any other exception is a bug and keeps its traceback); a run stopped by SIGINT or SIGTERM
    (``Stopped``, or ``Interrupted`` outside a training loop) exits 130 or 143."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with signals_raise():
                return command(*args, **kwargs)
        except UserError as err:
            message, code = f"error: {err}", 2
        except Stopped as stop:
            message, code = str(stop), stop.exit_code
        except Interrupted as err:
            message, code = f"Stopped by {err.name}; {INTERRUPTED_KEEPS}", err.exit_code
        if message:
            print(message, file=sys.stderr)
        leave_process_group()  # the run's DDP wrappers went with the exception
        raise typer.Exit(code)

    return wrapper


def print_table(title: str, rows: list[dict[str, Any]], keys: tuple[str, ...] = ()) -> None:
    """``rows`` under ``title``, only their ``keys`` where given."""
    report.print_table(console, title, [{k: r[k] for k in keys} for r in rows] if keys else rows)


def path_option(default: Path | None, *names: str, help: str | None = None) -> Any:
    """A typer option naming a path, kept "" when given "" (``bilevel.paths.keep_empty``), so that
    ``check_paths`` refuses it instead of taking the current folder."""
    return typer.Option(default, *names, parser=keep_empty, metavar="<path>", help=help)


class Shared:
    """typer options that are not a run's configuration, shared by several commands (a run's
    options come from its configuration dataclass, ``bilevel.command_options.with_options``)."""

    train_size = typer.Option(None, help="Use only the first N training examples.")
    eval_size = typer.Option(None, help="Use only the first N validation and test examples.")
    resume = typer.Option(False, help="Continue the run in --out where it stopped.")
    interrupt_after_epoch = typer.Option(None, hidden=True)
    json_path = path_option(None, "--json", help="Also write the table as JSON here.")


def parse_seeds(text: str) -> list[int]:
    """``--seeds``: comma-separated integers (one sentence, exit 2, otherwise)."""
    seeds = parse_list("seeds", text, int, "0,1,2")
    check_seeds(seeds, "--seeds")
    return seeds


def flowing(doc: str | None) -> str | None:
    """A command's docstring as its help: each paragraph on one line, for the terminal to wrap
    (typer's rich help kept a docstring's line breaks, mid-sentence, in the command list and in
    every paragraph after the first)."""
    if doc is None:
        return None
    return "\n\n".join(" ".join(part.split()) for part in doc.strip().split("\n\n"))


def split_names(text: str, option: str) -> list[str]:
    """A comma-separated option as a list of names, each named once (one sentence otherwise: a
    bench keyed its rows by name and ran a method named twice once, without a word)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    check_named_once(names, option)
    return names


def print_solved(
    results: dict[str, Any] | None, title: str, out: Path, interrupted: int | None, plot: str
) -> None:
    """A solve command's results and run folder (``plot`` its curves), or how to go on after
    ``--interrupt-after-epoch``."""
    if results is None:  # stopped on purpose, or a torchrun process other than rank 0
        if interrupted is not None:
            console.print(f"stopped after epoch {interrupted}; continue with --resume")
        return
    print_table(title, [results])
    console.print(f"run folder: {out} (report.md, {plot}, metrics.jsonl)")
