"""Options declared once: a dataclass field carries its default and its help text, and the
command line is generated from the dataclass (``cli.py``), so no default is written twice.

``option(default, help)`` is such a field; ``comma=True`` marks a list given as "a,b,c" on the
command line (its ``example`` shows how), ``name`` an option spelled otherwise than the field
(``--json`` for ``json_path``), ``hidden`` a testing option. ``choose`` is the one sentence for a value outside its choices.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from bilevel.errors import UserError


def option(
    default: Any, help: str = "", *, comma: bool = False, example: str = "", name: str = "",
    hidden: bool = False,
) -> Any:  # fmt: skip
    """A dataclass field with its command-line metadata (a list default is copied per instance)."""
    meta = {"help": help, "comma": comma, "example": example, "name": name, "hidden": hidden}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def choose(option: str, value: str, choices: tuple[str, ...]) -> None:
    """One sentence unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise UserError(f"Unknown {option} {value!r}; choose one of: {', '.join(choices)}.")
