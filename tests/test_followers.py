"""Followers: feasibility (ε-ball ∩ [0,1] box), PGM's ascent, the learned follower's ascent."""

from __future__ import annotations

import pytest
import torch
from helpers import TinyConvAttacker, image_batch, linear_two_class

from bilevel import InputMode, LearnedFollower, NoFollower, SignGradientAscent, normalise_per_sample
from learned_optimizers import build_attacker
from problems.adversarial.data import dataset_info
from problems.adversarial.dro import AdversarialDRO
from problems.adversarial.dro_config import DROConfig
from problems.adversarial.followers import build_follower
from problems.adversarial.models import SmallCNN

EPS = 0.3


def _problem() -> AdversarialDRO:
    torch.manual_seed(0)
    return AdversarialDRO(SmallCNN().eval(), EPS)


def _feasible(batch, delta: torch.Tensor) -> None:
    x, _ = batch
    assert delta.abs().max() <= EPS + 1e-6
    assert (x + delta).min() >= -1e-6 and (x + delta).max() <= 1 + 1e-6


@pytest.mark.parametrize("kind", ["cnn", "slim", "pointwise"])
@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("mode", list(InputMode))
def test_learned_follower_is_feasible(kind: str, steps: int, mode: InputMode) -> None:
    problem = _problem()
    x, y = image_batch(6)
    x[:3] = x[:3].round()  # pixels at 0 and 1: the box binds, not only the ball
    net = build_attacker(kind, mode.in_channels(1), 1, EPS, 0.125)
    follower = LearnedFollower(net, steps=steps, input_mode=mode)
    with torch.no_grad():  # huge outputs: the tanh saturates at ±ε, the box must still hold
        for p in net.parameters():
            p.mul_(50.0)
    delta = follower.solve(problem, (x, y))
    _feasible((x, y), delta)
    assert delta.abs().max() > 0.5 * EPS  # it really moved


@pytest.mark.parametrize("follower", [SignGradientAscent(1, 1.25 * EPS, random_start=True),
                                      SignGradientAscent(10, 0.075, random_start=True),
                                      SignGradientAscent(3, 1.0), NoFollower()])  # fmt: skip
def test_hand_designed_followers_are_feasible(follower) -> None:
    problem = _problem()
    batch = image_batch(16)
    batch[0][:8] = batch[0][:8].round()
    _feasible(batch, follower.solve(problem, batch))


def test_pgm_raises_the_loss_and_more_steps_raise_it_more() -> None:
    problem = _problem()
    batch = image_batch(64)
    with torch.no_grad():
        clean = problem.follower_objective(batch, torch.zeros_like(batch[0]))
    losses = {}
    for steps in (1, 5, 20):
        trials = []
        for seed in range(3):
            torch.manual_seed(seed)
            delta = SignGradientAscent(steps, 2.5 * EPS / steps, random_start=True).solve(
                problem, batch
            )
            with torch.no_grad():
                trials.append(float(problem.follower_objective(batch, delta)))
        losses[steps] = sum(trials) / len(trials)
    assert losses[1] > float(clean)
    assert losses[1] < losses[5] < losses[20]


def test_gradient_is_normalised_per_sample() -> None:
    g = torch.randn(5, 1, 4, 4) * torch.tensor([1e-6, 1.0, 10.0, 1e3, 5.0]).view(5, 1, 1, 1)
    n = normalise_per_sample(g)
    assert torch.allclose(n.flatten(1).abs().amax(1), torch.ones(5))
    assert torch.equal(n.sign(), g.sign())
    assert torch.allclose(normalise_per_sample(g[2:3]), n[2:3])  # independent of the batch


def test_learned_follower_learns_to_raise_q_on_a_fixed_leader() -> None:
    problem = _problem()
    batch = image_batch(32)
    follower = LearnedFollower(TinyConvAttacker(2, 1, EPS), steps=1, lr=1e-2, weight_decay=0.0)
    with torch.no_grad():
        before = float(problem.follower_objective(batch, follower.solve(problem, batch)))
    for _ in range(30):
        follower.learn(problem, batch)
    with torch.no_grad():
        after = float(problem.follower_objective(batch, follower.solve(problem, batch)))
    assert after > before + 0.05
    assert all(p.grad is None for p in problem.leader.parameters())  # θ untouched by φ's step


def test_pgm_projects_after_every_step_eq_4() -> None:
    """Eq. 4: z_k = Π(z_{k−1} + η sign ∇_z q(z_{k−1})), with Π onto the ε-ball ∩ {x + z ∈ [0, 1]}
    after each step, written out by hand here; a step of 0.6ε leaves the ball in two, so PGM that
    projected only at the end would take its later gradients outside it."""
    problem = _problem()
    x, y = image_batch(16)
    step = 0.6 * EPS
    z = torch.zeros_like(x)
    for _ in range(3):
        z = z.detach().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(problem.leader(x + z), y)
        (grad,) = torch.autograd.grad(loss, z)
        z = (z + step * grad.sign()).clamp(-EPS, EPS)
        z = ((x + z).clamp(0, 1) - x).detach()
    pgm = SignGradientAscent(3, step).solve(problem, (x, y))
    torch.testing.assert_close(pgm, z, rtol=0, atol=1e-6)


def _pgm(step: float) -> SignGradientAscent:
    return SignGradientAscent(1, step, random_start=True)


def _zero_g_phi(step: float) -> LearnedFollower:
    """A learned follower whose g_φ outputs 0, with a sign step of ``step`` (0: no step)."""
    net = TinyConvAttacker(2, 1, EPS)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    return LearnedFollower(net, steps=1, random_start=True, sign_step=step / EPS)


@pytest.mark.parametrize("make", [_pgm, _zero_g_phi], ids=["pgm", "learned"])
def test_the_random_start_is_uniform_in_the_ball_and_projected_into_the_box(make) -> None:
    """With a step of 0 the answer is the start Π(u), u ~ U(−ε, ε): uniform where the box does not
    bind (x = 0.5: mean |δ| = ε/2), max(u, 0) at a black pixel (half at 0). With a step η the
    ascent starts from Π(u), not u: on the linear two-class model ∇_x q has the fixed sign of
    w_1 − w_0 (labels 0), so a black pixel it brightens ends at δ ≥ η and a white pixel it
    darkens at δ ≤ −η (from an unprojected start, u < −η would end at 0)."""
    problem = AdversarialDRO(linear_two_class(), EPS)
    torch.manual_seed(0)
    x = torch.randint(0, 3, (256, 1, 4, 4)) / 2.0  # pixels 0, 0.5 and 1
    batch = (x, torch.zeros(256, dtype=torch.long))
    start = make(0.0).solve(problem, batch)
    _feasible(batch, start)
    mid, black = start[x == 0.5], start[x == 0]
    assert abs(float(mid.abs().mean()) / EPS - 0.5) < 0.05 and abs(float(mid.mean())) < 0.05 * EPS
    assert mid.abs().max() > 0.95 * EPS
    assert abs(float((black == 0).float().mean()) - 0.5) < 0.06 and black.max() > 0.95 * EPS
    torch.manual_seed(1)
    assert not torch.equal(make(0.0).solve(problem, batch), start)

    eta = 0.1
    up = (problem.leader[1].weight[1] - problem.leader[1].weight[0]).sign().view(1, 1, 4, 4)
    delta = make(eta).solve(problem, batch)
    _feasible(batch, delta)
    brightened, darkened = (x == 0) & (up > 0), (x == 1) & (up < 0)
    assert brightened.sum() > 100 and darkened.sum() > 100
    assert delta[brightened].min() >= eta - 1e-6 and delta[darkened].max() <= -eta + 1e-6


def test_the_pgm_follower_of_the_command_line_starts_at_random() -> None:
    """--follower pgm is Madry et al.'s PGM: a uniform random start (Eq. 4 of the paper starts
    at 0), so δ varies with the seed and is the same under the same seed; it stays feasible."""
    follower = build_follower(DROConfig(follower="pgm").resolve(), dataset_info("mnist5k"))
    problem, batch = _problem(), image_batch(8)

    def solve(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return follower.solve(problem, batch)

    first = solve(0)
    _feasible(batch, first)
    assert torch.equal(solve(0), first)
    assert not torch.equal(solve(1), first)
