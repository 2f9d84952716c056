"""``seeded``: a measurement inside it draws the same randomness every time and leaves training's
stream where it was, on the CPU and on the GPU in use."""

import pytest
import torch

from bilevel.seeding import seeded


def test_the_block_draws_from_its_seed():
    with seeded(3):
        first = torch.rand(5)
    torch.rand(7)  # training moves on between two validations
    with seeded(3):
        second = torch.rand(5)
    assert torch.equal(first, second)
    with seeded(4):
        assert not torch.equal(torch.rand(5), first)


@pytest.mark.parametrize("seed", [11, None])
def test_training_stream_continues_as_if_the_block_never_ran(seed):
    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    with seeded(seed):
        torch.rand(100)
    assert torch.equal(torch.rand(4), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_gpu_stream_continues_too():
    """``fork_rng(devices=[])`` restored the CPU's generator only, and ``manual_seed`` inside it
    reseeded the GPU's: every epoch's draws on the GPU then repeated the last epoch's."""
    torch.manual_seed(0)
    torch.rand(1, device="cuda")
    state = torch.cuda.get_rng_state()
    expected = torch.rand(4, device="cuda")
    torch.cuda.set_rng_state(state)
    with seeded(5):
        torch.rand(100, device="cuda")
    assert torch.equal(torch.rand(4, device="cuda"), expected)
