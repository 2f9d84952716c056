"""Options declared once: a dataclass field carries its default and its help text, and the
command line is generated from the dataclass (``bilevel.command_options.with_options``), so no
default is written twice.

``option(default, help)`` is such a field; ``comma=True`` marks a list given as "a,b,c" on the
command line (its ``example`` shows how), ``name`` an option spelled otherwise than the field
(``--json`` for ``json_path``), ``hidden`` a testing option; ``field_default`` gives an option
written by hand its field's default. ``choose`` is the one sentence for
a value outside its choices; ``fill_unset`` gives the options left unset their defaults;
``check_levers`` checks options given as JSON (a study's grid, ``--levers``) by name, type
(``json_fits``) and finiteness, and refuses those the command sets itself;
``inherit`` gives a resumed run the options its folder recorded, where the command line is silent.
``as_written`` names an option given by field name (a lever) in a check's sentence as written.
``check_numbers`` refuses what every command refuses: a NaN or infinite number (which a check
written ``x < 0`` lets through), or a whole number too large for a float (``finite``), and a
``--seed`` numpy cannot take (``check_seeds``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import field
from typing import Any

from bilevel.errors import UserError, as_flag


def option(
    default: Any, help: str = "", *, comma: bool = False, example: str = "", name: str = "",
    hidden: bool = False,
) -> Any:  # fmt: skip
    """A dataclass field with its command-line metadata (a list default is copied per instance)."""
    meta = {"help": help, "comma": comma, "example": example, "name": name, "hidden": hidden}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def field_default(config_class: type, name: str) -> Any:
    """The default of the dataclass ``config_class``'s field ``name`` (a fresh value where the
    field has a default factory): for a command-line option written by hand, so that it takes
    the dataclass's default instead of restating it."""
    f = config_class.__dataclass_fields__[name]
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


SEED_LIMIT = 2**32  # numpy's generators take seeds in [0, 2**32)


def finite(value: Any) -> bool:
    """Whether ``value`` is no number that a computation with floats fails on or makes
    meaningless: a NaN or an infinite float, or a whole number ``float()`` cannot hold (above
    about 1.8e308, which the command line and JSON both give as an int, and whose first use as a
    float, like ``2.5 * eps / steps``, raises ``OverflowError``). Anything else passes."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int):
        try:
            float(value)
        except OverflowError:
            return False
    return True


def check_numbers(config: Any) -> None:
    """One sentence for a number option of the dataclass ``config`` (or an entry of a list
    option) that is not ``finite``, or for a ``seed`` option numpy cannot take."""
    if hasattr(config, "seed"):
        check_seeds([config.seed], "--seed")
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        values = value if isinstance(value, list | tuple) else [value]
        if not all(finite(v) for v in values):
            flag = f.metadata.get("name") or as_flag(f.name)
            raise UserError(f"{flag} must be a finite number; got {value}.")


def check_seeds(seeds: list[int], option: str) -> None:
    """One sentence unless every seed is an integer numpy can take, 0 to 2**32 - 1, named once
    (a seed named twice would be counted twice in a mean ± std, or trained twice at once)."""
    for seed in seeds:
        if not 0 <= seed < SEED_LIMIT:
            raise UserError(f"{option} must be between 0 and {SEED_LIMIT - 1}; got {seed}.")
    check_named_once(seeds, option, "seed")


def check_named_once(values: Sequence[Any], option: str, kind: str = "") -> None:
    """One sentence for the first of ``values`` (each a ``kind``: "seed", "epoch"; or a name)
    that ``option`` names twice: a list of seeds, methods or milestones means each one once."""
    for i, value in enumerate(values):
        if value in values[:i]:
            each = f"{kind} " if kind else ""
            raise UserError(f"{option} names {each}{value} twice; name each {each}once.")


def choose(option: str, value: str, choices: tuple[str, ...]) -> None:
    """One sentence unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise UserError(f"Unknown {option} {value!r}; choose one of: {', '.join(choices)}.")


def fill_unset(config: Any, values: dict[str, Any]) -> None:
    """Every option of the dataclass ``config`` left unset (None) takes its value in ``values``,
    where that has one."""
    for f in dataclasses.fields(config):
        if getattr(config, f.name) is None and f.name in values:
            setattr(config, f.name, values[f.name])


def inner_type(hint: Any) -> Any:
    """``X`` of ``X | None``; the hint itself otherwise."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if isinstance(hint, types.UnionType) and len(args) == 1 else hint


def json_fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits the field type ``hint`` (bool, int, float, str, list[...],
    ``X | None``): no bool where a number is meant, no float where a count is."""
    if value is None:
        return type(None) in typing.get_args(hint)
    hint = inner_type(hint)
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(json_fits(v, item) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


_WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


def check_levers(
    config_class: type,
    values: dict[str, Any],
    where: str,
    exclude: tuple[str, ...] = (),
    why: str = "the command sets them itself",
) -> None:
    """One sentence for the first of ``values`` that is not an option of the dataclass
    ``config_class``, or is one of ``exclude`` (the options the command sets itself, for every
    run alike, ``why`` saying so: a lever would override a run's identity, e.g. its seed behind
    a folder named for another, or be ignored), or whose JSON value has the wrong type
    (``"false"`` for a flag, ``"5,7"`` for a list, 1.5 for a count), or that is NaN or infinite
    (Python's JSON reads both) or a whole number too large for a float, so a lever given as JSON
    is refused before anything trains, never silently misread."""
    known = {f.name for f in dataclasses.fields(config_class)}
    bad = sorted(set(values) - known)
    if bad:
        raise UserError(
            f"{where}: unknown lever(s) {bad}; levers are the options of the command with _ for "
            "-, e.g. attacker_sign_step."
        )
    if fixed := sorted(set(values) & set(exclude)):
        raise UserError(f"{where}: {', '.join(fixed)} cannot be set by a lever: {why}.")
    check_types(config_class, values, where)


def check_types(config_class: type, values: dict[str, Any], where: str, advice: str = "") -> None:
    """One sentence, ``<where>: <name> must be <kind>; got <value><advice>.``, for the first of
    ``values`` (options of the dataclass ``config_class`` by name, read as JSON) that is not
    ``finite`` (NaN, infinite, a whole number too large for a float) or whose value does not fit
    the option's type (``json_fits``)."""
    hints = typing.get_type_hints(config_class)
    for name, value in values.items():
        numbers = value if isinstance(value, list) else [value]
        if not all(finite(v) for v in numbers):
            kind = "finite numbers" if isinstance(value, list) else "a finite number"
            raise UserError(f"{where}: {name} must be {kind}; got {json.dumps(value)}{advice}.")
        if not json_fits(value, hints[name]):
            wanted = inner_type(hints[name])
            if typing.get_origin(wanted) is list:
                items = {int: "whole numbers", float: "numbers", str: "strings"}
                label = f"a list of {items[typing.get_args(wanted)[0]]}"
            else:
                label = _WORDS.get(wanted, str(wanted))
            raise UserError(f"{where}: {name} must be {label}; got {json.dumps(value)}{advice}.")


@contextmanager
def as_written(where: str, names: Iterable[str], always: bool = False) -> Iterator[None]:
    """Inside: a ``UserError`` whose sentence names one of ``names`` (options given by field
    name: ``--levers``' keys, gail-stability's ``field=value`` overrides) as a ``solve`` flag is
    raised again as ``<where>: <sentence>``, each such flag spelt as written (``--x-y`` as
    ``x_y``, ``--no-x-y`` as ``x_y false``): the command that read them has no such flag, and the
    sentence said neither which flag nor where. A sentence about no such option passes unchanged:
    it is about an option the command has itself (as ``bilevel.recorded.blame_recorded`` does for
    a run folder's values), unless ``always`` (every option is one of ``names``: a grid entry's),
    which prefixes ``where`` to every sentence."""
    try:
        yield
    except UserError as err:
        text, found = str(err), 0
        for name in names:
            flag = re.escape(name.replace("_", "-"))
            text, off = re.subn(rf"--no-{flag}(?![\w-])", f"{name} false", text)
            text, on = re.subn(rf"--{flag}(?![\w-])", name, text)
            found += off + on
        if not (found or always):
            raise
        raise UserError(f"{where}: {text}") from None


def typed_options(config: Any) -> frozenset[str]:
    """The options of ``config`` typed on the command line (``config.given``, set by
    ``with_options``; a study or bench sets it to an entry's own options); none for a
    configuration built in code."""
    return getattr(config, "given", None) or frozenset()


def check_same_command(config: Any, recorded: dict[str, Any]) -> None:
    """For ``--resume``: a run folder's ``config.json`` that records an option the dataclass
    ``config`` lacks was written by another command (a GAIL run resumed as DRO): one sentence
    naming those options, before any of them is read."""
    fields = {f.name for f in dataclasses.fields(config)}
    if unknown := sorted(set(recorded) - fields):
        shown = ", ".join(unknown[:3]) + (", ..." if len(unknown) > 3 else "")
        raise UserError(
            f"The run folder records options this command does not have ({shown}): it was "
            "trained by another `solve` command (or another version of this one); resume it with that."
        )


def inherit(config: Any, recorded: dict[str, Any], keep: tuple[str, ...] = ()) -> dict[str, Any]:
    """For ``--resume``: every option of the dataclass ``config`` that the command line did not
    give (``config.given``, set by ``with_options``; without it, every option left unset, None)
    takes the value the run folder ``recorded``, ``keep``'s options aside (those that may differ
    on a resume, e.g. the device). So ``--out RUN --resume`` alone continues a run as it was
    trained, and an option typed with another value is still refused as another configuration.
    Returns the values taken, by option name (``bilevel.recorded.blame_recorded`` reads them)."""
    given = getattr(config, "given", None)
    taken = {}
    for f in dataclasses.fields(config):
        if f.name in keep or f.name not in recorded:
            continue
        if getattr(config, f.name) is None or (given is not None and f.name not in given):
            setattr(config, f.name, recorded[f.name])
            taken[f.name] = recorded[f.name]
    return taken
