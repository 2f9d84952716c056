"""The learned discriminator followers of L2L-GAIL: the residual LSTM is Adam at φ₀
(identical ψ trajectories over several rounds, Adam's moments carried between them), the one-shot
step stays in its trust region ‖ψ − ψ_t‖ ≤ ε, the extra φ steps replay the round from its start,
the meta-gradient reaches φ, and the meta-objectives match their closed forms."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from helpers import tiny_gail_problem

from bilevel.optimizer_followers import AdamFollower, LearnedOptimizerFollower
from learned_optimizers.lstm_optimizer import preprocess_gradient
from learned_optimizers.residual import OneShotStepNet, ResidualLSTMOptimizer, adam_update
from problems.imitation.gail import GAIL
from problems.imitation.meta_objective import MetaObjective, soft_accuracy


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    return tiny_gail_problem(tmp_path_factory.mktemp("d"))


@pytest.fixture(autouse=True)
def _fresh_problem(problem):
    problem.psi, problem.trust_radius = problem.disc.init_params(), 0.0
    problem.meta = MetaObjective("q")  # J = q: what these tests' expectations are about


def trajectory(problem, follower, rounds: int = 3) -> list[torch.Tensor]:
    """ψ after each of ``rounds`` rounds, each on its own batch, ψ carried over as the leader
    step carries it."""
    problem.psi = problem.disc.init_params()
    out = []
    for r in range(rounds):
        batch = problem.sample_batch(torch.Generator().manual_seed(100 + r))
        problem.psi = follower.solve(problem, batch)
        out.append(problem.psi.clone())
    return out


def test_adam_update_is_torch_adam_step_for_step() -> None:
    torch.manual_seed(1)
    psi = torch.nn.Parameter(torch.randn(50))
    torch_adam = torch.optim.Adam([psi], lr=1e-2)
    mine, state = psi.detach().clone(), {"m": torch.zeros(50), "v": torch.zeros(50)}
    state["t"] = torch.zeros(())
    for _ in range(5):
        grad = torch.randn(50)  # the ascent direction
        psi.grad = -grad
        torch_adam.step()
        step, direction, state = adam_update(grad, state, 1e-2, (0.9, 0.999), 1e-8)
        mine = mine + step
        assert torch.equal(mine, psi.detach()), (mine - psi.detach()).abs().max()
        torch.testing.assert_close(direction * 1e-2, step)


@pytest.mark.parametrize("make_net", [ResidualLSTMOptimizer, OneShotStepNet])
def test_the_nets_at_phi0_are_torch_adam_step_for_step_in_float64(make_net) -> None:
    """A float64 net keeps a float64 state (Adam's m, v and the LSTM's h, c) and is Adam's ascent
    step for step, as it is in float32."""
    torch.manual_seed(1)
    psi = torch.nn.Parameter(torch.randn(50, dtype=torch.float64))
    torch_adam = torch.optim.Adam([psi], lr=0.05, betas=(0.5, 0.9), eps=1e-3, maximize=True)
    net = make_net(0.05, (0.5, 0.9), 1e-3).double()
    mine, state = psi.detach().clone(), net.init_state(50)
    assert {t.dtype for t in state.values()} == {torch.float64}
    for _ in range(5):
        grad = torch.randn(50, dtype=torch.float64) * 10.0 ** torch.randint(-9, 4, (50,))
        psi.grad = grad.clone()
        torch_adam.step()
        with torch.no_grad():
            update, state = net(grad, state)
        mine = mine + update
        assert mine.dtype == torch.float64
        assert torch.equal(mine, psi.detach()), (mine - psi.detach()).abs().max()


@pytest.mark.parametrize(("options", "bound"), [({}, 1e-3), ({"residual_scale": 0.05}, 0.05)])
def test_the_lstm_residual_stays_within_its_scale_which_defaults_to_lr(options, bound) -> None:
    """u − Adam_step = s · tanh(·): a large head bias (5, tanh ≈ 0.9999) pushes the residual to
    its bound s and no further; s defaults to Adam's lr (1e-3 here)."""
    torch.manual_seed(0)
    net = ResidualLSTMOptimizer(lr=1e-3, hidden_size=4, **options)
    with torch.no_grad():
        net.lstm.head.bias.fill_(5.0)
    state = net.init_state(20)
    adam_state = {key: state[key] for key in ("m", "v", "t")}
    for _ in range(2):
        grad = torch.randn(20)
        with torch.no_grad():
            update, state = net(grad, state)
        step, _, adam_state = adam_update(grad, adam_state, 1e-3, (0.9, 0.999), 1e-8)
        residual = (update - step).abs()
        assert residual.max() <= bound and residual.min() > 0.99 * bound


def test_the_one_shot_net_reads_the_gradient_and_adam_s_direction() -> None:
    """f_φ's input is A = [pre(g), d] with d = m̂/(√v̂ + ε), Adam's direction (≈ sign g at t = 1),
    not Adam's step η · d."""
    torch.manual_seed(0)
    net, seen = OneShotStepNet(step_size=3e-3), []
    net.body[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    state = net.init_state(20)
    adam_state = dict(state)
    grads = [torch.randn(20) for _ in range(2)]
    for grad in grads:
        with torch.no_grad():
            _, state = net(grad, state)
        _, direction, adam_state = adam_update(grad, adam_state, 3e-3, (0.9, 0.999), 1e-8)
        torch.testing.assert_close(seen[-1][:, :2], preprocess_gradient(grad))
        torch.testing.assert_close(seen[-1][:, 2], direction)
    # t = 1, bias-corrected: m̂ = g, v̂ = g², so d = g / (|g| + ε), ±1 up to ε/|g| whatever the seed
    g = grads[0]
    torch.testing.assert_close(seen[0][:, 2], g / (g.abs() + 1e-8))


def test_the_lstm_residual_reads_the_gradient_and_adam_s_direction() -> None:
    """The LSTM's input is [pre(g), d] with d = m̂/(√v̂ + ε), Adam's direction, as for the one-shot
    net: at t = 1 (bias-corrected, m̂ = g, v̂ = g²) d = g / (|g| + ε), ±1 up to ε/|g|, not lr · d."""
    torch.manual_seed(0)
    net, seen = ResidualLSTMOptimizer(lr=1e-3, hidden_size=4), []
    net.lstm.cells[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    g = torch.randn(20)
    with torch.no_grad():
        net(g, net.init_state(20))
    torch.testing.assert_close(seen[0][:, :2], preprocess_gradient(g))
    torch.testing.assert_close(seen[0][:, 2], g / (g.abs() + 1e-8))


@pytest.mark.parametrize(("options", "bound"), [({}, 3e-3), ({"residual_scale": 0.05}, 0.05)])
def test_the_one_shot_residual_stays_within_its_scale_which_defaults_to_eta(options, bound) -> None:
    """Δψ − η · d = s · tanh(f_φ): a large last-layer bias (5, tanh ≈ 0.9999) pushes the residual
    to its bound s and no further; s defaults to the step size η (3e-3 here)."""
    net = OneShotStepNet(step_size=3e-3, **options)
    with torch.no_grad():
        net.body[-1].bias.fill_(5.0)
    grad = torch.randn(20)
    with torch.no_grad():
        update, _ = net(grad, net.init_state(20))
    # t = 1: Adam's step is η · g / (|g| + ε)
    residual = (update - 3e-3 * grad / (grad.abs() + 1e-8)).abs()
    assert residual.max() <= bound and residual.min() > 0.99 * bound


def test_the_target_objective_on_logits_that_tell_the_sides_apart() -> None:
    """J = E_E log σ(ℓ) + E_π log σ(−ℓ) − λ (A − a*)², A = ½ (E_E σ(ℓ) + E_π σ(−ℓ)), by hand for
    ℓ = 2 on the expert pairs and 1 on the policy pairs, with a stand-in D whose logit is x."""

    class Identity:
        def logits(self, psi, x):
            return x + psi

    expert_x, policy_x, psi = torch.full((4,), 2.0), torch.full((6,), 1.0), torch.zeros(())
    s2, s1 = 1 / (1 + math.exp(-2.0)), 1 / (1 + math.exp(-1.0))
    q = math.log(s2) + math.log(1 - s1)
    accuracy = (s2 + (1 - s1)) / 2
    target = MetaObjective("target", penalty=4.0, target_accuracy=0.8)
    expected = q - 4.0 * (accuracy - 0.8) ** 2
    assert float(target(Identity(), psi, expert_x, policy_x)) == pytest.approx(expected, abs=1e-6)
    assert float(soft_accuracy(torch.tensor([2.0]), torch.tensor([1.0]))) == pytest.approx(accuracy)


def test_l2l_at_phi0_gives_adam_s_psi_trajectory(problem) -> None:
    n = problem.disc.num_params
    adam = trajectory(problem, AdamFollower(n, steps=3, lr=1e-3))
    net = ResidualLSTMOptimizer(lr=1e-3, hidden_size=6)
    l2l = trajectory(problem, LearnedOptimizerFollower(n, net, steps=3))
    assert (adam[-1] - adam[0]).norm() > 1e-3  # ψ moved: the comparison is not vacuous
    for ours, theirs in zip(l2l, adam, strict=True):
        assert torch.equal(ours, theirs), (ours - theirs).abs().max()
    with torch.no_grad():  # a non-zero residual head is no longer Adam
        net.lstm.head.bias.fill_(0.5)
    moved = trajectory(problem, LearnedOptimizerFollower(n, net, steps=3))
    assert (moved[0] - adam[0]).abs().max() > 1e-4


def test_one_shot_step_stays_in_its_trust_region(problem) -> None:
    n, eps = problem.disc.num_params, 0.01
    problem.trust_radius = eps
    net = OneShotStepNet(step_size=3e-3, residual_scale=0.05)
    with torch.no_grad():
        net.body[-1].bias.fill_(1.0)  # a large learned step: ‖Δψ‖ would be ≈ 0.04 √n
    follower = LearnedOptimizerFollower(n, net, steps=1)
    for r in range(3):
        psi_t = problem.psi.clone()
        batch = problem.sample_batch(torch.Generator().manual_seed(r))
        psi = follower(problem, batch)
        assert float((psi.detach() - psi_t).norm()) == pytest.approx(
            eps, rel=1e-5
        )  # binding: on the sphere
        q = problem.meta_objective(batch, psi)
        grads = torch.autograd.grad(q, list(net.parameters()))
        assert all(torch.isfinite(g).all() for g in grads)  # the projection is differentiable
        problem.psi = psi.detach()


def test_the_adam_follower_stays_in_its_trust_region(problem) -> None:
    """GAIL's hand-designed follower projects after each Adam step: three steps of lr 0.01 would
    move ψ by ≈ 0.03 per coordinate, far beyond ε = 0.01, so ψ ends on the sphere ‖ψ − ψ_t‖ = ε."""
    n, eps = problem.disc.num_params, 0.01
    problem.trust_radius = eps
    follower = AdamFollower(n, steps=3, lr=1e-2)
    for r in range(2):
        psi_t = problem.psi.clone()
        batch = problem.sample_batch(torch.Generator().manual_seed(r))
        problem.psi = follower.solve(problem, batch)
        assert float((problem.psi - psi_t).norm()) == pytest.approx(eps, rel=1e-5)


def test_projection_onto_the_trust_region_in_closed_form(problem) -> None:
    problem.trust_radius = 0.5
    centre = problem.init_follower(None)  # the round starts at ψ_t
    problem.psi = centre + 0.1  # the leader step stores ψ_{t+1}; φ's replays still use ψ_t
    direction = torch.randn_like(centre)
    direction = direction / direction.norm()
    far = problem.project(None, centre + 2.0 * direction)
    torch.testing.assert_close(far, centre + 0.5 * direction)
    near = centre + 0.3 * direction
    torch.testing.assert_close(problem.project(None, near), near)


def test_extra_meta_steps_unroll_from_the_round_start_not_from_the_deployed_psi(problem) -> None:
    """``learn`` (the extra φ steps) must replay the round from (ψ_t, s_t),
    even though by then the leader step has stored ψ_{t+K} in the problem; and it must leave the
    deployed ψ_{t+K} and s_{t+K} alone."""
    n = problem.disc.num_params
    net = ResidualLSTMOptimizer(lr=1e-3, hidden_size=6)
    with torch.no_grad():
        net.lstm.head.weight.normal_()  # a φ away from φ₀, so the hidden state matters
    follower = LearnedOptimizerFollower(n, net, steps=3)
    follower._store(net(torch.randn(n), follower.state)[1])  # a non-zero s_t
    psi_t, state_t = problem.psi.clone(), {k: v.clone() for k, v in follower.state.items()}
    batch = problem.sample_batch(torch.Generator().manual_seed(5))
    psi_k = follower(problem, batch).detach()
    state_k = {k: v.clone() for k, v in follower.state.items()}
    problem.psi = psi_k.clone()  # what GAIL.leader_step does before φ's steps
    calls = []
    unroll = follower.unroll

    def recording_unroll(p, b, psi, state):
        out = unroll(p, b, psi, state)
        calls.append((psi, state, out[0].detach()))
        return out

    follower.unroll = recording_unroll
    with torch.no_grad():
        expected_psi, _ = unroll(problem, batch, psi_t, state_t)  # the round replayed at this φ
    follower.learn(problem, batch)
    ((psi, state, psi_out),) = calls
    torch.testing.assert_close(psi, psi_t)
    for key, value in state_t.items():
        torch.testing.assert_close(state[key], value)
        torch.testing.assert_close(follower.state[key], state_k[key])  # s_{t+K} is kept
    torch.testing.assert_close(psi_out, expected_psi)
    torch.testing.assert_close(problem.psi, psi_k)


@pytest.mark.parametrize("make_net", [lambda: ResidualLSTMOptimizer(hidden_size=6), OneShotStepNet])
def test_meta_gradient_reaches_all_of_phi_after_the_first_step(problem, make_net) -> None:
    """At φ₀ only the zero-initialised last layer gets a gradient (the residual is 0 whatever the
    rest of φ is); after one meta step every parameter of φ does."""
    net = make_net()
    follower = LearnedOptimizerFollower(problem.disc.num_params, net, steps=2, lr=1e-2)
    batch = problem.sample_batch(torch.Generator().manual_seed(3))
    for step in range(2):
        psi = follower(problem, batch)
        grads = torch.autograd.grad(problem.meta_objective(batch, psi), list(net.parameters()))
        assert all(torch.isfinite(g).all() for g in grads)
        reached = [bool(g.abs().max() > 0) for g in grads]
        assert reached[-2:] == [True, True], reached
        assert all(reached) if step else not any(reached[:-2]), (step, reached)
        follower.ascend(problem.meta_objective(batch, follower(problem, batch)))


def test_meta_objectives_match_their_closed_forms(problem) -> None:
    batch = problem.sample_batch(torch.Generator().manual_seed(0))
    psi = torch.zeros(problem.disc.num_params)
    psi[-1] = 2.0  # ℓ = 2 everywhere: D = σ(2), soft accuracy ½ (σ(2) + σ(−2)) = ½
    d = 1 / (1 + math.exp(-2.0))
    q = math.log(d) + math.log(1 - d)
    x = (batch.expert, batch.policy)
    assert float(MetaObjective("q")(problem.disc, psi, *x)) == pytest.approx(q, abs=1e-5)
    target = MetaObjective("target", penalty=4.0, target_accuracy=0.8)
    assert float(target(problem.disc, psi, *x)) == pytest.approx(q - 4.0 * 0.3**2, abs=1e-5)
    # a constant ℓ has ∇_x ℓ = 0, so the gradient penalty is (0 − 1)² = 1
    gp = MetaObjective("q-gp", penalty=3.0)
    assert float(gp(problem.disc, psi, *x).detach()) == pytest.approx(q - 3.0, abs=1e-5)
    with pytest.raises(ValueError, match="Unknown --meta-objective"):
        MetaObjective("accuracy")


@pytest.mark.parametrize("one_shot", [False, True])
def test_online_meta_training_beats_its_adam_start_on_held_out_batches(problem, one_shot) -> None:
    """φ ascends q(ψ_K) on fresh batches from the same start (ψ₀, s₀); afterwards one round raises
    q on held-out batches more than the φ₀ follower (Adam) does: the meta-gradient has the right
    sign and reaches the update."""
    n, psi0 = problem.disc.num_params, problem.disc.init_params()
    net = OneShotStepNet(step_size=3e-3) if one_shot else ResidualLSTMOptimizer(hidden_size=6)
    follower = LearnedOptimizerFollower(n, net, steps=1 if one_shot else 3, lr=3e-2)
    start = {k: v.clone() for k, v in follower.state.items()}

    def round_from_start(batch):
        problem.psi = psi0.clone()
        follower._store(start)
        return follower(problem, batch)

    held_out = [problem.sample_batch(torch.Generator().manual_seed(900 + i)) for i in range(3)]
    with torch.no_grad():
        adam = [float(problem.follower_objective(b, round_from_start(b))) for b in held_out]
    generator = torch.Generator().manual_seed(4)
    for _ in range(15):
        batch = problem.sample_batch(generator)
        follower.ascend(problem.follower_objective(batch, round_from_start(batch)))
    with torch.no_grad():
        learned = [float(problem.follower_objective(b, round_from_start(b))) for b in held_out]
    gains = [after - before for after, before in zip(learned, adam, strict=True)]
    assert min(gains) > 0, gains


def test_the_meta_objective_defaults_are_solve_gails() -> None:
    """A GAIL problem built without a meta-objective uses the one ``solve gail`` defaults to."""
    from problems.imitation.config import GAILConfig

    cfg = GAILConfig()
    assert MetaObjective() == MetaObjective(
        cfg.meta_objective, cfg.meta_penalty, cfg.target_accuracy
    )


@pytest.mark.parametrize("update", ["alternating", "follower-first"])
def test_a_joint_step_draws_one_fresh_batch_for_phi(tmp_path, monkeypatch, update: str) -> None:
    """φ's meta-objective is J on a fresh batch of the round: one draw per φ step. A loop that
    computed J itself before ascend computed it again drew two, and φ stepped on the second."""
    from bilevel import JointTrainer

    gail = tiny_gail_problem(tmp_path)
    drawn = []
    fresh = gail.fresh_batch
    monkeypatch.setattr(gail, "fresh_batch", lambda *a, **k: drawn.append(1) or fresh(*a, **k))
    follower = LearnedOptimizerFollower(gail.disc.num_params, ResidualLSTMOptimizer(1e-3), 2)
    trainer = JointTrainer(gail, follower, gail.model.policy.optimizer, update)
    trainer.step(gail.sample_batch(torch.Generator().manual_seed(0)))
    assert len(drawn) == 1


def recorded_meta_batches(problem: GAIL, monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """The expert side of every batch the problem's meta-objective J is evaluated on, in order."""
    seen, meta = [], problem.meta

    def recording(disc, z, expert, policy):
        seen.append(expert.clone())
        return meta(disc, z, expert, policy)

    monkeypatch.setattr(problem, "meta", recording)
    return seen


def test_each_phi_step_of_a_round_is_meta_trained_on_a_batch_of_its_own(
    problem: GAIL, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every meta-objective call of a round draws a fresh batch of its own."""
    seen = recorded_meta_batches(problem, monkeypatch)
    batch = problem.sample_batch(torch.Generator().manual_seed(9))
    for _ in range(3):
        problem.meta_objective(batch, problem.psi)
    assert len(seen) == 3
    for i, expert in enumerate(seen):
        assert not any(torch.equal(expert, other) for other in seen[i + 1 :])


def test_a_round_s_meta_batches_do_not_depend_on_earlier_rounds_draws(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round's meta-objective batches are the same however many φ steps earlier rounds took."""
    # the draw count restarts every round: a count carried over would make a round's batches
    # depend on the run's history, and after 1,000 φ steps in all reach the seeds of the next
    # round's batches, (seed·100003 + r)·1000 + draw, and draw them again
    firsts = []
    for earlier_draws in (1, 3):
        gail = tiny_gail_problem(tmp_path)
        seen = recorded_meta_batches(gail, monkeypatch)
        batch = gail.sample_batch(torch.Generator().manual_seed(0))
        for _ in range(earlier_draws):
            gail.meta_objective(batch, gail.psi)
        gail.leader_step(batch, gail.psi, gail.model.policy.optimizer)
        gail.meta_objective(batch, gail.psi)  # round 2's first
        firsts.append(seen[-1])
    torch.testing.assert_close(firsts[0], firsts[1], rtol=0, atol=0)
