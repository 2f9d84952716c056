"""g_φ's maths and build: the closed-form ε bound, the ε and norm it accepts, what widths build."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from learned_optimizers import CNNAttacker, PointwiseAttacker, build_attacker, start_at_zero
from learned_optimizers.attacker import scaled_channels

KINDS = ["cnn", "slim", "slim-reference", "pointwise"]


def test_the_linf_bound_is_eps_tanh_of_each_entry() -> None:
    """Table 1's last row, ε · tanh(z) per entry: odd in z, ε·tanh(1) at z = 1, not a squashing
    that keeps inside the ball but loses the sign or the slope (sigmoid, ε/2, tanh(z/2))."""
    g = PointwiseAttacker(2, 1, 0.3, width=0.0625)
    z = torch.tensor([[[[-2.0, -1.0, -0.25, 0.0, 0.25, 1.0, 2.0]]]])
    torch.testing.assert_close(g.bound(z), 0.3 * torch.tanh(z))
    assert g.bound(torch.ones(1, 1, 1, 1)).item() == pytest.approx(0.3 * math.tanh(1.0))


def test_the_l2_radius_is_each_samples_euclidean_norm() -> None:
    """‖δ‖₂ = ε·tanh(‖z‖₂) with δ along z, for a z of several non-zero entries (one entry alone
    cannot tell the L2 norm from the L1 or L∞ ones)."""
    g = PointwiseAttacker(2, 1, 0.5, width=0.0625, norm="l2")
    z = torch.tensor([3.0, 4.0, 0.0, 0.0]).view(1, 1, 2, 2) / 10  # ‖z‖₂ = 0.5, ‖z‖₁ = 0.7
    delta = g.bound(z)
    torch.testing.assert_close(delta, z * (0.5 * math.tanh(0.5) / 0.5))


@pytest.mark.parametrize("kind", ["cnn", "slim", "pointwise"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_a_zero_started_g_phi_is_exactly_zero_in_either_ball(kind: str, norm: str) -> None:
    """``start_at_zero`` makes g_φ₀ ≡ 0 so the follower starts as PGM; under L2 the bound divides
    by ‖z‖₂ = 0, which must give 0 (and a finite gradient), not 0 · ∞ = nan."""
    g = start_at_zero(build_attacker(kind, 2, 1, 0.5, 0.125, norm=norm))
    out = g(torch.randn(2, 2, 8, 8))
    assert (out == 0).all()
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in g.parameters() if p.grad is not None)


@pytest.mark.parametrize("kind", KINDS)
def test_start_at_zero_zeroes_a_g_phi_whose_output_layer_has_moved(kind: str) -> None:
    """g_φ ≡ 0 after ``start_at_zero`` whatever the last layer held (a bias moved by training, not
    only the zeros the attackers are built with)."""
    g = build_attacker(kind, 2, 1, 0.3, 0.125).eval()
    with torch.no_grad():
        for p in g.output_layer.parameters():
            p.fill_(0.5)
    assert g(torch.randn(1, 2, 6, 6)).abs().max() > 0
    assert (start_at_zero(g)(torch.randn(1, 2, 6, 6)) == 0).all()


@pytest.mark.parametrize("kind", KINDS)
def test_eps_may_be_zero_but_not_nan_or_infinite(kind: str) -> None:
    """ε ≥ 0 and finite: ε = 0 is the empty ball (δ ≡ 0); a nan or infinite ε would make every δ
    nan or unbounded."""
    g = build_attacker(kind, 2, 1, 0.3, 0.125).eval()
    g.eps = 0.0
    assert (g(torch.randn(1, 2, 6, 6)) == 0).all()
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
            g.eps = bad
    assert g.eps == 0.0


@pytest.mark.parametrize("kind", KINDS)
def test_an_unknown_norm_is_refused_with_the_choices(kind: str) -> None:
    with pytest.raises(ValueError, match=r"Unknown attacker norm 'l1'; choose one of: linf, l2\."):
        build_attacker(kind, 2, 1, 0.3, 0.125, norm="l1")


def test_width_scales_channels_rounded_and_at_least_one() -> None:
    """``max(1, round(c · width))`` for width in (0, 16]: 16 itself is allowed, 25.6 channels are
    26, and a width too small for one channel still builds one."""
    assert scaled_channels(64, 16.0) == 1024
    assert scaled_channels(256, 0.1) == 26 and scaled_channels(64, 0.1) == 6
    assert scaled_channels(16, 1 / 64) == 1
    assert PointwiseAttacker(2, 1, 0.3, width=16.0).out.in_channels == 4096


@pytest.mark.parametrize("kind", KINDS)
def test_a_tiny_width_builds_every_layer_with_a_channel(kind: str) -> None:
    g = build_attacker(kind, 2, 1, 0.3, 1 / 64).eval()
    convs = [m for m in g.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    assert all(m.out_channels >= 1 and m.in_channels >= 1 for m in convs)
    out = g(torch.randn(1, 2, 6, 6))
    assert out.shape == (1, 1, 6, 6) and (out.abs() < 0.3).all()


def test_the_cnn_attacker_needs_a_residual_block() -> None:
    with pytest.raises(ValueError, match="at least one residual block"):
        CNNAttacker(2, 1, 0.3, width=0.125, blocks=())


@pytest.mark.parametrize("kind", KINDS)
def test_a_zero_started_g_phi_learns_an_input_dependent_delta_in_one_step(kind: str) -> None:
    """``start_at_zero`` zeroes the *last* layer, whose inputs are not zero: one gradient step on φ
    gives a δ that varies with the input. Zeroing an earlier layer also gives g_φ₀ ≡ 0, but then
    only the last bias gets a gradient and δ stays one constant."""
    g = start_at_zero(build_attacker(kind, 2, 1, 0.3, 0.125))
    a = torch.randn(2, 2, 6, 6)
    (g(a) * torch.randn(2, 1, 6, 6)).sum().backward()
    torch.optim.SGD(g.parameters(), lr=1.0).step()
    with torch.no_grad():
        assert g.eval()(a).std() > 1e-6


@pytest.mark.parametrize("width", [1.0, 0.1])
def test_the_pointwise_attacker_is_a_two_hidden_layer_perceptron_of_256_width_units(
    width: float,
) -> None:
    """The module docstring's 1x1 layers, h = round(256 · width): (in + 1)·h + (h + 1)·h +
    (h + 1)·out weights and biases, plus the tanh scale s, which starts at 1."""
    hidden, c_in, c_out = round(256 * width), 6, 3
    g = PointwiseAttacker(c_in, c_out, 0.3, width=width)
    expected = (c_in + 1) * hidden + (hidden + 1) * hidden + (hidden + 1) * c_out + 1
    assert sum(p.numel() for p in g.parameters()) == expected
    assert g.scale.item() == 1.0


def test_the_slim_attackers_odd_size_crop_drops_the_padding_row_and_column() -> None:
    """The stride-2 stem pads an odd image with zeros to an even one; cropping the up-sampled
    features at the end drops that padding, so δ of an odd image is δ of it zero-padded by one
    row and column, but for the last row and column (where the last conv's padding differs)."""
    g = build_attacker("slim", 2, 1, 0.3, 0.125).eval()
    odd = torch.randn(1, 2, 9, 9)
    even = nn.functional.pad(odd, (0, 1, 0, 1))
    with torch.no_grad():
        torch.testing.assert_close(g(odd)[..., :-1, :-1], g(even)[..., :-2, :-2])


def test_the_slim_attacker_puts_each_pixels_features_back_where_they_came_from() -> None:
    """Down-sampled by 2, then up-sampled by 2: δ near a pixel depends on the input near that pixel
    and not on a centre 23 pixels away, beyond the network's reach (its receptive field is
    about 23 pixels wide). Batch norm in eval mode, which does not mix pixels."""
    g = build_attacker("slim", 2, 1, 0.3, 0.125).eval()
    a = torch.randn(1, 2, 48, 48)
    moved = a.clone()
    moved[..., 22:26, 22:26] += 5.0
    with torch.no_grad():
        change = (g(moved) - g(a)).abs()[0, 0]
    assert change[20:28, 20:28].max() > 0
    assert change[40:, 40:].max() == 0 and change[:8, :8].max() == 0


def test_the_slim_attacker_has_the_parameters_of_its_diagram() -> None:
    """The module docstring's layers at width 1: a 3x3 stride-2 stem of 128 channels with its
    batch norm, ResBlocks 128 → 256 → 128 (two 3x3 convolutions, two PReLUs, a 1x1 shortcut),
    a 4x4 transposed convolution to 16 channels with its batch norm, a 3x3 convolution over
    those 16 and the input's channels (with a bias), and the scale s."""
    c_in, c_out = 2, 1
    stem = c_in * 128 * 9 + 2 * 128
    blocks = sum(2 + a * b * 9 + b * b * 9 + a * b for a, b in ((128, 256), (256, 128)))
    up = 128 * 16 * 16 + 2 * 16
    out = (16 + c_in) * c_out * 9 + c_out
    g = build_attacker("slim", c_in, c_out, 0.3, 1.0)
    assert sum(p.numel() for p in g.parameters()) == stem + blocks + up + out + 1
