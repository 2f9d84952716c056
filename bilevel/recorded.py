"""Values a run folder's ``config.json`` recorded, as ``--resume`` and ``evaluate`` read them.

The file is JSON the user can edit or damage, so its values are checked where it is read: one of
the wrong JSON type for its option (``"abc"`` for ε, ``"1,2"`` for a list of epochs) is one
sentence naming the file and the key (``check_recorded``), before anything computes with it; one
of the right type that an option's check refuses (``norm: "l7"``) is said to come from the file,
since the option named in the check's sentence was never typed (``blame_recorded``). Which
recorded options a resume compares with the typed ones, and how (``differing_options``), is here
too.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bilevel.errors import UserError, as_flag
from bilevel.options import check_types, typed_options

IGNORED_ON_RESUME = ("resume", "out", "device")  # options that may differ between run and resume
# Options that say where data are read from, not what is trained: one typed on --resume may differ
# from the recorded one (the same folder seen from another working folder, or moved), and is
# used; left out, the recorded one is. The data read are the same whatever the path: mnist5k is
# embedded (--data-dir unused), CIFAR is its official release, whose split is fixed by its files,
# and GAIL's checkpoint holds its demonstrations' digest, so a resume on other demonstrations is
# refused (``problems.imitation.gail.GAIL.load_state_dict``).
READ_FROM_ON_RESUME = ("data_dir", "cache_dir")


def differing_options(
    recorded: dict[str, Any],
    config: dict[str, Any],
    legacy: dict[str, Any],
    ignored: tuple[str, ...] = IGNORED_ON_RESUME,
) -> dict[str, Any]:
    """The options a folder's ``recorded`` config.json gives another value than ``config``, by
    name (sorted), with the recorded value; an option newer than the folder counts as ``legacy``
    says the older code ran it, and ``ignored`` options are not compared."""
    old = {k: v for k, v in legacy.items() if k in config} | recorded
    return {k: old[k] for k in sorted(old) if k not in ignored and old[k] != config.get(k)}


_FLAG = re.compile(r"--([a-z][a-z0-9-]*)")
_EDITED = " (the file is damaged or was edited by hand: fix that value)"


def check_recorded(
    config_classes: type | tuple[type, ...], recorded: Mapping[str, Any], source: Path | str
) -> None:
    """One sentence, ``<source>: <key> must be <kind>; got <value> (...)``, for the first value of
    ``recorded`` (read from ``source``) whose JSON type does not fit its option in one of the
    dataclasses ``config_classes``; keys that are no option of them are left to the caller."""
    classes = config_classes if isinstance(config_classes, tuple) else (config_classes,)
    for config_class in classes:
        known = {f.name for f in dataclasses.fields(config_class)}
        values = {k: v for k, v in recorded.items() if k in known}
        check_types(config_class, values, str(source), _EDITED)


def resolve_resumed(config: Any, recorded: Mapping[str, Any] | None, source: Path) -> None:
    """Resolve ``config`` (a command's options) for a run whose folder recorded ``recorded`` in
    ``source`` (None: a new run): the recorded values' types are checked, the options not typed
    take them (``config.inherit_unset``), and a refusal is said to come from the file, or from
    the typed options that clash with it (``blame_recorded``)."""
    inherited: dict[str, Any] = {}
    changed: list[str] = []
    alone = None
    if recorded is not None:
        check_recorded(type(config), recorded, source)
        changed = typed_changes(config, recorded)
        if changed:  # the recorded run's options as they were, the typed changes left out
            alone = copy.deepcopy(config)
            alone.given = typed_options(config) - set(changed)
            alone.inherit_unset(recorded)
        inherited = config.inherit_unset(recorded)
        check_complete(config, recorded, source)
    with blame_recorded(inherited, source, changed=changed, alone=alone):
        config.resolve()


def check_complete(config: Any, recorded: Mapping[str, Any], source: Path) -> None:
    """One sentence where ``recorded`` (read from ``source``) lacks an option of ``config`` that
    every run records, one not in ``type(config).RECORD_MAY_LACK`` (an option with a value for
    folders older than it, one that may differ on a resume, or one whose default is what older
    runs did): such a file was edited or damaged, and resuming it would train on today's
    default where the run trained on the value the file lost."""
    may_lack = getattr(type(config), "RECORD_MAY_LACK", frozenset())
    names = [f.name for f in dataclasses.fields(config)]
    missing = [name for name in names if name not in recorded and name not in may_lack]
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise UserError(
            f"--resume: {source} lacks {shown}, which every run records, so the folder "
            f"{source.parent} was edited or damaged and cannot be resumed as it was trained; "
            "start a new run with another --out."
        )


def _resolves(config: Any) -> bool:
    """Whether ``config`` (None: not known) resolves without a refusal."""
    if config is None:
        return False
    try:
        config.resolve()
    except Exception:  # refused (or worse): not a configuration that holds on its own
        return False
    return True


def typed_changes(config: Any, recorded: Mapping[str, Any]) -> list[str]:
    """The options typed on the command line (``config.given``) with another value than
    ``recorded`` holds for them: a resume that mixes two configurations (a path to read data
    from is no part of one: ``READ_FROM_ON_RESUME``)."""
    typed = typed_options(config) - set(READ_FROM_ON_RESUME)
    return sorted(k for k in typed if k in recorded and recorded[k] != getattr(config, k))


@contextmanager
def blame_recorded(
    inherited: Mapping[str, Any],
    source: Path | str,
    remedy: str = "fix it there or start the run anew",
    changed: list[str] | None = None,
    alone: Any = None,
) -> Iterator[None]:
    """Inside: a ``UserError`` whose sentence names options (``--norm``), every one of which took
    its value from ``inherited`` (the values read from ``source``, not typed), is raised again
    saying that the value is a key of ``source`` and what to do (``remedy``); where options were
    typed with other values than ``source`` records (``changed``, ``typed_changes``), the error
    is the mixture's, not the file's, and says so, where it names one of them (or no option at
    all), or where the recorded options without those changes (``alone``, an unresolved
    configuration) resolve: ``--norm linf`` typed for an L2 run fails ε's check on the
    recorded 1.5 only with it. An error the recorded options make alone is the file's as above
    (a recorded ``norm: "l7"`` is the file's whatever --seed was typed); any other error passes
    unchanged."""
    try:
        yield
    except UserError as err:
        text = str(err)
        keys = [flag.replace("-", "_") for flag in _FLAG.findall(text)]
        if changed and (not keys or set(keys) & set(changed) or _resolves(alone)):
            flags = ", ".join(as_flag(k) for k in changed)
            raise UserError(
                f"{text.rstrip('.')}; {flags} typed for this resume differ from what {source} "
                "records, and the mixture of the two configurations does not hold: resume "
                f"without {flags}, or start a new run with another --out."
            ) from None
        if not keys or any(key not in inherited for key in keys):
            raise
        raise UserError(
            f"{text.rstrip('.')}; that value comes from {source}, where {keys[0]} is "
            f"{json.dumps(inherited[keys[0]])}, not from the command line, so {remedy}."
        ) from None
