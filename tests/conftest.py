"""Shared test set-up: a fixed thread count (the machine is shared and has 2 cores) and seeds."""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _threads_kept() -> Iterator[None]:
    """Two threads again after every test: a benchmark script's ``main`` sets one for itself, and
    a run trained by a later module's fixture must match one trained in a subprocess with
    OMP_NUM_THREADS=2 (module fixtures are made before the next test's own fixtures)."""
    yield
    torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
