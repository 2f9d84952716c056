"""GAIL (Ho & Ermon 2016) as a bilevel problem (docs/architecture.md, "The problem"):

    min_θ  −E_π_θ[r_ψ*(s, a)] − β H(π_θ)    s.t.   ψ* ∈ argmax_ψ q(θ, ψ),
    q(θ, ψ) = E_expert[log D_ψ] + E_π_θ[log(1 − D_ψ)],    r_ψ = −log(1 − D_ψ)  (or log D − log(1 − D)).

Leader: the SB3 PPO policy π_θ; its step (``leader_step``) is one PPO update (collect ``n_steps``
per env, then ``n_epochs`` of clipped-surrogate minibatch steps with entropy bonus β) on fresh
rollouts scored by the current D through ``DiscriminatorReward``. Follower: ψ, which carries over
between rounds (``init_follower`` returns the last ψ, ``leader_step`` stores the new one).

A batch is an equal-sized sample of discriminator inputs from the expert demonstrations and from the
policy's latest rollout (state-action pairs of the policy before this round's PPO update, as in
the ``imitation`` library). Every round re-seeds the environments and numpy from (seed, round), so
a resumed run collects exactly what the unbroken run collects.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from torch import Tensor

from bilevel.errors import UserError
from bilevel.protocol import BilevelProblem
from problems.imitation.config import ROUND_SEED_BLOCK, round_seed
from problems.imitation.discriminator import (
    Discriminator,
    discriminator_objective,
    policy_reward,
    side_accuracies,
)
from problems.imitation.experts import Rollout, rollout
from problems.imitation.meta_objective import MetaObjective, soft_accuracy


@dataclass
class GAILBatch:
    """Discriminator inputs: ``expert`` and ``policy``, both (batch, input_dim)."""

    expert: Tensor
    policy: Tensor


class GAIL(BilevelProblem):
    """The bilevel problem; ``model`` is an SB3 PPO whose env is wrapped in DiscriminatorReward
    with ``self.reward`` as its reward function."""

    zero_sum = False
    per_sample_decision = False  # ψ: one discriminator for the whole batch

    def __init__(
        self,
        model: PPO,
        disc: Discriminator,
        demos: Rollout,
        batch_size: int = 256,
        reward: str = "gail",
        grad_penalty: float = 0.0,
        seed: int = 0,
        trust_radius: float = 0.0,
        meta: MetaObjective | None = None,
        round_seed_stride: int = 1,
    ) -> None:
        policy_reward(torch.zeros(1), reward)  # checks the name
        self.model, self.disc, self.reward_kind = model, disc, reward
        self.leader = model.policy
        self.batch_size, self.grad_penalty, self.seed = batch_size, grad_penalty, seed
        self.trust_radius, self.meta = trust_radius, meta or MetaObjective()
        # round r's env i is seeded round_seed(seed, r, stride) + i: a stride of n_envs gives
        # every round's environments seeds of their own (``config.round_seed``)
        self.round_seed_stride = round_seed_stride
        self.meta_draws = 0  # fresh batches drawn for φ this round
        self.expert_x = disc.inputs(demos.observations, demos.actions)
        self.demos_digest = demonstrations_digest(demos)
        self.demos_digests = accepted_digests(demos)  # what a checkpoint of them may record
        self.psi = disc.init_params()
        self.round_start = self.psi.clone()  # ψ_t of the current round (``init_follower``)
        self.round = 0
        self.policy_x = torch.zeros(0, self.expert_x.shape[1])
        self.diagnostics: dict[str, float] = {}  # of the last round, see ``_diagnose``

    # the protocol ---------------------------------------------------------------------------
    def init_follower(self, batch: GAILBatch, random_start: bool = False) -> Tensor:
        """The last ψ (the discriminator carries over between rounds); it is also the round's
        start ψ_t, the centre of the trust region for the rest of the round."""
        self.round_start = self.psi.clone()
        return self.psi.clone()

    def follower_objective(self, batch: GAILBatch, z: Tensor) -> Tensor:
        return discriminator_objective(self.disc, z, batch.expert, batch.policy, self.grad_penalty)

    def project(self, batch: GAILBatch, z: Tensor) -> Tensor:
        """The trust region {ψ : ‖ψ − ψ_t‖ ≤ ε} around the round's start ψ_t (what
        ``init_follower`` handed out this round: the φ steps that replay the round after the
        leader step stored ψ_{t+1} must still be projected around ψ_t), as the DRO attacker works
        in its ε-ball; all of ℝ^dim ψ (the identity) when ε = 0. Differentiable in z, for the
        learned follower's meta-gradient."""
        if not self.trust_radius:
            return z
        delta = z - self.round_start
        scale = (self.trust_radius / delta.norm().clamp_min(1e-12)).clamp(max=1.0)
        return self.round_start + scale * delta

    def meta_objective(self, batch: GAILBatch, z: Tensor) -> Tensor:
        """The learned follower's meta-objective J(ψ_K) (``meta_objective.py``) on a fresh batch
        of this round; each call draws another one."""
        fresh = self.fresh_batch(batch, draw=self.meta_draws)
        self.meta_draws += 1
        return self.meta(self.disc, z, fresh.expert, fresh.policy)

    def leader_loss(self, batch: GAILBatch, z: Tensor) -> Tensor:
        """−E_π[r_ψ(s, a)] on the batch's policy pairs: what the leader's PPO step lowers (the
        step itself goes through the environment, see ``leader_step``)."""
        return -policy_reward(self.disc.logits(z, batch.policy), self.reward_kind).mean()

    def follower_features(self, batch: GAILBatch, z: Tensor) -> Tensor:
        """The discriminator inputs of the batch (a coordinate-wise optimizer needs none)."""
        return torch.cat([batch.expert, batch.policy])

    def leader_step(self, batch: GAILBatch, z: Tensor, optimizer: torch.optim.Optimizer) -> Tensor:
        """Keep ψ = z, then one PPO update (SB3 ``learn`` for one rollout, ``optimizer`` is the
        policy's own) on rollouts rewarded by D_ψ. Returns −(mean D-reward of the rollout), or NaN
        where the policy's parameters went NaN or infinite in the update (SB3 then fails on its
        next action), so that the joint loop's NaN guard ends the run in one sentence."""
        psi_step = float((z.detach() - self.psi).norm())
        self.psi = z.detach().clone()
        self.round += 1
        self.meta_draws = 0
        first_seed = round_seed(self.seed, self.round, self.round_seed_stride)
        np.random.seed(first_seed % 2**32)
        self.model.env.seed(first_seed)  # env i resets from first_seed + i
        self.model._last_obs = None  # start fresh episodes from the seeded resets
        steps = self.model.n_steps * self.model.n_envs
        try:
            self.model.learn(total_timesteps=steps, reset_num_timesteps=False)
        except ValueError:  # SB3's action distribution refuses the NaN outputs of a NaN policy
            if self._policy_is_finite():
                raise
            return torch.tensor(float("nan"))  # for fit's NaN guard: one sentence, what is kept
        if not self._policy_is_finite():  # diverged in the update: validation's rollout would fail
            return torch.tensor(float("nan"))
        buffer = self.model.rollout_buffer
        self.policy_x = self._policy_inputs(buffer.observations, buffer.actions)
        self.diagnostics = self._diagnose(psi_step)
        return -torch.tensor(self.diagnostics["reward_mean"])

    def _policy_is_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.model.policy.parameters())

    def step_metrics(self) -> dict[str, float]:
        """The round's discriminator diagnostics (``_diagnose``), into ``metrics.jsonl``."""
        return self.diagnostics

    def begin_step(self, batch: GAILBatch) -> None:
        """Before the follower's round: fold the round's training batch (half expert, half policy
        pairs) into D's running input statistics, when D keeps them (``Discriminator.observe``)."""
        self.disc.observe(torch.cat([batch.expert, batch.policy]))

    def _diagnose(self, psi_step: float) -> dict[str, float]:
        """The round's discriminator, seen from the leader: D_ψ's accuracy and mean logit on all
        expert pairs and on the pairs of the rollout it just rewarded, its soft accuracy A_ψ
        (``meta_objective.soft_accuracy``), the mean and standard deviation of that reward, and
        ‖ψ_{t+1} − ψ_t‖. The reward is recomputed from D's logits on the rollout's pairs: the
        buffer's also hold γ·V(s_T), which SB3 adds to the last reward of every episode a time
        limit cut."""
        with torch.no_grad():
            expert = self.disc.logits(self.psi, self.expert_x)
            policy = self.disc.logits(self.psi, self.policy_x)
            rewards = policy_reward(policy, self.reward_kind)
        acc_expert, acc_policy = side_accuracies(expert, policy)
        return {
            "disc_acc_expert": acc_expert,
            "disc_acc_policy": acc_policy,
            "disc_logit_expert": float(expert.mean()),
            "disc_logit_policy": float(policy.mean()),
            "disc_soft_acc": float(soft_accuracy(expert, policy)),
            "reward_mean": float(rewards.mean()),
            "reward_std": float(rewards.std()),
            "psi_step": psi_step,
        }

    # data ----------------------------------------------------------------------------------
    def _policy_inputs(self, observations: np.ndarray, actions: np.ndarray) -> Tensor:
        obs = observations.reshape(-1, observations.shape[-1])
        act = actions.reshape(obs.shape[0], -1)
        space = self.model.action_space
        if isinstance(space, gym.spaces.Box):
            act = np.clip(act, space.low, space.high)  # what the environment executed
        return self.disc.inputs(obs, act)

    def collect_initial(self, env_id: str, episodes: int) -> None:
        """Fill the policy buffer with rollouts of the initial policy (before round 1). Their
        environment steps are not in ``env_steps`` (PPO's ``num_timesteps``): the same cost for
        every follower, paid once."""

        def act(obs: np.ndarray) -> np.ndarray:
            return np.asarray(self.model.predict(obs, deterministic=False)[0])

        r = rollout(env_id, act, episodes, seed=self.seed * 7919 + 17)
        self.policy_x = self._policy_inputs(r.observations, r.actions)

    def sample_batch(self, generator: torch.Generator) -> GAILBatch:
        """``batch_size`` pairs from each side, drawn with replacement by ``generator``."""
        e = torch.randint(len(self.expert_x), (self.batch_size,), generator=generator)
        p = torch.randint(len(self.policy_x), (self.batch_size,), generator=generator)
        return GAILBatch(self.expert_x[e], self.policy_x[p])

    def fresh_batch(self, batch: GAILBatch | None, draw: int = 0) -> GAILBatch:
        """Sample number ``draw`` of this round, apart from the round's training batch (the
        learned follower's meta-objective batches; ``draw`` 0 also serves validation)."""
        seed = (self.seed * ROUND_SEED_BLOCK + self.round) * 1_000 + draw + 50_000
        return self.sample_batch(torch.Generator().manual_seed(seed))

    def reward(self, observations: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """r_ψ(s, a) for the reward wrapper, from the current ψ."""
        with torch.no_grad():
            logits = self.disc.logits(self.psi, self._policy_inputs(observations, actions))
            return policy_reward(logits, self.reward_kind).numpy()

    # checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "psi": self.psi,
            "round": self.round,
            "policy_x": self.policy_x,
            "num_timesteps": self.model.num_timesteps,
            "meta_draws": self.meta_draws,
            "disc_stats": self.disc.state_dict(),
            "demos_digest": self.demos_digest,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint; one sentence if the demonstrations are not the ones it was
        trained on (a checkpoint older than the digest is taken as it is: it cannot tell)."""
        recorded = state.get("demos_digest", self.demos_digest)
        if recorded not in self.demos_digests:
            raise UserError(
                "--resume: the expert's demonstrations are not the ones this run was trained on "
                f"(digest {recorded}, now {self.demos_digest}: was the expert retrained, or the "
                "cache changed?); restore them, or start a new run in another --out."
            )
        self.psi = state["psi"].clone()
        self.round_start = self.psi.clone()
        self.round = int(state["round"])
        self.policy_x = state["policy_x"].clone()
        self.model.num_timesteps = int(state["num_timesteps"])
        self.meta_draws = int(state["meta_draws"])
        self.disc.load_state_dict(state["disc_stats"])


def demonstrations_digest(demos: Rollout) -> str:
    """The first 12 hex digits of the SHA-256 of the demonstrations' observations and actions, each
    as its shape and its values in float64 (exact for float32 and for integer actions), so that
    the same demonstrations give the same digest whatever integer type a platform's expert
    returns: a resumed run checks that it imitates what it started imitating
    (``load_state_dict``)."""
    digest = hashlib.sha256()
    for array in (demos.observations, demos.actions):
        digest.update(repr(np.shape(array)).encode())
        digest.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
    return digest.hexdigest()[:12]


def accepted_digests(demos: Rollout) -> frozenset[str]:
    """The digests a checkpoint trained on ``demos`` may record: today's
    (``demonstrations_digest``) and the raw-bytes one that runs trained between 6e679d6 and
    6aa05b3 (2026-12-05) recorded, the same demonstrations under the older hash."""
    raw = hashlib.sha256()
    for array in (demos.observations, demos.actions):
        raw.update(np.ascontiguousarray(array).tobytes())
    return frozenset({demonstrations_digest(demos), raw.hexdigest()[:12]})
