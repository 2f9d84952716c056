"""Defaults declared once: every option of a solve command is generated from its configuration
dataclass (``bilevel.command_options.with_options``), with the field's default and help."""

from __future__ import annotations

import dataclasses

import pytest
import typer
from typer.testing import CliRunner

from bilevel.command_options import with_options
from bilevel.errors import UserError
from bilevel.options import inherit, option
from cli import app
from problems.adversarial.ait_config import AITConfig
from problems.adversarial.dro_config import DROConfig
from problems.adversarial.evaluation import EvalOptions
from problems.imitation.config import GAILConfig

COMMANDS = {("solve", "adversarial-dro"): DROConfig, ("solve", "adversarial-ait"): AITConfig, ("solve", "gail"): GAILConfig}  # fmt: skip


def _field_default(f: dataclasses.Field):
    value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return ",".join(map(str, value)) if f.metadata.get("comma") and value is not None else value


@pytest.mark.parametrize("path", list(COMMANDS), ids=lambda p: p[1])
def test_every_field_is_an_option_with_the_dataclass_default_and_help(path) -> None:
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    params = {p.name: p for p in command.params}
    for f in dataclasses.fields(COMMANDS[path]):
        assert f.name in params, f.name
        assert params[f.name].default == _field_default(f), f.name
        assert params[f.name].help == (f.metadata.get("help") or None), f.name


EVALUATE_INTERNAL = ("steps_grid", "tolerance")  # EvalOptions fields no option sets


def test_every_evaluate_option_has_the_eval_options_default() -> None:
    """``evaluate``'s options are written by hand (a positional run folder, repeated path
    options), so each takes its default from its ``EvalOptions`` field: none may differ."""
    command = typer.main.get_command(app).commands["evaluate"]
    params = {p.name: p for p in command.params}
    for f in dataclasses.fields(EvalOptions):
        if f.name in EVALUATE_INTERNAL:
            assert f.name not in params, f.name
            continue
        assert f.name in params, f.name
        if f.name != "run_dir":  # required: no default
            assert params[f.name].default == _field_default(f), f.name


@dataclasses.dataclass
class _Config:
    count: int = option(3, "How many.")
    ratio: float | None = option(None, "A ratio (default: computed).")
    flag: bool | None = option(None, "On or off (default: decided later).")
    sizes: list[int] = option([1, 2], "Sizes, like 1,2.", comma=True, example="1,2")


def _app(seen: list) -> typer.Typer:
    small = typer.Typer()

    @small.command()
    @with_options(_Config)
    def run(cfg: _Config, out: str = typer.Option("here", help="Not configuration.")) -> None:
        seen.append((cfg, out))

    return small


def test_the_generated_command_builds_the_dataclass_and_keeps_its_own_options() -> None:
    seen: list = []
    runner = CliRunner()
    assert runner.invoke(_app(seen), []).exit_code == 0
    assert seen[-1] == (_Config(), "here")  # no option given: exactly the dataclass's defaults
    args = ["--count", "5", "--ratio", "0.5", "--no-flag", "--sizes", "4,8", "--out", "there"]
    assert runner.invoke(_app(seen), args).exit_code == 0
    assert seen[-1] == (_Config(count=5, ratio=0.5, flag=False, sizes=[4, 8]), "there")
    bad = runner.invoke(_app(seen), ["--sizes", "4,x"])
    assert isinstance(bad.exception, UserError) and len(seen) == 2  # cli.py says it, exit 2
    assert str(bad.exception) == "--sizes takes numbers separated by commas, like 1,2; got '4,x'."


@dataclasses.dataclass
class _Resumed:
    lr: float | None = option(None, "A learning rate.")
    epochs: int = option(10, "Epochs.")
    device: str = option("auto", "Where to run.")


def test_a_resume_inherits_what_was_not_typed_except_what_may_differ_on_a_resume() -> None:
    """``--out RUN --resume`` alone continues the run as trained: the silent options take the
    recorded values, a typed one keeps its own, and ``keep``'s (the device) stay as given here,
    never the recorded machine's."""
    config = _Resumed(epochs=12)
    config.given = frozenset({"epochs"})
    recorded = {"lr": 0.05, "epochs": 10, "device": "cuda"}
    taken = inherit(config, recorded, keep=("device",))
    assert (config.lr, config.epochs, config.device) == (0.05, 12, "auto")
    assert taken == {"lr": 0.05}
