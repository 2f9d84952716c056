"""The learned follower's levers and the leader's optimizer: each option does what it says."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import RecordingAttacker, TinyConvAttacker, image_batch, largest_entry_one

from bilevel import JointTrainer, LearnedFollower, SignGradientAscent
from bilevel.errors import UserError
from bilevel.learned_follower import GradientScaling, Memory
from bilevel.norms import Norm
from bilevel.protocol import follower_gradient
from bilevel.run import atomic_torch_save
from learned_optimizers import build_attacker, start_at_zero
from problems.adversarial.data import dataset_info
from problems.adversarial.dro import AdversarialDRO
from problems.adversarial.dro_config import DROConfig
from problems.adversarial.followers import build_follower
from problems.adversarial.leader import leader_optimizer, lr_schedule
from problems.adversarial.models import SmallCNN

EPS = 0.3
INFO = dataset_info("mnist5k")


def _problem() -> AdversarialDRO:
    return AdversarialDRO(SmallCNN().eval(), EPS)


def _feasible(x: torch.Tensor, delta: torch.Tensor) -> None:
    assert delta.abs().max() <= EPS + 1e-6
    assert (x + delta).min() >= -1e-6 and (x + delta).max() <= 1 + 1e-6


def test_leader_optimizer_and_schedule_are_built_as_asked() -> None:
    params = [torch.nn.Parameter(torch.zeros(3))]
    adam = DROConfig(leader_optimizer="adam", schedule="cosine", epochs=4).resolve()
    optimizer = leader_optimizer(adam, params)
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.param_groups[0]["lr"] == 1e-3
    schedule = lr_schedule(adam, optimizer)
    lrs = []
    for _ in range(4):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[0] == 1e-3 and lrs == sorted(lrs, reverse=True) and lrs[-1] < 2e-4
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine to zero

    sgd = DROConfig(schedule="constant", epochs=4).resolve()
    optimizer = leader_optimizer(sgd, params)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.param_groups[0]["momentum"] == 0.9
    schedule = lr_schedule(sgd, optimizer)
    for _ in range(4):
        optimizer.step()
        schedule.step()
    assert optimizer.param_groups[0]["lr"] == 0.05  # mnist5k's SGD default, held


def test_the_multistep_schedule_cuts_the_rate_tenfold_and_adam_keeps_weight_decay() -> None:
    params = [torch.nn.Parameter(torch.zeros(1))]
    cfg = DROConfig(schedule="multistep", epochs=4, milestones=[2]).resolve()
    optimizer = leader_optimizer(cfg, params)
    schedule, lr0 = lr_schedule(cfg, optimizer), optimizer.param_groups[0]["lr"]
    for _ in range(2):
        optimizer.step()
        schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * lr0)  # Madry et al.'s ×0.1
    adam = DROConfig(leader_optimizer="adam").resolve()
    decay = leader_optimizer(adam, params).param_groups[0]["weight_decay"]
    assert adam.weight_decay > 0 and decay == adam.weight_decay


def test_milestones_named_twice_are_refused_where_typed_and_kept_where_recorded() -> None:
    """Typed, [2, 2] is refused (MultiStepLR drops ×0.01 at 2, not the help's ×0.1); recorded by a
    folder of before the check (not typed), it resumes as it ran."""
    typed = DROConfig(epochs=4, milestones=[2, 2])
    typed.given = frozenset({"milestones"})
    with pytest.raises(UserError, match="--milestones names epoch 2 twice"):
        typed.resolve()
    assert DROConfig(epochs=4, milestones=[2, 2]).resolve().milestones == [2, 2]


def test_an_empty_list_of_milestones_is_refused_where_typed_and_kept_where_recorded() -> None:
    """Typed, --milestones "" is refused (a multistep schedule that never steps: --schedule
    constant says that); recorded by a folder (not typed), [] resumes as it began."""
    typed = DROConfig(epochs=4, milestones=[])
    typed.given = frozenset({"milestones"})
    with pytest.raises(UserError, match="--milestones names no epoch"):
        typed.resolve()
    assert DROConfig(epochs=4, milestones=[]).resolve().milestones == []


def test_the_sgd_leader_decays_its_weights_by_lr_times_weight_decay() -> None:
    """The paper's SGD leader keeps weight decay too: from θ = 1 with a zero loss gradient, one
    step (the momentum buffer starts at the first gradient, wd·θ) moves θ to 1 − lr·wd."""
    cfg = DROConfig().resolve()
    assert cfg.leader_optimizer == "sgd" and cfg.weight_decay > 0
    theta = torch.nn.Parameter(torch.ones(1))
    optimizer = leader_optimizer(cfg, [theta])
    theta.grad = torch.zeros(1)
    optimizer.step()
    assert float(theta.detach()) == pytest.approx(1 - cfg.lr * cfg.weight_decay, rel=1e-6)


@pytest.mark.parametrize(
    ("epochs", "milestones"),
    [(1, [1]), (2, [1]), (4, [2, 3]), (7, [3, 5]), (12, [6, 9]), (100, [30, 60, 90])],
)
def test_default_milestones_are_at_half_and_three_quarters_of_the_epochs(
    epochs, milestones
) -> None:
    """As --milestones' help says: 30,60,90 for 100 epochs, else at 1/2 and 3/4 of --epochs (floored,
    at least epoch 1, a repeat kept once)."""
    assert DROConfig(epochs=epochs).resolve().milestones == milestones


def test_batch_scaling_gives_one_scale_per_batch_and_sample_one_per_sample() -> None:
    g = torch.randn(4, 1, 5, 5) * torch.tensor([1e-3, 1.0, 7.0, 0.1]).view(4, 1, 1, 1)
    batch = GradientScaling.BATCH(g)
    ratio = batch / g
    assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio))  # one scalar for all
    assert batch.abs().max() == pytest.approx(1.0)
    per_sample = GradientScaling.SAMPLE(g).flatten(1).abs().amax(1)
    assert torch.allclose(per_sample, torch.ones(4))
    assert torch.equal(GradientScaling.SIGN(g), g.sign())
    assert torch.equal(GradientScaling.NONE(g), 4 * g)  # the batch mean's 1/B undone


@pytest.mark.parametrize("norm", [Norm.LINF, Norm.L2])
@pytest.mark.parametrize("size", [1e-20, 1e-3, 1e3])
def test_batch_scaling_puts_the_largest_sample_at_norm_one_at_any_scale(norm, size) -> None:
    """A confident leader's gradients can be tiny over a whole batch (1e-17 and less in float32);
    a floored divisor left them near zero, so g_φ saw no gradient where it should see a unit."""
    g = torch.randn(4, 1, 5, 5) * torch.tensor([1e-3, 1.0, 7.0, 0.1]).view(4, 1, 1, 1) * size
    largest = norm.of(GradientScaling.BATCH(g, norm)).amax().item()
    assert largest == pytest.approx(1.0, rel=1e-5)
    assert torch.equal(GradientScaling.BATCH(torch.zeros_like(g), norm), torch.zeros_like(g))


@pytest.mark.parametrize("norm", [Norm.LINF, Norm.L2])
def test_sign_scaling_is_the_steepest_direction_of_the_norm(norm: Norm) -> None:
    """``sign``: sign g under L∞ (FGSM's step), g / ‖g_i‖₂ per sample under L2 (PGD-L2's)."""
    g = torch.randn(4, 1, 5, 5) * torch.tensor([1e-3, 1.0, 7.0, 0.1]).view(4, 1, 1, 1)
    scaled = GradientScaling.SIGN(g, norm)
    if norm is Norm.LINF:
        assert torch.equal(scaled, g.sign())
    else:
        lengths = g.flatten(1).norm(dim=1).view(4, 1, 1, 1)
        torch.testing.assert_close(scaled, g / lengths)
        torch.testing.assert_close(scaled.flatten(1).norm(dim=1), torch.ones(4))


@pytest.mark.parametrize("norm", [Norm.LINF, Norm.L2])
@pytest.mark.parametrize("scaling", ["sample", "sign"])
def test_g_phi_sees_the_gradient_scaled_in_the_balls_norm(norm: Norm, scaling: str) -> None:
    """Under --norm l2, g_φ's ∇ input is ∇ / ‖∇_i‖₂ per sample (``sample`` and ``sign`` alike);
    under L∞ it is ∇ / max|∇_i| (``sample``) or sign ∇ (``sign``), all from the start z0 = 0."""
    eps = 0.3 if norm is Norm.LINF else 1.5
    problem = AdversarialDRO(SmallCNN().eval(), eps, norm)
    x, y = image_batch(4)
    net = RecordingAttacker(1, EPS)
    follower = LearnedFollower(net, input_mode="grad-only", grad_scaling=scaling, norm=norm)
    follower.solve(problem, (x, y))
    (seen,) = net.inputs
    g = follower_gradient(problem, (x, y), torch.zeros_like(x))
    if norm is Norm.L2:
        expected = g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    else:
        expected = largest_entry_one(g) if scaling == "sample" else g.sign()
    torch.testing.assert_close(seen, expected)
    unit = seen.flatten(1).norm(dim=1) if norm is Norm.L2 else seen.flatten(1).abs().amax(1)
    torch.testing.assert_close(unit, torch.ones(4))


@pytest.mark.parametrize("scaling", ["none", "sample", "sign"])
def test_what_g_phi_sees_of_an_example_does_not_depend_on_its_batch(scaling: str) -> None:
    """The same φ answers an example alike alone and among 31 others: under ``none`` it used to
    see the batch mean's gradient, 1/B of the example's own, so training at batch 64 and the
    follower gap's batch of 500 fed it inputs of other sizes."""
    torch.manual_seed(0)
    problem = _problem()
    net = TinyConvAttacker(2, 1, EPS)
    follower = LearnedFollower(net, steps=2, grad_scaling=scaling)
    x, y = image_batch(32)
    with torch.no_grad():
        together = follower.solve(problem, (x, y))
        alone = follower.solve(problem, (x[:1], y[:1]))
    torch.testing.assert_close(alone, together[:1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("steps", [1, 3, 5])
def test_the_k_step_unroll_takes_k_steps_and_stays_feasible(steps: int) -> None:
    net = RecordingAttacker(2, EPS)
    follower = LearnedFollower(net, steps=steps)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(30.0)  # saturated outputs: the projection must hold every step
    x, y = image_batch(6)
    x[:3] = x[:3].round()
    delta = follower.solve(_problem(), (x, y))
    assert len(net.inputs) == steps
    _feasible(x, delta)


def test_plain_steps_are_sign_steps_and_g_phi_runs_only_after_them() -> None:
    """K = 3 with two plain steps: g_φ runs once, at the point two PGM sign steps reach."""
    problem, (x, y) = _problem(), image_batch(6)
    net = RecordingAttacker(2, EPS)
    follower = LearnedFollower(net, steps=3, random_start=True, sign_step=0.5, plain_steps=2)
    torch.manual_seed(2)
    delta = follower.solve(problem, (x, y))
    torch.manual_seed(2)
    pgm2 = SignGradientAscent(2, 0.5 * EPS, random_start=True).solve(problem, (x, y))
    assert len(net.inputs) == 1
    assert torch.allclose(net.inputs[0][:, :1], x + pgm2, atol=1e-6)  # A's image part: x + z_2
    _feasible(x, delta)
    with pytest.raises(ValueError, match="plain_steps"):
        # no sign step to take instead
        LearnedFollower(RecordingAttacker(2, EPS), steps=2, plain_steps=1)
    with pytest.raises(ValueError, match="plain_steps"):
        # no g_φ at all
        LearnedFollower(RecordingAttacker(2, EPS), steps=2, sign_step=0.5, plain_steps=2)


def test_a_truncated_unroll_takes_the_same_steps_but_learns_through_the_last_g_phi_call_only():
    """--truncated-unroll: z_K is unchanged; φ's gradient is that of q(z_2) with z_1 a constant,
    worked out here by hand, and differs from the full unroll's (which also flows through z_1)."""
    problem, batch = _problem(), image_batch(6)
    torch.manual_seed(0)
    net = TinyConvAttacker(2, 1, EPS)
    params = list(net.parameters())

    def phi_gradient(truncated: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        follower = LearnedFollower(net, steps=2, sign_step=0.25, truncated=truncated)
        z = follower(problem, batch)
        return z.detach(), torch.autograd.grad(problem.follower_objective(batch, z), params)

    def by_hand() -> list[torch.Tensor]:
        follower = LearnedFollower(net, steps=2, sign_step=0.25)
        z = torch.zeros_like(batch[0])
        for k in range(2):
            grad = follower_gradient(problem, batch, z)
            with torch.set_grad_enabled(k == 1):
                step = net(follower.features(problem, batch, z, grad))
            z = problem.project(batch, z + step + 0.25 * EPS * grad.sign())
        return torch.autograd.grad(problem.follower_objective(batch, z), params)

    z_full, full = phi_gradient(truncated=False)
    z_cut, cut = phi_gradient(truncated=True)
    assert torch.equal(z_full, z_cut)
    for mine, theirs in zip(cut, by_hand(), strict=True):
        assert torch.allclose(mine, theirs, atol=1e-7)
    assert not all(torch.allclose(a, b, atol=1e-7) for a, b in zip(full, cut, strict=True))
    with pytest.raises(ValueError, match="truncated"):
        LearnedFollower(net, steps=2, sign_step=0.25, plain_steps=1, truncated=True)  # one call


def test_random_start_starts_inside_the_ball_and_varies_with_the_seed() -> None:
    x, y = image_batch(4)
    problem = _problem()

    def solve(random_start: bool, seed: int) -> torch.Tensor:
        net = start_at_zero(build_attacker("slim", 2, 1, EPS, 0.125))  # g_φ ≡ 0
        torch.manual_seed(seed)
        return LearnedFollower(net, random_start=random_start).solve(problem, (x, y))

    assert torch.count_nonzero(solve(False, 0)) == 0
    first, second = solve(True, 0), solve(True, 1)
    _feasible(x, first)
    assert first.abs().mean() > 0.2 * EPS and not torch.equal(first, second)


@pytest.mark.parametrize("kind", ["cnn", "slim", "pointwise"])
@pytest.mark.parametrize("steps", [1, 2, 4])
def test_a_zero_g_phi_with_a_sign_step_is_exactly_pgm(kind: str, steps: int) -> None:
    problem = _problem()
    batch = image_batch(8)
    net = start_at_zero(build_attacker(kind, 2, 1, EPS, 0.125))
    learned = LearnedFollower(net, steps=steps, random_start=True, sign_step=0.5)
    torch.manual_seed(5)
    ours = learned.solve(problem, batch)
    torch.manual_seed(5)
    pgm = SignGradientAscent(steps, 0.5 * EPS, random_start=True).solve(problem, batch)
    assert torch.equal(ours, pgm)


def test_memory_feeds_the_delta_or_the_previous_gradient() -> None:
    x, y = image_batch(3)
    problem = _problem()
    assert LearnedFollower.in_channels("grad", "none", 1) == 2
    assert LearnedFollower.in_channels("grad", "delta", 1) == 3
    assert LearnedFollower.in_channels("grad-only", "prev-grad", 3) == 6

    net = RecordingAttacker(3, EPS)
    LearnedFollower(net, steps=2, memory=Memory.DELTA, random_start=True).solve(problem, (x, y))
    first = net.inputs[0]
    x_plus_delta = first[:, :1]
    assert torch.allclose(first[:, 2:] * EPS, x_plus_delta - x, atol=1e-6)  # z / ε

    net = RecordingAttacker(3, EPS)
    LearnedFollower(net, steps=2, memory="prev-grad").solve(problem, (x, y))
    assert torch.count_nonzero(net.inputs[0][:, 2:]) == 0  # no previous step yet
    assert torch.equal(net.inputs[1][:, 2:], net.inputs[0][:, 1:2])  # step 1's scaled ∇


def test_attacker_betas_and_learning_rate_reach_phis_adam() -> None:
    cfg = DROConfig(follower="2-step", attacker_betas=[0.5, 0.9], attacker_lr=3e-4).resolve()
    follower = build_follower(cfg, INFO)
    group = follower.optimizer.param_groups[0]
    assert group["betas"] == (0.5, 0.9) and group["lr"] == 3e-4
    assert follower.steps == 2 and cfg.unroll == 2


def test_attacker_init_warm_starts_phi_from_a_run(tmp_path: Path) -> None:
    cfg = DROConfig(follower="grad").resolve()
    source = build_follower(cfg, INFO)
    with torch.no_grad():
        for p in source.net.parameters():
            p.add_(1.0)
    atomic_torch_save({"trainer": {"follower": source.state_dict()}}, tmp_path / "last.pt")
    warm = build_follower(DROConfig(follower="grad", attacker_init=str(tmp_path)).resolve(), INFO)
    for a, b in zip(warm.state_dict().values(), source.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    fresh = build_follower(cfg, INFO)
    assert not torch.equal(fresh.net.stem[0].weight, warm.net.stem[0].weight)


def test_attacker_init_from_a_hand_designed_run_is_one_sentence(tmp_path: Path) -> None:
    leader = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(leader.parameters(), lr=0.1)
    trainer = JointTrainer(AdversarialDRO(leader, 0.1), SignGradientAscent(2, 0.05), optimizer)
    atomic_torch_save({"trainer": trainer.state_dict()}, tmp_path / "last.pt")  # as PGM saves
    cfg = DROConfig(follower="grad", attacker_init=str(tmp_path)).resolve()
    with pytest.raises(UserError, match="holds no learned attacker"):
        build_follower(cfg, INFO)
