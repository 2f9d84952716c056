"""The collectives ``fit``, the carry and the checkpoint lean on, called directly in two gloo
processes on CPU (seconds, where a torchrun of ``solve`` takes a minute): what each returns on
every process, with shares of unequal size, and what each returns in a single process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from helpers import join_gloo, spawn_two

from bilevel import distributed


def _collectives(rank: int) -> dict:
    """What rank ``rank`` of two gets from each collective (the same calls on both ranks)."""
    rows = torch.tensor([[0.0, 0.5], [1.0, 1.5]]) if rank == 0 else torch.tensor([[10.0, 10.5]])
    mean = distributed.mean_over_processes(
        {"loss": torch.tensor(float(rank + 1)), "acc": 4.0 * rank}
    )
    averaged = torch.tensor([float(rank + 1), 10.0 * rank])
    distributed.average([averaged])
    return {
        "rank": distributed.rank(),
        "world_size": distributed.world_size(),
        "active": distributed.active(),
        # rank 0 holds 2 rows and rank 1 one, as shard deals an uneven last minibatch
        "rows": distributed.gather_rows(rows),
        "indices": distributed.gather_rows(torch.arange(2 - rank) + 100 * rank),
        "values": distributed.gather_values({"sum": torch.tensor(1.5 + rank), "count": rank + 3}),
        "stacked": distributed.gather_stacked(torch.tensor([rank, 2 * rank])),
        "signal_on_rank_1": distributed.agree_on_signal(15 if rank == 1 else None),
        "no_signal": distributed.agree_on_signal(None),
        "two_signals": distributed.agree_on_signal(2 if rank == 0 else 15),
        "mean": mean,
        "empty_mean": distributed.mean_over_processes({}),
        "averaged": averaged,
    }


def _worker(rank: int, port: int, out: str) -> None:
    join_gloo(rank, port)
    torch.save(_collectives(rank), Path(out) / f"rank{rank}.pt")
    dist.barrier()
    distributed.shutdown()
    os._exit(0)  # skip interpreter teardown, where gloo's threads can abort (test_distributed.py)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("collectives")
    spawn_two(_worker, str(out))
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def test_each_process_knows_its_place(ranks) -> None:
    places = [(r["rank"], r["world_size"], r["active"]) for r in ranks]
    assert places == [(0, 2, True), (1, 2, True)]


def test_gather_rows_concatenates_unequal_shares_in_rank_order_on_every_process(ranks) -> None:
    """The carry keeps every process's δ rows: 2 rows from rank 0 and 1 from rank 1 are 3 rows,
    rank 0's first, with no padding row in between or after."""
    for r in ranks:
        assert torch.equal(r["rows"], torch.tensor([[0.0, 0.5], [1.0, 1.5], [10.0, 10.5]]))
        assert r["indices"].tolist() == [0, 1, 100]


def test_gather_values_and_stacked_hold_one_entry_per_rank_in_its_own_dtype(ranks) -> None:
    """Rank 0's checkpoint keeps each process's running sums and generator states, row r for
    rank r, in the values' own dtypes (a count stays an integer)."""
    values = ranks[0]["values"]
    assert list(values) == ["count", "sum"]
    assert values["count"].dtype == torch.int64 and values["count"].tolist() == [3, 4]
    assert values["sum"].dtype == torch.float32 and values["sum"].tolist() == [1.5, 2.5]
    assert ranks[0]["stacked"].tolist() == [[0, 0], [1, 2]]


def test_every_process_agrees_on_the_stop_signal(ranks) -> None:
    """A signal that reached one process stops both; none anywhere is no stop (None, not 0);
    of two, the larger number."""
    for r in ranks:
        assert r["signal_on_rank_1"] == 15
        assert r["no_signal"] is None
        assert r["two_signals"] == 15


def test_the_logged_sums_and_averaged_tensors_are_means_over_the_processes(ranks) -> None:
    for r in ranks:
        assert {k: float(v) for k, v in r["mean"].items()} == {"loss": 1.5, "acc": 2.0}
        assert r["empty_mean"] == {}
        assert r["averaged"].tolist() == [1.5, 5.0]


def test_a_single_process_gets_its_own_values_back() -> None:
    """No process group: each collective is the identity (or one row), with no group to join."""
    assert (distributed.rank(), distributed.world_size(), distributed.active()) == (0, 1, False)
    rows = torch.arange(3)
    assert distributed.gather_rows(rows) is rows
    sums = {"loss": torch.tensor(2.0)}
    assert distributed.mean_over_processes(sums) is sums
    assert distributed.agree_on_signal(None) is None and distributed.agree_on_signal(15) == 15
    values = distributed.gather_values({"count": 3, "sum": torch.tensor(1.5)})
    assert values["count"].dtype == torch.int64 and values["count"].tolist() == [3]
    assert values["sum"].dtype == torch.float32 and values["sum"].tolist() == [1.5]
    assert distributed.gather_stacked(torch.tensor([4, 5])).tolist() == [[4, 5]]
    averaged = torch.tensor([3.0])
    distributed.average([averaged])
    assert averaged.tolist() == [3.0]
