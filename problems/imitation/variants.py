"""The followers that ``gail-stability`` compares, by name: a preset, optionally with
``GAILConfig`` fields overridden, written ``name[:field=value[:field=value ...]]``, e.g.
``l2l:meta_objective=q:trust_radius=0``.

Presets: ``adam`` (GAIL), ``l2l`` (L2L-GAIL, the residual LSTM on Adam), ``oneshot`` (the one-shot
trust-region follower), and two hand-designed baselines that also calm the discriminator:
``adam-gp`` (Adam with the gradient penalty λ = 10 of Gulrajani et al. 2017 / Kostrikov et al.
2019) and ``adam-1step`` (Adam with one D step per round instead of three).
"""

from __future__ import annotations

import re
from dataclasses import fields, replace
from typing import Any

from bilevel.errors import UserError
from problems.imitation.config import GAILConfig, check_unused

PRESETS: dict[str, dict[str, Any]] = {
    "adam": {"follower": "adam"},
    "l2l": {"follower": "l2l"},
    "oneshot": {"follower": "oneshot"},
    "adam-gp": {"follower": "adam", "grad_penalty": 10.0},
    "adam-1step": {"follower": "adam", "disc_steps": 1},
}
LABELS = {
    "adam": "GAIL",
    "l2l": "L2L-GAIL",
    "oneshot": "one-shot L2L",
    "adam-gp": "GAIL + GP",
    "adam-1step": "GAIL, 1 D step",
}
_FIELDS = {f.name: f for f in fields(GAILConfig)}
_NOT_PER_VARIANT = ("env", "steps", "seed", "cache_dir")  # the study's, the same for every run


def _value(name: str, text: str) -> Any:
    """``text`` as the type of ``GAILConfig.<name>`` (int, float, bool, str, or none)."""
    kind = str(_FIELDS[name].type)
    if text.lower() == "none" and "None" in kind:
        return None
    try:
        if kind.startswith("int"):
            return int(text)
        if kind.startswith("float"):
            return float(text)
        if kind.startswith("bool"):
            return {"true": True, "false": False}[text.lower()]
    except (ValueError, KeyError):
        raise UserError(f"{name}={text!r} in --followers is not a valid {kind}.") from None
    return text


def overridden(spec: str) -> list[str]:
    """The fields a ``--followers`` entry ``spec`` overrides, by name."""
    return [item.partition("=")[0] for item in spec.split(":")[1:]]


def parse_variant(spec: str, base: GAILConfig) -> tuple[str, str, GAILConfig]:
    """(label for tables, folder-safe name, the run's config without its seed) of ``spec``."""
    name, *overrides = spec.split(":")
    if name not in PRESETS:
        raise UserError(
            f"Unknown follower {name!r} in --followers; choose from: {', '.join(PRESETS)} "
            "(optionally with :field=value overrides)."
        )
    changes, typed = dict(PRESETS[name]), set()  # typed: the fields overridden so far
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or key not in _FIELDS or key in _NOT_PER_VARIANT:
            raise UserError(
                f"{item!r} in --followers is not field=value for a per-run option of solve gail "
                f"(such as disc_steps=1 or meta_objective=q)."
            )
        if key in PRESETS[name] or key in typed:  # the label would misname the run
            raise UserError(
                f"{item!r} in --followers sets {key} "
                + ("a second time" if key in typed else f"that the {name} preset sets")
                + "; give each option once, and start from adam for another follower or D steps."
            )
        typed.add(key)
        changes[key] = _value(key, text)
    variant = replace(base, **changes)
    for item in overrides:  # typed, the preset's not; named as typed, in --followers
        try:
            check_unused(variant, typed, names={item.partition("=")[0]})
        except UserError:
            raise UserError(
                f"{item!r} in --followers sets an option the {name} run does not read (its "
                "follower or meta-objective ignores it), so it would change nothing."
            ) from None
    label = LABELS[name] + "".join(f", {item}" for item in overrides)
    folder = re.sub(r"[^A-Za-z0-9_.-]+", "-", spec.replace(":", "_"))
    return label, folder, variant
