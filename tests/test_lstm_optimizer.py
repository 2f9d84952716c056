"""The coordinate-wise LSTM optimizer (Andrychowicz et al. 2016): gradient pre-processing in closed
form, weights shared across coordinates, and a learnable update rule that meta-training improves."""

from __future__ import annotations

import math

import torch

from learned_optimizers import CoordinateLSTMOptimizer
from learned_optimizers.lstm_optimizer import preprocess_gradient


def test_preprocessing_matches_the_paper_s_closed_form() -> None:
    p = 10.0
    g = torch.tensor([1.0, -math.exp(-5.0), 1e-6, -1e-6, 0.0])
    out = preprocess_gradient(g, p)
    expected = torch.tensor(
        [
            [0.0, 1.0],  # log|1| / p, sign
            [-0.5, -1.0],  # log e^-5 / 10
            [-1.0, math.exp(p) * 1e-6],  # |g| < e^-p: (−1, e^p g)
            [-1.0, -math.exp(p) * 1e-6],
            [-1.0, 0.0],
        ]
    )
    torch.testing.assert_close(out, expected)


def test_update_is_coordinate_wise_with_shared_weights() -> None:
    net = CoordinateLSTMOptimizer(hidden_size=6)
    grad = torch.randn(7)
    update, state = net(grad, net.init_state(7))
    perm = torch.randperm(7)
    permuted, permuted_state = net(grad[perm], net.init_state(7))
    torch.testing.assert_close(permuted, update[perm])  # same rule for every coordinate
    torch.testing.assert_close(permuted_state[-1][0], state[-1][0][perm])
    # a coordinate's update depends on its own gradient only
    other = grad.clone()
    other[3] += 5.0
    changed, _ = net(other, net.init_state(7))
    keep = torch.arange(7) != 3
    torch.testing.assert_close(changed[keep], update[keep])
    assert not torch.allclose(changed[3], update[3])


def test_hidden_state_carries_memory_and_output_scale_scales() -> None:
    net = CoordinateLSTMOptimizer(hidden_size=4, output_scale=0.5)
    grad = torch.full((3,), 0.1)
    first, state = net(grad, net.init_state(3))
    second, _ = net(grad, state)
    assert not torch.allclose(first, second)  # same gradient, different history
    net.output_scale = 1.0
    unscaled, _ = net(grad, net.init_state(3))
    torch.testing.assert_close(unscaled * 0.5, first)


def test_meta_training_learns_to_ascend_a_quadratic() -> None:
    """φ trained to maximise q(ψ_K) = −|ψ_K − c|² after K = 5 unrolled steps (the gradient input a
    constant, as in the paper) ends with a higher q than the untrained optimizer on new targets."""
    torch.manual_seed(0)
    net = CoordinateLSTMOptimizer(hidden_size=8, output_scale=0.1)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-2)

    def unroll(c: torch.Tensor) -> torch.Tensor:
        psi, state = torch.zeros_like(c), net.init_state(len(c))
        for _ in range(5):
            grad = -2 * (psi.detach() - c)  # ∇ q as a constant
            update, state = net(grad, state)
            psi = psi + update
        return -((psi - c) ** 2).sum()

    test_targets = torch.randn(20)
    with torch.no_grad():
        before = float(unroll(test_targets))
    for _ in range(30):
        optimizer.zero_grad()
        (-unroll(torch.randn(20))).backward()
        optimizer.step()
    with torch.no_grad():
        after = float(unroll(test_targets))
    assert after > before + 0.3 * abs(before), (before, after)
