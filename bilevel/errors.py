"""Errors a user can cause and fix, and known reasons for a run to stop."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


def as_flag(name: str) -> str:
    """The command-line flag of the option field ``name``: ``--x-y`` for ``x_y``."""
    return "--" + name.replace("_", "-")


class UserError(ValueError):
    """An error the user caused and can fix; the CLI prints its message (one sentence saying what
    to do) and exits with code 2. A bad value, so a ``ValueError``: code that checks a value it
    was given raises this one when the value came from an option."""


class Stopped(Exception):
    """A run stopped for a known reason (SIGINT, SIGTERM) after saving what it could.

    The message says what is kept and how to continue (empty on torchrun processes other than
    rank 0, which write nothing); the CLI prints it and exits with ``exit_code`` (128 + the
    signal's number: 130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message, exit_code)  # both in args: it survives pickling (process pools)
        self.message, self.exit_code = message, exit_code

    def __str__(self) -> str:
        return self.message


def require_counts(options: object, names: Iterable[str]) -> None:
    """One sentence for the first ``options.<name>`` below 1, named as its ``--option`` (None
    means the option was left to its default)."""
    _require(options, names, lambda value: value is not None and value < 1, "at least 1")


def require_positive(options: object, names: Iterable[str]) -> None:
    """One sentence for the first ``options.<name>`` that is not above 0 (a rate, a size, a
    step), named as its ``--option``."""
    _require(options, names, lambda value: not value > 0, "positive")


def require_at_least_zero(options: object, names: Iterable[str]) -> None:
    """One sentence for the first ``options.<name>`` below 0 (a weight decay, a momentum, a size
    where 0 turns something off), named as its ``--option``."""
    _require(options, names, lambda value: value < 0, "at least 0")


def _require(
    options: object, names: Iterable[str], fails: Callable[[Any], bool], requirement: str
) -> None:
    """Raise ``--<name> must be <requirement>; got <value>.`` for the first name whose value
    ``fails``."""
    for name in names:
        if fails(value := vars(options)[name]):
            raise UserError(f"{as_flag(name)} must be {requirement}; got {value}.")
