"""Errors a user can cause and fix, and known reasons for a run to stop."""

from __future__ import annotations

from collections.abc import Iterable


class UserError(Exception):
    """An error the user caused and can fix; the CLI prints its message (one sentence saying what to do) and exits with code 2."""


def require_counts(options: object, names: Iterable[str]) -> None:
    """One sentence for the first ``options.<name>`` below 1, named as its ``--option`` (None
    means the option was left to its default)."""
    for name in names:
        value = getattr(options, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1; got {value}.")
