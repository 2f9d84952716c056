"""What the environment torchrun leaves (or a shell left behind) makes of a run: one process
where WORLD_SIZE says one, a refusal that names what is missing in a sentence, and a restarted
worker told from a first attempt (which ``solve`` resumes from last.pt)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from bilevel import distributed
from bilevel.errors import UserError

TORCHRUN_VARIABLES = ("RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.mark.parametrize("value", ["1", "0", " 1\n", None])
def test_a_world_size_of_one_or_none_is_a_single_process(monkeypatch, value) -> None:
    """``WORLD_SIZE=1 python cli.py ...`` (a shell's leftover, or torchrun's single worker) is one
    process; it needs none of the rendezvous variables and joins no process group."""
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    if value is None:
        monkeypatch.delenv("WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("WORLD_SIZE", value)
    assert distributed.init_from_env(torch.device("cpu")) == distributed.Context(0, 1)


@pytest.mark.parametrize(
    ("unset", "words"),
    [
        (("MASTER_PORT",), "WORLD_SIZE is 2 but MASTER_PORT is not set"),
        (TORCHRUN_VARIABLES, "WORLD_SIZE is 2 but RANK, MASTER_ADDR, MASTER_PORT are not set"),
    ],
)
def test_the_missing_variables_are_named_in_one_sentence(monkeypatch, unset, words) -> None:
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in TORCHRUN_VARIABLES:
        monkeypatch.setenv(name, "0" if name == "RANK" else "127.0.0.1")
    for name in unset:
        monkeypatch.delenv(name)
    with pytest.raises(UserError) as err:
        distributed.init_from_env(torch.device("cpu"))
    assert str(err.value).startswith(words)


def test_an_empty_variable_counts_as_missing(monkeypatch) -> None:
    """``RANK=`` is as unset as no RANK: env:// would fail on it with a ValueError."""
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    with pytest.raises(UserError, match="WORLD_SIZE is 2 but RANK is not set"):
        distributed.init_from_env(torch.device("cpu"))


@pytest.mark.parametrize(("count", "restarted"), [(None, False), ("0", False), ("1", True)])
def test_a_worker_knows_whether_torchrun_restarted_it(monkeypatch, count, restarted) -> None:
    """A first attempt (count 0, or no torchrun) starts afresh, a restarted one resumes: were a
    first attempt taken for a restart, a second run into a finished folder would resume it."""
    if count is None:
        monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT", raising=False)
    else:
        monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", count)
    assert distributed.restarted_by_torchrun() is restarted
