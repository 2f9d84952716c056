"""The joint step (Algorithm 3): signs of both updates, fused = alternating, and the toy problem
whose follower and leader solutions are known in closed form."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import TinyConvAttacker, image_batch, load_example
from torch import nn

from bilevel import JointTrainer, LearnedFollower, SignGradientAscent, UserError
from problems.adversarial.dro import AdversarialDRO
from problems.adversarial.models import SmallCNN

EPS = 0.3


def _setup(leader_lr: float, follower_lr: float, steps: int = 1):
    torch.manual_seed(0)
    problem = AdversarialDRO(SmallCNN(), EPS)
    follower = LearnedFollower(
        TinyConvAttacker(2, 1, EPS), steps=steps, lr=follower_lr, weight_decay=0.0
    )
    optimizer = torch.optim.SGD(problem.leader.parameters(), lr=leader_lr)
    return problem, follower, optimizer


@pytest.mark.parametrize("update", ["alternating", "fused"])
def test_one_joint_step_moves_theta_down_on_L_and_phi_up_on_q(update: str) -> None:
    problem, follower, optimizer = _setup(leader_lr=0.05, follower_lr=1e-3)
    batch = image_batch(64)
    with torch.no_grad():
        z_before = follower.solve(problem, batch)
        L_before = float(problem.leader_loss(batch, z_before))
        q_before = float(problem.follower_objective(batch, z_before))
    leader_before = copy.deepcopy(problem.leader)
    JointTrainer(problem, follower, optimizer, update).step(batch)
    with torch.no_grad():
        # θ: the leader loss at the same (fixed) z went down
        assert float(problem.leader_loss(batch, z_before)) < L_before
        # φ: the follower objective against the old leader went up
        old = AdversarialDRO(leader_before, EPS)
        assert float(old.follower_objective(batch, follower.solve(old, batch))) > q_before


def _gradients(update: str, steps: int) -> dict[str, torch.Tensor]:
    problem, follower, optimizer = _setup(leader_lr=0.0, follower_lr=0.0, steps=steps)
    batch = image_batch(16)
    JointTrainer(problem, follower, optimizer, update).step(batch)
    grads = {f"leader.{n}": p.grad.clone() for n, p in problem.leader.named_parameters()}
    grads |= {f"follower.{n}": p.grad.clone() for n, p in follower.net.named_parameters()}
    return grads


@pytest.mark.parametrize("steps", [1, 2])
def test_fused_and_alternating_give_the_same_gradients_without_batch_norm(steps: int) -> None:
    fused, alternating = _gradients("fused", steps), _gradients("alternating", steps)
    assert fused.keys() == alternating.keys()
    for name in fused:
        assert fused[name].abs().max() > 0, name
        torch.testing.assert_close(fused[name], alternating[name], rtol=1e-4, atol=1e-7)


def test_consecutive_fused_steps_do_not_accumulate_gradients() -> None:
    """The second of two fused steps moves θ and φ as a fresh trainer, loaded with the state
    after the first, moves them on the same batch: each step's update uses its own backward only
    (θ's and φ's gradients from the step before are cleared, not added to)."""
    problem, follower, optimizer = _setup(leader_lr=0.05, follower_lr=1e-2)
    trainer = JointTrainer(problem, follower, optimizer, "fused")
    first, second = image_batch(8), image_batch(8)
    trainer.step(first)
    after_first = copy.deepcopy(trainer.state_dict())
    trainer.step(second)

    fresh_problem, fresh_follower, fresh_optimizer = _setup(leader_lr=0.05, follower_lr=1e-2)
    fresh = JointTrainer(fresh_problem, fresh_follower, fresh_optimizer, "fused")
    fresh.load_state_dict(after_first)
    fresh.step(second)
    for name, value in trainer.state_dict()["leader"].items():
        torch.testing.assert_close(value, fresh_problem.leader.state_dict()[name], msg=name)
    for name, value in follower.state_dict().items():
        torch.testing.assert_close(value, fresh_follower.state_dict()[name], msg=name)


def test_fused_update_refuses_a_hand_designed_follower() -> None:
    problem, _, optimizer = _setup(0.1, 0.1)
    with pytest.raises(UserError, match="learned follower"):
        JointTrainer(problem, SignGradientAscent(1, 0.1), optimizer, "fused")


class _OwnLeaderStep(AdversarialDRO):
    def leader_step(self, batch, z, optimizer):  # e.g. a clipped or a second-order step
        return super().leader_step(batch, z, optimizer)


@pytest.mark.parametrize(
    ("problem_kind", "refused"),
    [("unrolled", True), ("implicit-cg", True), ("leader_step", True), ("danskin", False)],
)
def test_fused_update_refuses_a_problem_whose_leader_step_it_would_skip(
    problem_kind: str, refused: bool
) -> None:
    """The fused step takes θ down L from one backward: a hypergradient other than Danskin's,
    or a problem's own leader_step, was silently never called."""
    _, follower, _ = _setup(0.1, 0.1)
    problem = (_OwnLeaderStep if problem_kind == "leader_step" else AdversarialDRO)(SmallCNN(), EPS)
    if problem_kind != "leader_step":
        problem.hypergradient = problem_kind
    optimizer = torch.optim.SGD(problem.leader.parameters(), lr=0.1)
    if refused:
        with pytest.raises(UserError, match="would skip this problem's own leader step"):
            JointTrainer(problem, follower, optimizer, "fused")
    else:
        JointTrainer(problem, follower, optimizer, "fused")  # Danskin's step is the fused one
    JointTrainer(problem, follower, optimizer, "alternating")  # which calls the problem's step


def test_follower_steps_gives_that_many_phi_updates() -> None:
    problem, follower, optimizer = _setup(leader_lr=0.0, follower_lr=1e-3)
    batch = image_batch(8)
    JointTrainer(problem, follower, optimizer, "alternating", follower_steps=3).step(batch)
    assert follower.optimizer.state[next(follower.net.parameters())]["step"] == 3
    # each extra step solves afresh at the current φ (the step count alone would also count two
    # more Adam steps on the first solve's stale gradient): with θ held (lr 0) that is one joint
    # step followed by two ``learn`` calls, in the modes the step leaves (leader eval, g_φ train)
    twin_problem, twin, twin_optimizer = _setup(leader_lr=0.0, follower_lr=1e-3)
    image_batch(8)  # the same draws after _setup as above, so both steps start alike
    JointTrainer(twin_problem, twin, twin_optimizer, "alternating").step(batch)
    after_one = _phi(twin)
    for _ in range(2):
        twin.learn(twin_problem, batch)
    assert any(not torch.equal(a, b) for a, b in zip(after_one, _phi(twin), strict=True))
    for p, expected in zip(_phi(follower), _phi(twin), strict=True):
        torch.testing.assert_close(p, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("follower_name", ["grad", "pgm"])
def test_toy_problem_reaches_the_closed_form_answers(follower_name: str) -> None:
    """min_θ E max_{‖z‖∞≤ε} ½‖x + z − θ‖²: z* = ε sign(x − θ), θ* = the data's centre."""
    toy = load_example("toy_quadratic")
    result = toy.solve(follower_name, steps=600, seed=0)
    assert result["leader_error"] < 0.05  # ‖θ − θ*‖ (data spread ±1 around θ*)
    assert result["follower_error"] < 0.05  # mean |z − z*| / ε
    assert result["objective_gap"] < 0.02  # q(z*) − q(z)


def _phi(follower: LearnedFollower) -> list[torch.Tensor]:
    return [p.detach().clone() for p in follower.net.parameters()]


@pytest.mark.parametrize("update", ["alternating", "follower-first"])
def test_phi_ascends_q_after_theta_steps_when_alternating_and_before_when_follower_first(
    update: str,
) -> None:
    """Both orders answer with z_φ from one unroll at θ and step θ down L(θ, z_φ) (φ's old z).
    φ's one Adam step then ascends q(θ_new, z_φ) (alternating: at the updated leader) or
    q(θ, z_φ) (follower-first, Algorithm 4: one ``learn`` against the leader before its step)."""
    batch = image_batch(16)
    x, y = batch
    problem, follower, optimizer = _setup(leader_lr=0.5, follower_lr=1e-2)
    JointTrainer(problem, follower, optimizer, update).step(batch)

    pre_problem, pre_follower, _ = _setup(leader_lr=0.5, follower_lr=1e-2)  # the same θ and φ
    pre_follower.learn(pre_problem, batch)  # φ up q at the θ before its step
    ref_problem, post_follower, ref_optimizer = _setup(leader_lr=0.5, follower_lr=1e-2)
    z = post_follower(ref_problem, batch)  # z_φ at θ, with its graph to φ
    ref_optimizer.zero_grad()
    torch.nn.functional.cross_entropy(ref_problem.leader(x + z.detach()), y).backward()
    ref_optimizer.step()  # θ_new = θ − α ∇θ L(θ, z_φ)
    post_follower.ascend(ref_problem.follower_objective(batch, z))  # φ up q(θ_new, z_φ)

    for p, expected in zip(
        problem.leader.parameters(), ref_problem.leader.parameters(), strict=True
    ):
        torch.testing.assert_close(p, expected)  # θ's step is the same in both orders
    pre, post = _phi(pre_follower), _phi(post_follower)
    assert any(not torch.allclose(a, b) for a, b in zip(pre, post, strict=True))  # they differ
    expected = post if update == "alternating" else pre
    for p, e in zip(_phi(follower), expected, strict=True):
        torch.testing.assert_close(p, e)


class ModeRecordingLeader(nn.Module):
    """A linear classifier of 8×8 images that logs (whose pass, train mode?) at every forward;
    the pass is the leader's when the problem is computing L, the follower's otherwise."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        self.log: list[tuple[str, bool]] = []
        self.phase = "follower"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.log.append((self.phase, self.training))
        return self.body(x)


class LeaderLossMarkingDRO(AdversarialDRO):
    """DRO whose leader knows when it runs for L (the leader's step, or the fused shared pass)."""

    def leader_loss(self, batch, z: torch.Tensor) -> torch.Tensor:
        self.leader.phase = "leader"
        try:
            return super().leader_loss(batch, z)
        finally:
            self.leader.phase = "follower"


class ModeRecordingAttacker(TinyConvAttacker):
    """g_φ that logs whether it is in train mode at every forward."""

    def __init__(self) -> None:
        super().__init__(2, 1, EPS)
        self.log: list[bool] = []

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        self.log.append(self.training)
        return super().forward(a)


@pytest.mark.parametrize(
    ("follower_name", "update"),
    [("pgm", "alternating"), ("learned", "alternating"), ("learned", "follower-first"),
     ("learned", "fused")],
)  # fmt: skip
def test_the_follower_sees_the_leader_in_eval_mode_and_the_leader_steps_in_train_mode(
    follower_name: str, update: str
) -> None:
    """With batch norm or dropout the mode changes L and q: every pass of the follower (PGM's
    steps, g_φ's unroll, the extra φ steps) runs the leader in eval mode, and the leader's own
    pass for L (its step; fused: the shared pass) in train mode. g_φ itself trains in train mode."""
    leader = ModeRecordingLeader()
    problem = LeaderLossMarkingDRO(leader, EPS)
    if follower_name == "pgm":
        follower, phi_steps = SignGradientAscent(2, EPS / 2, random_start=True), 1
    else:  # a 2-step unroll, and a second φ step a batch (a fresh solve)
        follower, phi_steps = LearnedFollower(ModeRecordingAttacker(), steps=2, lr=1e-3), 2
    optimizer = torch.optim.SGD(leader.parameters(), lr=0.1)
    trainer = JointTrainer(problem, follower, optimizer, update, follower_steps=phi_steps)
    for _ in range(2):  # the second step starts from the modes the first one left
        trainer.step(image_batch(4, size=8))
    assert set(leader.log) == {("follower", False), ("leader", True)}
    assert leader.log.count(("leader", True)) == 2  # one pass for L a step
    if follower_name == "learned":
        assert follower.net.log and all(follower.net.log)
