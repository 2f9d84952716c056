"""The typer command generated from a run's configuration dataclass (``with_options``): one
option per field, with the field's default and help text, so that no default or help is written
twice; a ``comma`` field is typed as "a,b,c" and parsed by ``parse_list``. The command's
``config.given`` records which options were typed (``bilevel.options.inherit`` reads it on a
resume). The fields themselves are declared with ``bilevel.options.option``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any

from bilevel.errors import UserError, as_flag
from bilevel.options import field_default, inner_type


def _given_on_command_line(context: Any, names: dict[str, Any]) -> frozenset[str]:
    """The options of ``names`` the user typed, not left at their defaults (the command's typer
    context says where each value came from)."""
    defaults = ("DEFAULT", "DEFAULT_MAP")
    sources = {n: context.get_parameter_source(n) for n in names}
    return frozenset(
        n for n, src in sources.items() if src is not None and src.name not in defaults
    )


def parse_list(name: str, text: str, item: type, example: str) -> list[Any]:
    """A comma option's text as a list of ``item``; one sentence for a bad entry."""
    try:
        return [item(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(
            f"{as_flag(name)} takes numbers separated by commas, like {example}; got {text!r}."
        ) from None


_CONTEXT = "typer_context"  # the generated command's context: which options were typed


def with_options(config_class: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A typer command whose first parameter is a ``config_class`` built from its options: one
    typer option per field of the dataclass, with the field's default and help (a ``bool | None``
    field as ``--x/--no-x``, a ``comma`` field as text "a,b,c"), followed by the command's own
    parameters. So a default or a help text is written once, on the dataclass."""
    import typer

    hints = typing.get_type_hints(config_class)
    params, lists = [], {}
    for f in dataclasses.fields(config_class):
        meta = f.metadata
        default = field_default(config_class, f.name)
        hint = inner_type(hints[f.name])
        decls = [meta["name"]] if meta.get("name") else []
        if meta.get("comma"):
            lists[f.name] = (typing.get_args(hint)[0], meta["example"])
            hint, default = str, None if default is None else ",".join(map(str, default))
        elif hint is bool:
            flag = f.name.replace("_", "-")
            decls = [f"--{flag}/--no-{flag}"]
        info = typer.Option(default, *decls, help=meta.get("help") or None, hidden=meta.get("hidden", False))  # fmt: skip
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=hint))  # fmt: skip

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = list(inspect.signature(command, eval_str=True).parameters.values())[1:]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            rest = {p.name: kwargs.pop(p.name) for p in own}  # what remains: the options
            for name, (item, example) in lists.items():
                if (text := kwargs.pop(name)) is not None:  # unset: the field's own default
                    kwargs[name] = parse_list(name, text, item, example)
            context = kwargs.pop(_CONTEXT)
            config = config_class(**kwargs)
            config.given = _given_on_command_line(context, kwargs)
            return command(config, **rest)

        keyword = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
        keyword.append(inspect.Parameter(_CONTEXT, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context))  # fmt: skip
        wrapper.__signature__ = inspect.Signature(params + keyword)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params + keyword}
        del wrapper.__wrapped__  # typer reads the signature above, not the command's
        return wrapper

    return decorate
