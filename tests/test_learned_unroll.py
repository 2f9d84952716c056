"""The learned follower's unroll: which g_φ calls φ learns through (a truncated K = 3 unroll, by
hand), that ``solve`` leaves no graph to φ, and what g_φ remembers under the naive input."""

from __future__ import annotations

import pytest
import torch
from helpers import RecordingAttacker, TinyConvAttacker, largest_entry_one, linear_two_class

from bilevel import LearnedFollower
from bilevel.protocol import follower_gradient
from problems.adversarial.dro import AdversarialDRO

EPS = 0.3


def _toy() -> tuple[AdversarialDRO, tuple[torch.Tensor, torch.Tensor]]:
    problem = AdversarialDRO(linear_two_class(), EPS)
    x = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(3)) * 0.6 + 0.2
    return problem, (x, torch.tensor([0, 1, 0, 1]))


def test_a_truncated_three_step_unroll_learns_through_the_third_g_phi_call_only() -> None:
    """K = 3, truncated: φ's gradient is that of q(z_3) with z_2 a constant (the first two g_φ
    calls off the graph), worked out by hand; a unroll cut at the first call only (z_1 constant,
    z_2 still on the graph) gives another gradient, so the check tells the two apart."""
    problem, batch = _toy()
    torch.manual_seed(0)
    net = TinyConvAttacker(2, 1, EPS)
    params = list(net.parameters())
    follower = LearnedFollower(net, steps=3, sign_step=0.25, truncated=True)
    got = torch.autograd.grad(problem.follower_objective(batch, follower(problem, batch)), params)

    def by_hand(on_graph: set[int]) -> list[torch.Tensor]:
        z = torch.zeros_like(batch[0])
        for k in range(3):
            grad = follower_gradient(problem, batch, z)
            with torch.set_grad_enabled(k in on_graph):
                step = net(torch.cat([batch[0] + z, largest_entry_one(grad)], 1))
            z = problem.project(batch, z + step + 0.25 * EPS * grad.sign())
        return list(torch.autograd.grad(problem.follower_objective(batch, z), params))

    last_only, last_two = by_hand({2}), by_hand({1, 2})
    for mine, theirs in zip(got, last_only, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-7)
    assert not all(
        torch.allclose(a, b, atol=1e-7) for a, b in zip(last_only, last_two, strict=True)
    )


@pytest.mark.parametrize("truncated", [False, True])
def test_solve_answers_without_a_graph_to_phi(truncated: bool) -> None:
    """``solve`` (the gap, the evaluation, the carried start) is the unroll under no_grad: its δ
    needs no gradient, so no g_φ call keeps its activations alive for a backward."""
    problem, batch = _toy()
    follower = LearnedFollower(TinyConvAttacker(2, 1, EPS), steps=2, truncated=truncated)
    delta = follower.solve(problem, batch)
    assert not delta.requires_grad and delta.grad_fn is None
    assert follower(problem, batch).requires_grad  # the unroll itself does learn through φ


def test_the_naive_follower_remembers_the_previous_gradient_it_never_sees_itself() -> None:
    """naive + prev-grad: g_φ's own input has no ∇, but its memory channel at step 2 is step 1's
    ∇_z q at z0 = 0 scaled per sample (max |·| = 1), and zeros at step 1."""
    problem, batch = _toy()
    net = RecordingAttacker(2, EPS)
    LearnedFollower(net, steps=2, input_mode="naive", memory="prev-grad").solve(problem, batch)
    first, second = net.inputs
    assert torch.count_nonzero(first[:, 1:]) == 0
    g = follower_gradient(problem, batch, torch.zeros_like(batch[0]))
    torch.testing.assert_close(second[:, 1:], largest_entry_one(g))


def test_a_naive_follower_with_a_sign_step_and_a_zero_g_phi_is_pgm() -> None:
    """The sign step needs ∇ even where g_φ does not see it: naive + sign step s, g_φ ≡ 0, is PGM
    of step s·ε from 0, z_{k+1} = Π(z_k + s·ε·sign ∇_z q(z_k)), written out for K = 2."""
    problem, batch = _toy()
    net = TinyConvAttacker(1, 1, EPS)
    with torch.no_grad():
        net.body[2].weight.zero_()
        net.body[2].bias.zero_()
    delta = LearnedFollower(net, steps=2, input_mode="naive", sign_step=0.5).solve(problem, batch)
    z = torch.zeros_like(batch[0])
    for _ in range(2):
        z = problem.project(batch, z + 0.5 * EPS * follower_gradient(problem, batch, z).sign())
    torch.testing.assert_close(delta, z, rtol=0, atol=1e-7)
    assert delta.abs().amax() > 0.9 * EPS  # two steps of ε/2 along a fixed sign: at the ball's edge


def test_each_adam_step_of_phi_ascends_the_current_batch_only() -> None:
    """``learn`` twice: the gradient φ's second Adam step takes is −∇_φ q of the second batch at
    the φ it starts from, nothing left over from the first batch (Algorithm 3, one step a batch);
    and φ's first step raises q on its batch (ascent, not descent)."""
    problem, (x, y) = _toy()
    torch.manual_seed(0)
    follower = LearnedFollower(TinyConvAttacker(2, 1, EPS), steps=1, lr=1e-2, weight_decay=0.0)
    first, second = (x[:2], y[:2]), (x[2:], y[2:])
    with torch.no_grad():
        before = problem.follower_objective(first, follower(problem, first))
    follower.learn(problem, first)
    with torch.no_grad():
        assert problem.follower_objective(first, follower(problem, first)) > before
    params = list(follower.net.parameters())
    q = problem.follower_objective(second, follower(problem, second))
    expected = [-g for g in torch.autograd.grad(q, params)]
    follower.learn(problem, second)
    for p, g in zip(params, expected, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-8)
