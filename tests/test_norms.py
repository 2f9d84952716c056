"""The threat model as an option: the L∞ and L2 balls (``bilevel.norms``), PGD-L2 as a follower,
learned attackers bounded in the chosen ball, and ``--norm`` on the command line (an L2 run's
solve, resume, evaluate and bench: ``test_norm_evaluation.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from bilevel import Norm, SignGradientAscent
from cli import app
from learned_optimizers import build_attacker
from problems.adversarial.dro import AdversarialDRO
from problems.adversarial.models import SmallCNN


def test_l2_projection_keeps_every_sample_in_the_ball_and_leaves_the_inside_alone() -> None:
    z = torch.randn(64, 1, 6, 6) * torch.logspace(-3, 1, 64).view(-1, 1, 1, 1)
    eps = 0.5
    projected = Norm.L2.project(z, eps)
    norms = projected.flatten(1).norm(dim=1)
    assert (norms <= eps * (1 + 1e-6)).all()
    inside = z.flatten(1).norm(dim=1) <= eps
    assert inside.any() and (~inside).any()
    assert torch.equal(projected[inside], z[inside])  # the nearest point of the ball is z itself
    outside = ~inside  # on the sphere, in z's direction
    assert torch.allclose(norms[outside], torch.full_like(norms[outside], eps), rtol=1e-5)
    cos = torch.nn.functional.cosine_similarity(
        projected[outside].flatten(1), z[outside].flatten(1)
    )
    assert torch.allclose(cos, torch.ones_like(cos), atol=1e-5)


def test_steepest_ascent_direction_is_g_over_its_l2_norm_and_sign_g_under_linf() -> None:
    g = torch.randn(8, 3, 4, 4)
    d = Norm.L2.steepest(g)
    assert torch.allclose(d, g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1))
    assert torch.equal(Norm.LINF.steepest(g), g.sign())
    # it is the argmax of ⟨g, d⟩ over the unit ball: no random unit direction does better
    best = (g * d).flatten(1).sum(1)
    for _ in range(50):
        r = Norm.L2.normalise(torch.randn_like(g))
        assert ((g * r).flatten(1).sum(1) <= best + 1e-5).all()
    assert torch.allclose(best, g.flatten(1).norm(dim=1))  # ⟨g, g/‖g‖⟩ = ‖g‖ (the dual norm)
    assert torch.equal(Norm.L2.steepest(torch.zeros(2, 3)), torch.zeros(2, 3))  # no 0/0


def test_a_tiny_gradient_still_gives_a_unit_direction_and_zero_gives_zero() -> None:
    """Below 1e-12 (a confident prediction's ∇_δ q), and below where ‖g‖₂'s squares underflow in
    float32 (~1e-19 a coordinate), the L2 direction has unit length and normalise's maximum is 1,
    per sample, beside a zero sample that stays zero."""
    g = torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    g = g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    g = g * torch.tensor([1e-20, 5e-15, 1.0, 0.0]).view(-1, 1, 1, 1)  # float32 norms, and a zero
    direction = Norm.L2.steepest(g)
    lengths = direction.double().flatten(1).norm(dim=1)
    torch.testing.assert_close(lengths, torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=torch.float64))
    exact = g.double() / g.double().flatten(1).norm(dim=1).clamp_min(1e-300).view(-1, 1, 1, 1)
    torch.testing.assert_close(direction.double(), exact, rtol=1e-6, atol=1e-7)  # g's direction
    peaks = Norm.LINF.of(Norm.LINF.normalise(g)).flatten()
    assert torch.equal(peaks, torch.tensor([1.0, 1.0, 1.0, 0.0]))
    assert torch.equal(Norm.LINF.steepest(g), g.sign())  # L∞ unchanged: the sign step


def test_random_start_is_inside_the_ball() -> None:
    like = torch.zeros(200, 1, 5, 5)
    for norm in Norm:
        draw = norm.sample(like, 0.3)
        assert (norm.of(draw) <= 0.3 + 1e-6).all()
        assert draw.abs().sum() > 0


@pytest.mark.parametrize("shape", [(2,), (1, 2, 2)])  # d = 2 and 4 coordinates a sample
def test_l2_random_start_is_uniform_in_the_ball_not_on_its_sphere(shape: tuple[int, ...]) -> None:
    """Uniform in the d-ball: P(‖z‖ ≤ rε) = r^d, so (‖z‖/ε)^d ~ U(0, 1) (a radius ε·u piles up at
    the centre, a draw on the sphere has ‖z‖ = ε), and the direction z/‖z‖ is isotropic."""
    n, eps = 40_000, 0.3
    d = torch.Size(shape).numel()
    z = Norm.L2.sample(torch.zeros(n, *shape), eps)
    r = z.flatten(1).norm(dim=1) / eps
    assert (r <= 1 + 1e-6).all()
    v = r.double() ** d  # U(0, 1): mean 1/2, and a quarter of the draws in each quarter
    se = (1 / 12 / n) ** 0.5  # the standard error of the mean of U(0, 1)
    assert abs(v.mean().item() - 0.5) < 6 * se
    quarters = torch.histc(v, bins=4, min=0.0, max=1.0) / n
    se = (0.25 * 0.75 / n) ** 0.5
    assert ((quarters - 0.25).abs() < 6 * se).all(), quarters
    assert (r > 0.999).float().mean() < 0.01  # 1 − 0.999^d of them (≤ 0.4%), not all
    drawn = r > 0  # u = 0 exactly (torch.rand's 2^-24 chance a draw) leaves z = 0: no direction
    direction = z.flatten(1)[drawn] / (r[drawn] * eps).view(-1, 1)
    assert (direction.mean(0).abs() < 6 / n**0.5).all()  # each coordinate: mean 0, sd ≤ 1


def _dro(norm: str, eps: float) -> tuple[AdversarialDRO, tuple[torch.Tensor, torch.Tensor]]:
    model = SmallCNN(in_channels=1, num_classes=10).eval()
    x = torch.rand(16, 1, 28, 28) * 0.6 + 0.2  # away from the box, so only the ball binds
    return AdversarialDRO(model, eps, norm), (x, torch.randint(0, 10, (16,)))


def test_pgd_l2_stays_feasible_and_its_first_step_is_eps_along_the_normalised_gradient() -> None:
    problem, batch = _dro("l2", 1.5)
    x, _ = batch
    delta = SignGradientAscent(10, 2.5 * 1.5 / 10, random_start=True, norm="l2").solve(
        problem, batch
    )
    assert (delta.flatten(1).norm(dim=1) <= 1.5 * (1 + 1e-5)).all()
    assert (x + delta).min() >= 0 and (x + delta).max() <= 1
    # one step of size η from 0 is η ∇q/‖∇q‖₂ per sample (the fast gradient method under L2)
    z = torch.zeros_like(x).requires_grad_(True)
    (grad,) = torch.autograd.grad(problem.follower_objective(batch, z), z)
    step = SignGradientAscent(1, 0.2, norm="l2").solve(problem, batch)
    expected = 0.2 * grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    assert torch.allclose(step, expected, atol=1e-6)  # x + δ − x rounds at float32's 6e-8
    # and it raises q more than a random step of the same length
    random = 0.2 * Norm.L2.normalise(torch.randn_like(x))
    assert problem.follower_objective(batch, step) > problem.follower_objective(batch, random)


def test_the_l2_projection_is_the_ball_then_the_box_in_closed_form() -> None:
    """x = (0, 0.9), δ = (1, 1), ε = 0.5: the ball gives (0.5/√2)(1, 1) ≈ (0.354, 0.354), the box
    then cuts x₂ + δ₂ to 1, so δ = (0.354, 0.1); the box first would give ≈ (0.498, 0.050)."""
    problem = AdversarialDRO(SmallCNN().eval(), 0.5, "l2")
    x = torch.tensor([[0.0, 0.9]])
    delta = problem.project((x, None), torch.ones(1, 2))
    torch.testing.assert_close(delta, torch.tensor([[0.5 / 2**0.5, 0.1]]))


def test_the_perturbed_input_keeps_its_gradient_to_delta() -> None:
    """x + δ is the learned follower's input: the unroll's meta-gradient reaches φ through δ, so
    ∂ Σ(x + δ)/∂δ is all ones, not cut by a detach."""
    problem, batch = _dro("linf", 0.3)
    delta = torch.zeros_like(batch[0]).requires_grad_(True)
    features = problem.follower_features(batch, delta)
    assert features.requires_grad
    (grad,) = torch.autograd.grad(features.sum(), delta)
    assert torch.equal(grad, torch.ones_like(delta))


@pytest.mark.parametrize("kind", ["cnn", "slim", "pointwise"])
def test_learned_attackers_lie_strictly_inside_the_chosen_ball(kind: str) -> None:
    net = build_attacker(kind, 2, 1, 0.5, 0.25, norm="l2")
    out = net(torch.randn(4, 2, 28, 28) * 100)  # saturated: the bound is what holds it
    norms = out.flatten(1).norm(dim=1)
    assert (norms < 0.5).all() and (norms > 0.5 * (1 - 1e-4)).all()  # on the sphere, not past it
    assert out.abs().max() > 0.5 / 28  # not the L∞ bound: one pixel may exceed ε / √d


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_the_bound_holds_strictly_under_bfloat16_autocast(norm: str) -> None:
    """--amp runs g_φ in bfloat16, where 1 − 1e-5 rounds to 1: the L2 bound's margin must be
    taken in float32, or a saturated output lies past the ball (1.5046 at ε = 1.5)."""
    torch.manual_seed(0)
    net = build_attacker("slim", 2, 1, 1.5, 0.25, norm=norm)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(torch.randn(4, 2, 28, 28) * 100)
    size = out.float().flatten(1).norm(dim=1) if norm == "l2" else out.float().abs().amax((1, 2, 3))
    assert (size < 1.5).all()


runner = CliRunner()
TINY = [
    "--train-size", "64", "--eval-size", "32", "--batch-size", "32", "--epochs", "1",
    "--gap-size", "0", "--follower", "pgm", "--pgm-steps", "2",
]  # fmt: skip


def test_bad_norm_is_one_sentence_and_exit_2(tmp_path: Path) -> None:
    out = tmp_path / "bad"
    result = runner.invoke(
        app, ["solve", "adversarial-dro", *TINY, "--norm", "l1", "--out", str(out)]
    )
    assert result.exit_code == 2
    assert "Unknown --norm 'l1'; choose one of: linf, l2." in result.output
    assert not out.exists()


def test_the_linf_random_start_is_uniform_over_the_whole_ball() -> None:
    """U(−ε, ε) per coordinate: both signs, mean 0 and standard deviation ε/√3 (a start drawn
    from U(0, ε) covers one orthant, and no test saw it)."""
    torch.manual_seed(0)
    delta = Norm.LINF.sample(torch.zeros(4000, 1, 5, 5), 0.3)
    assert delta.min() < -0.29 and delta.max() > 0.29
    assert abs(delta.mean().item()) < 0.003
    assert abs(delta.std().item() - 0.3 / 3**0.5) < 0.003
