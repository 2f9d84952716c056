"""GAIL as a bilevel problem: the discriminator objective and rewards (closed forms), one Adam
round raising q on a fixed batch, ψ carrying over, and the reward wrapper replacing the env reward.
The learned followers are tested in ``test_gail_followers.py``."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from helpers import tiny_gail_problem
from stable_baselines3.common.env_util import make_vec_env

from bilevel.optimizer_followers import AdamFollower
from problems.imitation.config import round_seed
from problems.imitation.discriminator import (
    Discriminator,
    discriminator_accuracy,
    discriminator_objective,
    policy_reward,
)
from problems.imitation.gail import GAIL
from problems.imitation.reward import DiscriminatorReward


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module's demonstrations cache: every problem built here rolls them out once."""
    return tmp_path_factory.mktemp("d")


@pytest.fixture(scope="module")
def problem(cache: Path) -> GAIL:
    return tiny_gail_problem(cache)


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


def test_running_input_statistics_are_the_pooled_moments_of_the_batches() -> None:
    """With ``norm="running"`` D standardises its observation inputs with
    the mean and (population) spread of every batch it has seen, expert and policy pairs alike."""
    env = gym.make("Pendulum-v1")
    expert = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    disc = Discriminator(env.observation_space, env.action_space, expert, (4,), norm="running")
    x = torch.randn(6, 4)
    torch.testing.assert_close(  # before any batch: the expert's statistics
        disc.standardise(x)[:, :3], (x[:, :3] - disc.obs_mean) / torch.tensor(expert).std(0)
    )
    batches = [torch.randn(n, 4) * 3 + 5 for n in (5, 7, 11)]
    for batch in batches:
        disc.observe(batch)
    pooled = torch.cat(batches)[:, :3]
    torch.testing.assert_close(disc.obs_mean, pooled.mean(0))
    torch.testing.assert_close(disc.obs_std, pooled.std(0, unbiased=False))
    z = disc.standardise(x)
    torch.testing.assert_close(z[:, :3], (x[:, :3] - pooled.mean(0)) / disc.obs_std)
    torch.testing.assert_close(z[:, 3], x[:, 3])  # the action is not standardised
    twin = Discriminator(env.observation_space, env.action_space, expert, (4,), norm="running")
    twin.load_state_dict(disc.state_dict())  # checkpoints carry the statistics
    torch.testing.assert_close(twin.standardise(x), z)
    disc.clip = 0.5
    assert float(disc.standardise(x * 100)[:, :3].abs().max()) == 0.5
    fixed = Discriminator(env.observation_space, env.action_space, expert, (4,), norm="expert")
    mean = fixed.obs_mean.clone()
    fixed.observe(batches[0])
    torch.testing.assert_close(fixed.obs_mean, mean)  # expert statistics stay fixed


def test_the_logged_reward_is_the_discriminator_s_not_ppo_s_bootstrapped_return(problem) -> None:
    """Pendulum truncates every episode at 200 steps, the rollout's length here, and SB3 adds
    γ·V(s_T) to the buffer's last reward at a truncation. With D's logit a constant L every pair
    earns softplus(L): the round's logged mean and spread must be exactly that and 0."""
    logit = 1.5
    psi = constant_psi(problem, logit)
    batch = problem.sample_batch(torch.Generator().manual_seed(3))
    loss = problem.leader_step(batch, psi, problem.model.policy.optimizer)
    reward = math.log1p(math.exp(logit))
    metrics = problem.step_metrics()
    assert metrics["reward_mean"] == pytest.approx(reward, rel=1e-5)
    assert metrics["reward_std"] == pytest.approx(0.0, abs=1e-5)
    assert float(loss) == pytest.approx(-reward, rel=1e-5)


def test_a_gail_round_leaves_no_folder_in_the_temp_directory(
    problem, tmp_path, monkeypatch
) -> None:
    """SB3 made an empty /tmp/SB3-<time> folder at every learn() call, one per GAIL round: a
    stability study left thousands. The PPO leader's logger has no folder."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where SB3's default logger writes
    batch = problem.sample_batch(torch.Generator().manual_seed(4))
    problem.leader_step(batch, constant_psi(problem, 0.5), problem.model.policy.optimizer)
    assert list(tmp_path.iterdir()) == []


def test_every_round_starts_its_environments_from_states_of_their_own(tmp_path) -> None:
    """Each round reseeds its environments and starts fresh episodes. With round r's env i seeded
    seed·100003 + r + i, env i of round r+1 replayed env i+1's starts of round r (3 of 4 envs on
    Pendulum's deterministic dynamics); every round's start states must be new."""
    problem = tiny_gail_problem(tmp_path, n_envs=2, n_steps=64, ppo_batch_size=64)
    starts, reset = [], problem.model.env.reset

    def recording_reset():
        obs = reset()
        starts.extend(tuple(np.round(row, 6)) for row in obs)
        return obs

    problem.model.env.reset = recording_reset
    for r in range(3):
        batch = problem.sample_batch(torch.Generator().manual_seed(r))
        problem.leader_step(batch, constant_psi(problem, 0.5), problem.model.policy.optimizer)
    assert len(starts) == 6 and len(set(starts)) == 6, starts


def test_the_rounds_start_where_the_held_out_check_says(tmp_path) -> None:
    """Round r's env i starts where ``reset(round_seed(seed, r, stride) + i)`` starts: the seeds
    ``check_round_seeds`` keeps below the demonstrations', validation's and test's starts. Each
    round's start states are compared with fresh Pendulum resets from those seeds."""
    problem = tiny_gail_problem(tmp_path, n_envs=2, n_steps=64, ppo_batch_size=64, seed=3)
    starts, reset = [], problem.model.env.reset

    def recording_reset():
        obs = reset()
        starts.append(obs.copy())
        return obs

    problem.model.env.reset = recording_reset
    for r in range(1, 3):
        batch = problem.sample_batch(torch.Generator().manual_seed(r))
        problem.leader_step(batch, constant_psi(problem, 0.5), problem.model.policy.optimizer)
        env = gym.make("Pendulum-v1")
        first = round_seed(3, r, stride=2)  # stride n_envs: the rounds' seeds are disjoint
        expected = [env.reset(seed=first + i)[0] for i in range(2)]
        np.testing.assert_allclose(starts[-1], np.stack(expected), rtol=1e-6)


def _linear_discriminator() -> Discriminator:
    """ℓ_ψ(x) = wᵀ x̂ + b on Pendulum's inputs x = (obs, action), obs standardised by the expert's
    statistics and the action as it is."""
    env = gym.make("Pendulum-v1")
    expert = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    return Discriminator(env.observation_space, env.action_space, expert, hidden=())


def test_the_expert_is_labelled_one_by_a_discriminator_that_separates() -> None:
    """With ℓ = +1 on every expert input and −1 on every policy input, q = E_E log D + E_π log(1 −
    D) = 2 log σ(1); swapped labels would give 2 log σ(−1). A constant ψ cannot tell them apart."""
    disc = _linear_discriminator()
    psi = torch.zeros(disc.num_params)
    psi[3] = 1.0  # ℓ = the action
    centre = disc.obs_mean.expand(8, 3)  # standardised observation 0
    expert_x = torch.cat([centre, torch.full((8, 1), 1.0)], 1)
    policy_x = torch.cat([centre, torch.full((8, 1), -1.0)], 1)
    q = discriminator_objective(disc, psi, expert_x, policy_x)
    assert float(q) == pytest.approx(2 * math.log(1 / (1 + math.exp(-1.0))), abs=1e-6)


def test_accuracy_is_one_half_for_a_discriminator_that_tells_nothing_apart() -> None:
    """ψ = 0 gives D = 1/2 on every pair: a coin flip scores 1/2 (a tie counts right on one side,
    not wrong on both), and a ψ that separates the two scores 1."""
    disc = _linear_discriminator()
    centre = disc.obs_mean.expand(8, 3)
    expert_x = torch.cat([centre, torch.full((8, 1), 1.0)], 1)
    policy_x = torch.cat([centre, torch.full((8, 1), -1.0)], 1)
    psi = torch.zeros(disc.num_params)
    assert discriminator_accuracy(disc, psi, expert_x, policy_x) == 0.5
    psi[3] = 1.0  # ℓ = the action: +1 on the expert's pairs, −1 on the policy's
    assert discriminator_accuracy(disc, psi, expert_x, policy_x) == 1.0
    assert discriminator_accuracy(disc, -psi, expert_x, policy_x) == 0.0


def test_the_gradient_penalty_of_a_linear_discriminator_is_norm_w_minus_one_squared() -> None:
    """ℓ = wᵀ x̂ has ‖∇_x̂ ℓ‖ = ‖w‖ everywhere: with ‖w‖ = 2 and λ = 1 the penalty is (2 − 1)² = 1."""
    disc = _linear_discriminator()
    psi = torch.zeros(disc.num_params)
    psi[0] = 2.0
    x = torch.randn(8, 4)
    with_penalty = discriminator_objective(disc, psi, x, x, grad_penalty=1.0)
    without = discriminator_objective(disc, psi, x, x, grad_penalty=0.0)
    assert float(without - with_penalty) == pytest.approx(1.0, abs=1e-5)


def test_the_gradient_penalty_is_taken_on_the_segment_between_expert_and_policy_inputs() -> None:
    """ℓ = relu(a − 1) + relu(1/2 − a) in the action a: flat on the segment between the expert's
    a = 1 and the policy's a = 1/2, slope ±1 outside it. Every x̂ = u·x_E + (1 − u)·x_π has
    ∇ℓ = 0, so the penalty is λ · (0 − 1)² = λ exactly; a point off the segment would lower it."""
    env = gym.make("Pendulum-v1")
    expert = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    disc = Discriminator(env.observation_space, env.action_space, expert, hidden=(2,))
    # ψ = [W1 (2×4), b1 (2), W2 (1×2), b2 (1)]; the inputs are (obs, a), obs weighted 0
    psi = torch.zeros(disc.num_params)
    psi[3], psi[7], psi[8], psi[9], psi[10:12] = 1.0, -1.0, -1.0, 0.5, 1.0
    n, centre = 64, disc.obs_mean.expand(64, 3)
    expert_x = torch.cat([centre, torch.full((n, 1), 1.0)], 1)
    policy_x = torch.cat([centre, torch.full((n, 1), 0.5)], 1)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        with_penalty = discriminator_objective(disc, psi, expert_x, policy_x, grad_penalty=2.0)
    without = discriminator_objective(disc, psi, expert_x, policy_x, grad_penalty=0.0)
    assert float((without - with_penalty).detach()) == pytest.approx(2.0, abs=1e-6)


def test_the_gradient_penalty_is_differentiable_in_psi() -> None:
    """ℓ = wᵀ x̂ + b: the penalty λ (‖w‖ − 1)² has ∇_w = 2λ (‖w‖ − 1) w / ‖w‖ and ∇_b = 0, so with
    w = 2 e₀ and λ = 1 it lowers ∂q/∂w₀ by 2 and no other coordinate: the ascent on q sees it."""
    disc = _linear_discriminator()
    psi = torch.zeros(disc.num_params)
    psi[0] = 2.0
    psi.requires_grad_(True)
    x = torch.randn(8, 4)
    (with_penalty,) = torch.autograd.grad(
        discriminator_objective(disc, psi, x, x, grad_penalty=1.0), psi
    )
    (without,) = torch.autograd.grad(discriminator_objective(disc, psi, x, x), psi)
    expected = torch.zeros(disc.num_params)
    expected[0] = -2.0
    torch.testing.assert_close(with_penalty - without, expected)


def test_the_gradient_penalty_points_fill_the_segment_not_one_end() -> None:
    """ℓ = relu(a) in the action a, expert a = 1, policy a = −1: x̂ has a = 2u − 1, slope 1 (no
    penalty) where u > ½ and 0 (penalty λ) where u < ½, so the penalty is λ/2 in expectation; all
    x̂ at the expert's end would give 0 and all at the policy's λ."""
    env = gym.make("Pendulum-v1")
    expert = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    disc = Discriminator(env.observation_space, env.action_space, expert, hidden=(1,))
    psi = torch.zeros(disc.num_params)  # ψ = [W1 (1×4), b1 (1), W2 (1×1), b2 (1)]
    psi[3], psi[5] = 1.0, 1.0
    n, centre = 2048, disc.obs_mean.expand(2048, 3)
    expert_x = torch.cat([centre, torch.full((n, 1), 1.0)], 1)
    policy_x = torch.cat([centre, torch.full((n, 1), -1.0)], 1)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        with_penalty = discriminator_objective(disc, psi, expert_x, policy_x, grad_penalty=2.0)
    without = discriminator_objective(disc, psi, expert_x, policy_x, grad_penalty=0.0)
    # the share of u < ½ among 2048 uniform draws: ½ ± 0.011 (one standard error)
    assert float((without - with_penalty).detach()) == pytest.approx(1.0, abs=0.1)


def action_sign_psi(disc: Discriminator) -> torch.Tensor:
    """ψ with ℓ_ψ(s, a) = a: two ReLU units carry a⁺ and a⁻ through every layer, out a⁺ − a⁻."""
    blocks, action = [], disc.obs_dim  # the action input, which D does not standardise
    for name, shape in zip(disc.names, disc.shapes, strict=True):
        block = torch.zeros(shape)
        if name.endswith("weight") and shape[0] == 1:  # the output layer
            block[0, 0], block[0, 1] = 1.0, -1.0
        elif name.endswith("weight") and not blocks:  # the first layer reads the action
            block[0, action], block[1, action] = 1.0, -1.0
        elif name.endswith("weight"):
            block[0, 0], block[1, 1] = 1.0, 1.0
        blocks.append(block.reshape(-1))
    return torch.cat(blocks)


def test_the_round_s_diagnostics_report_each_side_on_its_own_pairs(problem: GAIL) -> None:
    """The logged accuracy and mean logit of each side are D's on that side's pairs."""
    # with ℓ = a, D calls a pair expert iff its action is ≥ 0: the expert accuracy is the share of
    # expert actions ≥ 0, the policy's the share of the rollout's actions < 0, each side's mean
    # logit its mean action (a constant ℓ would score swapped sides the same)
    psi = action_sign_psi(problem.disc)
    x = torch.randn(16, problem.expert_x.shape[1])
    torch.testing.assert_close(problem.disc.logits(psi, x), x[:, -1])  # ℓ = a indeed
    batch = problem.sample_batch(torch.Generator().manual_seed(5))
    problem.leader_step(batch, psi, problem.model.policy.optimizer)
    metrics = problem.step_metrics()
    expert_a, policy_a = problem.expert_x[:, -1], problem.policy_x[:, -1]
    assert metrics["disc_acc_expert"] == pytest.approx(float((expert_a >= 0).float().mean()))
    assert metrics["disc_acc_policy"] == pytest.approx(float((policy_a < 0).float().mean()))
    assert metrics["disc_logit_expert"] == pytest.approx(float(expert_a.mean()), abs=1e-6)
    assert metrics["disc_logit_policy"] == pytest.approx(float(policy_a.mean()), abs=1e-6)


def test_the_policy_pairs_hold_the_actions_the_environment_executed(cache: Path) -> None:
    """D sees the rollout's actions clipped to the action space, as the environment ran them."""
    # PPO's buffer keeps the Gaussian's raw actions; the environment executes them clipped and
    # the expert's never leave [−2, 2], so unclipped ones would tell the policy apart by actions
    # no policy can execute. The initial policy without gSDE has σ = 1: P(|a| > 2) = 4.6%, about
    # 9 of the round's 200 actions.
    gaussian = tiny_gail_problem(cache, use_sde=False)
    batch = gaussian.sample_batch(torch.Generator().manual_seed(6))
    gaussian.leader_step(batch, constant_psi(gaussian, 0.5), gaussian.model.policy.optimizer)
    high = gaussian.model.action_space.high
    raw = gaussian.model.rollout_buffer.actions.reshape(-1)
    assert float(np.abs(raw).max()) > high[0]  # some raw action left the box
    executed = gaussian.disc.inputs(np.zeros((len(raw), 3)), np.clip(raw, -high, high)[:, None])
    torch.testing.assert_close(gaussian.policy_x[:, -1], executed[:, -1])


def test_the_initial_policy_pairs_are_sampled_not_the_mean_action(cache: Path) -> None:
    """Before round 1, D's policy pairs are sampled from the initial policy, as PPO samples."""
    # sampled from the Gaussian (σ = 1 without gSDE), the actions differ from the mean action at
    # their states by about σ (a little less for the clip to [−2, 2]); the mean action
    # (deterministic=True) would hand D a policy with no spread at all
    gaussian = tiny_gail_problem(cache, use_sde=False)  # collects the initial pairs
    obs = gaussian.policy_x[:, :3].numpy()
    mean, _ = gaussian.model.predict(obs, deterministic=True)
    executed = gaussian.policy_x[:, -1] * float(gaussian.disc.action_scale[0])  # D reads a / 2
    spread = float((executed - torch.as_tensor(mean[:, 0])).std())
    assert 0.5 < spread < 1.5  # the mean action would leave 0 (up to rounding)


def test_a_value_error_from_inside_a_finite_policy_s_round_is_raised_not_called_divergence(
    problem: GAIL, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a policy gone NaN is returned as NaN; another ValueError in the round surfaces."""
    # NaN is what fit's guard turns into "the training loss became NaN": a reward function's
    # (or an environment's) own ValueError must not be reported as a diverged policy

    def broken_reward(observations: np.ndarray, actions: np.ndarray) -> np.ndarray:
        raise ValueError("the reward function's own error")

    monkeypatch.setattr(problem, "reward", broken_reward)
    batch = problem.sample_batch(torch.Generator().manual_seed(7))
    with pytest.raises(ValueError, match="the reward function's own error"):
        problem.leader_step(batch, constant_psi(problem, 0.5), problem.model.policy.optimizer)


def test_the_environment_pays_the_airl_reward_when_it_is_chosen(cache: Path) -> None:
    """With --reward airl PPO's environment pays r = log D − log(1 − D) = ℓ, signed."""
    # gail's softplus(ℓ) is always positive; with a constant logit ℓ every step pays exactly ℓ
    airl = tiny_gail_problem(cache, reward="airl")
    env = airl.model.env
    env.reset()
    for logit in (-1.0, 3.0):
        airl.psi = constant_psi(airl, logit)
        _, rewards, _, _ = env.step(np.zeros((env.num_envs, 1), dtype=np.float32))
        np.testing.assert_allclose(rewards, logit, rtol=1e-6)
