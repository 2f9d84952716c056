"""GAIL as a bilevel problem: the discriminator objective and rewards (closed forms), one follower
round raising q on a fixed batch (Adam, and the LSTM optimizer after online meta-training), a
finite non-zero meta-gradient, ψ carrying over, and the reward wrapper replacing the env reward."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.env_util import make_vec_env

from learned_optimizers.lstm_optimizer import CoordinateLSTMOptimizer
from problems.imitation.config import GAILConfig
from problems.imitation.discriminator import policy_reward
from problems.imitation.followers import AdamFollower, LSTMFollower
from problems.imitation.reward import DiscriminatorReward
from problems.imitation.solve import build


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    cfg = GAILConfig(
        env="Pendulum-v1",
        n_envs=1,
        n_steps=200,
        disc_hidden=8,
        disc_batch_size=64,
        cache_dir=str(tmp_path_factory.mktemp("d")),
    )
    problem, _, _ = build(cfg.resolve())
    problem.collect_initial("Pendulum-v1", episodes=2)  # the initial policy's pairs
    return problem


def constant_psi(problem, logit: float) -> torch.Tensor:
    """ψ with every weight 0 and the last bias ``logit``: ℓ_ψ(x) = logit for every x."""
    psi = torch.zeros(problem.disc.num_params)
    psi[-1] = logit
    return psi


def test_objective_and_rewards_match_their_closed_forms(problem) -> None:
    batch = problem.sample_batch(torch.Generator().manual_seed(0))
    # D = 1/2 everywhere: q = log ½ + log ½
    assert float(problem.follower_objective(batch, constant_psi(problem, 0.0))) == pytest.approx(
        -2 * math.log(2), abs=1e-6
    )
    # D = σ(2): q = log σ(2) + log(1 − σ(2)); the expert is labelled 1
    d = 1 / (1 + math.exp(-2.0))
    q = float(problem.follower_objective(batch, constant_psi(problem, 2.0)))
    assert q == pytest.approx(math.log(d) + math.log(1 - d), abs=1e-5)
    logits = torch.tensor([-3.0, 0.0, 2.0])
    dd = torch.sigmoid(logits)
    torch.testing.assert_close(policy_reward(logits, "gail"), -torch.log(1 - dd))
    torch.testing.assert_close(policy_reward(logits, "airl"), torch.log(dd) - torch.log(1 - dd))
    # leader loss: −E_π[r] at the policy pairs
    loss = float(problem.leader_loss(batch, constant_psi(problem, 2.0)))
    assert loss == pytest.approx(-math.log(1 + math.exp(2.0)), abs=1e-5)


def test_psi_carries_over_between_rounds(problem) -> None:
    problem.psi = constant_psi(problem, 0.5)
    batch = problem.sample_batch(torch.Generator().manual_seed(1))
    torch.testing.assert_close(problem.init_follower(batch), constant_psi(problem, 0.5))


def test_one_adam_round_raises_the_objective_on_a_fixed_batch(problem) -> None:
    problem.psi = problem.disc.init_params()
    batch = problem.sample_batch(torch.Generator().manual_seed(2))
    before = float(problem.follower_objective(batch, problem.psi))
    follower = AdamFollower(problem.disc.num_params, steps=3, lr=1e-3)
    psi = follower.solve(problem, batch)
    assert float(problem.follower_objective(batch, psi)) > before + 1e-3
    torch.testing.assert_close(problem.psi, problem.disc.init_params())  # solve does not store ψ


def test_lstm_meta_gradient_is_finite_and_non_zero(problem) -> None:
    problem.psi = problem.disc.init_params()
    follower = LSTMFollower(problem.disc.num_params, CoordinateLSTMOptimizer(), steps=5)
    batch = problem.sample_batch(torch.Generator().manual_seed(3))
    psi = follower(problem, batch)
    q = problem.follower_objective(problem.fresh_batch(batch), psi)
    grads = torch.autograd.grad(q, list(follower.net.parameters()), allow_unused=True)
    flat = torch.cat([g.reshape(-1) for g in grads if g is not None])
    assert len(flat) == sum(p.numel() for p in follower.net.parameters())  # φ is all reached
    assert torch.isfinite(flat).all() and flat.abs().max() > 0


def test_one_lstm_round_raises_the_objective_after_online_meta_training(problem) -> None:
    psi0 = problem.disc.init_params()
    follower = LSTMFollower(problem.disc.num_params, CoordinateLSTMOptimizer(), steps=5, lr=1e-2)
    generator = torch.Generator().manual_seed(4)
    for _ in range(10):  # meta-train φ from ψ0 and zero hidden state on fresh batches
        problem.psi = psi0.clone()
        follower._store(follower.net.init_state(problem.disc.num_params))
        batch = problem.sample_batch(generator)
        follower.ascend(problem.follower_objective(batch, follower(problem, batch)))
    problem.psi = psi0.clone()
    follower._store(follower.net.init_state(problem.disc.num_params))
    held_out = problem.sample_batch(torch.Generator().manual_seed(99))
    before = float(problem.follower_objective(held_out, psi0))
    psi = follower.solve(problem, held_out)
    assert float(problem.follower_objective(held_out, psi)) > before + 0.05


def test_extra_meta_steps_unroll_from_the_round_start_not_from_the_deployed_psi(problem) -> None:
    """Finding 3 of issue 13: ``learn`` (the extra φ steps) must replay the round from (ψ_t, h_t),
    even though by then the leader step has stored ψ_{t+K} in the problem; and it must leave the
    deployed ψ_{t+K} and h_{t+K} alone."""
    psi_t = problem.disc.init_params()
    problem.psi = psi_t.clone()
    follower = LSTMFollower(problem.disc.num_params, CoordinateLSTMOptimizer(), steps=3)
    follower._store(follower.net(torch.randn(problem.disc.num_params), follower.state)[1])
    state_t = [(h.clone(), c.clone()) for h, c in follower.state]  # a non-zero h_t
    batch = problem.sample_batch(torch.Generator().manual_seed(5))
    psi_k = follower(problem, batch).detach()
    state_k = [(h.clone(), c.clone()) for h, c in follower.state]
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
    for (h, c), (h0, c0) in zip(state, state_t, strict=True):
        torch.testing.assert_close(h, h0)
        torch.testing.assert_close(c, c0)
    torch.testing.assert_close(psi_out, expected_psi)
    for (h, c), (hk, ck) in zip(follower.state, state_k, strict=True):  # h_{t+K} is kept
        torch.testing.assert_close(h, hk)
        torch.testing.assert_close(c, ck)
    torch.testing.assert_close(problem.psi, psi_k)


def test_reward_wrapper_gives_the_discriminator_reward_not_the_environment_s(problem) -> None:
    seen: list[np.ndarray] = []

    def reward_fn(obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        seen.append(obs.copy())
        return 100.0 + actions[:, 0]  # Pendulum's own reward is never positive

    wrapped = DiscriminatorReward(make_vec_env("Pendulum-v1", n_envs=2, seed=0), reward_fn)
    twin = make_vec_env("Pendulum-v1", n_envs=2, seed=0)
    obs, twin_obs = wrapped.reset(), twin.reset()
    np.testing.assert_array_equal(obs, twin_obs)
    for step in range(3):
        actions = np.array([[0.5 * step], [-1.0]], dtype=np.float32)
        new_obs, rewards, _, infos = wrapped.step(actions)
        _, twin_rewards, _, _ = twin.step(actions)
        np.testing.assert_allclose(rewards, 100.0 + actions[:, 0])
        np.testing.assert_allclose([i["env_reward"] for i in infos], twin_rewards, rtol=1e-6)
        np.testing.assert_array_equal(seen[-1], obs)  # r(s_t, a_t): the state acted on
        obs = new_obs


def test_problem_reward_uses_the_current_psi(problem) -> None:
    env = gym.make("Pendulum-v1")
    obs = np.stack([env.reset(seed=i)[0] for i in range(4)])
    actions = np.zeros((4, 1), dtype=np.float32)
    for logit in (-1.0, 3.0):
        problem.psi = constant_psi(problem, logit)
        np.testing.assert_allclose(problem.reward(obs, actions), np.log1p(np.exp(logit)), rtol=1e-5)
