"""The attacker networks' contract: shape, strict ε bound, live ε, width scaling, gradient flow."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from learned_optimizers import CNNAttacker, PointwiseAttacker, SlimAttacker, build_attacker

torch.set_num_threads(1)

KINDS = {
    "cnn": CNNAttacker,
    "slim": SlimAttacker,
    "slim-reference": functools.partial(SlimAttacker, reference=True),
    "pointwise": PointwiseAttacker,
}


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def large_input(batch: int, channels: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, height, width, generator=generator) * 1e4


@pytest.mark.parametrize("kind", ["cnn", "slim", "slim-reference", "pointwise"])
@pytest.mark.parametrize("width", [0.5, 0.125])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_output_shape_and_strict_bound(kind: str, width: float, shape: tuple, mode: str) -> None:
    torch.manual_seed(0)
    channels, height, width_px = shape
    eps = 8 / 255
    attacker = KINDS[kind](2 * channels, channels, eps, width=width).train(mode == "train")
    with torch.no_grad():
        out = attacker(large_input(2, 2 * channels, height, width_px))
    assert out.shape == (2, channels, height, width_px)
    assert torch.isfinite(out).all()
    assert (out.abs() < eps).all()
    assert out.abs().max() > 0


def test_full_width_cnn_bound_on_digits() -> None:
    torch.manual_seed(0)
    attacker = CNNAttacker(2, 1, 0.3).eval()  # eval: huge inputs saturate tanh
    with torch.no_grad():
        out = attacker(large_input(2, 2, 28, 28))
    assert out.shape == (2, 1, 28, 28)
    assert (out.abs() < 0.3).all()


@pytest.mark.parametrize("size", [(7, 7), (28, 28), (32, 32), (15, 10), (1, 1)])
def test_slim_returns_input_size(size: tuple) -> None:
    torch.manual_seed(0)
    attacker = SlimAttacker(4, 2, 0.1, width=0.25)
    with torch.no_grad():
        out = attacker(large_input(2, 4, *size))
    assert out.shape == (2, 2, *size)
    assert (out.abs() < 0.1).all()


@pytest.mark.parametrize("kind", ["cnn", "slim", "slim-reference", "pointwise"])
def test_changing_eps_after_construction_rescales_output(kind: str) -> None:
    torch.manual_seed(0)
    attacker = KINDS[kind](2, 1, 0.3, width=0.125).eval()
    a = torch.randn(2, 2, 28, 28)
    with torch.no_grad():
        before = attacker(a)
        attacker.eps = 0.03
        after = attacker(a)
    assert attacker.eps == 0.03
    assert (after.abs() < 0.03).all()
    assert before.abs().max() >= 0.03  # the old output did not already fit the new bound
    torch.testing.assert_close(after, before / 10)


@pytest.mark.parametrize("kind", ["cnn", "slim", "slim-reference", "pointwise"])
def test_eps_is_not_a_parameter(kind: str) -> None:
    attacker = KINDS[kind](2, 1, 0.3, width=0.125)
    assert isinstance(attacker.eps, float)
    values = [p for p in attacker.parameters()] + list(attacker.state_dict().values())
    assert all(v.numel() != 1 or v.item() != pytest.approx(0.3) for v in values)
    with pytest.raises(ValueError):
        attacker.eps = -0.1


@pytest.mark.parametrize("kind", ["cnn", "slim", "slim-reference", "pointwise"])
@pytest.mark.parametrize("width", [0.0, -1.0, 16.5, 1e20])
def test_a_width_outside_zero_to_sixteen_is_refused_before_any_layer_is_allocated(
    kind: str, width: float
) -> None:
    """0 or less has no channels; 1e20 asked the allocator for terabytes (a traceback in solve)."""
    with pytest.raises(ValueError, match=r"width must be in \(0, 16\]"):
        KINDS[kind](2, 1, 0.3, width=width)


@pytest.mark.parametrize("kind", ["cnn", "slim", "slim-reference", "pointwise"])
def test_width_shrinks_parameters_quadratically(kind: str) -> None:
    full = n_params(KINDS[kind](6, 3, 0.03, width=1.0))
    half = n_params(KINDS[kind](6, 3, 0.03, width=0.5))
    quarter = n_params(KINDS[kind](6, 3, 0.03, width=0.25))
    assert 0.2 < half / full < 0.3
    assert 0.04 < quarter / full < 0.08


@pytest.mark.parametrize(
    "kind, shape",
    [
        ("cnn", (1, 28, 28)),
        ("slim", (1, 28, 28)),
        ("slim", (3, 7, 7)),
        ("slim-reference", (3, 7, 7)),
        ("pointwise", (1, 28, 28)),
    ],
)
def test_every_parameter_gets_a_gradient(kind: str, shape: tuple) -> None:
    torch.manual_seed(0)
    channels, height, width_px = shape
    attacker = KINDS[kind](2 * channels, channels, 0.3, width=0.25).train()
    attacker(torch.randn(4, 2 * channels, height, width_px)).pow(2).sum().backward()
    grads = dict(attacker.named_parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in grads.values())
    largest = max(p.grad.abs().max() for p in grads.values())
    for name, param in grads.items():
        # Not just round-off: a parameter a batch norm cancels gets ~1e-7 of the largest.
        assert param.grad.abs().max() > 1e-4 * largest, name


def test_pointwise_attacker_maps_each_pixel_on_its_own() -> None:
    """Coordinate-wise: one pixel's input moves that pixel's δ and no other, and the same input at
    two pixels gives the same δ there."""
    torch.manual_seed(0)
    attacker = PointwiseAttacker(2, 1, 0.3, width=0.125).eval()
    a = torch.randn(1, 2, 5, 5)
    a[..., 4, 4] = a[..., 0, 0]
    moved = a.clone()
    moved[..., 2, 3] += 1.0
    with torch.no_grad():
        before, after = attacker(a), attacker(moved)
    changed = (after != before)[0, 0]
    assert changed[2, 3] and changed.sum() == 1
    assert before[0, 0, 4, 4] == before[0, 0, 0, 0]


def test_gradient_reaches_the_input() -> None:
    torch.manual_seed(0)
    a = torch.randn(4, 2, 28, 28, requires_grad=True)
    SlimAttacker(2, 1, 0.3, width=0.25)(a).pow(2).sum().backward()
    assert a.grad is not None and a.grad.abs().max() > 0


def test_four_block_variant_is_one_argument() -> None:
    torch.manual_seed(0)
    three = CNNAttacker(6, 3, 0.03, width=0.125)
    four = CNNAttacker(6, 3, 0.03, width=0.125, blocks=(128, 256, 128, 64))
    assert n_params(four) > n_params(three)
    with torch.no_grad():
        out = four(large_input(2, 6, 32, 32))
    assert out.shape == (2, 3, 32, 32) and (out.abs() < 0.03).all()


@pytest.mark.parametrize("kind", ["cnn", "slim", "slim-reference", "pointwise"])
def test_build_attacker(kind: str) -> None:
    attacker = build_attacker(kind, 2, 1, 0.3, 0.125)
    assert type(attacker) is type(KINDS[kind](2, 1, 0.3, width=0.125))
    assert attacker.eps == 0.3
    assert n_params(attacker) == n_params(KINDS[kind](2, 1, 0.3, width=0.125))


def test_build_attacker_unknown_kind_lists_valid_kinds() -> None:
    with pytest.raises(ValueError) as error:
        build_attacker("rnn", 2, 1, 0.3, 1.0)
    message = str(error.value)
    assert "rnn" in message and "cnn" in message and "slim" in message


@pytest.mark.parametrize("width", [0.0, -1.0])
def test_non_positive_width_is_rejected(width: float) -> None:
    with pytest.raises(ValueError):
        CNNAttacker(2, 1, 0.3, width=width)
    with pytest.raises(ValueError):
        SlimAttacker(2, 1, 0.3, width=width)


def test_slim_reference_is_the_authors_build() -> None:
    """The authors' released slim attacker: a batch norm before the transposed convolution, the
    tanh scale from 5, no bias on the last convolution; the same function class otherwise."""
    ours, theirs = (
        SlimAttacker(2, 1, 0.3, width=0.5),
        build_attacker("slim-reference", 2, 1, 0.3, 0.5),
    )
    norms = [sum(isinstance(m, nn.BatchNorm2d) for m in g.modules()) for g in (ours, theirs)]
    assert norms[1] == norms[0] + 1
    assert theirs.scale.item() == 5.0 and ours.scale.item() == 1.0
    assert theirs.out.bias is None and n_params(ours) - n_params(theirs) == 1


def test_the_l2_bound_squashes_the_norm_by_tanh() -> None:
    """‖δ‖₂ = ε·tanh(‖z‖₂): inside the ball and smooth; a hard clip would be inside the ball too,
    but its gradient dies past radius 1."""
    g = CNNAttacker(2, 1, 0.5, width=0.1, norm="l2")
    z = torch.zeros(2, 1, 2, 2)
    z[0, 0, 0, 0], z[1, 0, 0, 0] = 0.3, 2.0
    norms = g.bound(z).flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, 0.5 * torch.tanh(torch.tensor([0.3, 2.0])))


def test_the_slim_attacker_sees_its_input_through_the_skip_connection() -> None:
    torch.manual_seed(0)
    g = SlimAttacker(2, 1, 0.3, width=0.1).eval()
    g(torch.rand(1, 2, 8, 8)).sum().backward()
    assert g.out.weight.grad[:, -2:].abs().sum() > 0  # the input's channels, last in the concat


def test_the_reference_slim_attacker_takes_the_authors_batch_norm_eps() -> None:
    g = SlimAttacker(2, 1, 0.3, width=0.1, reference=True)
    assert g.stem[1].eps == g.up[1].eps == 1e-3
