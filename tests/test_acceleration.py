"""The speed levers (channels_last, bf16 autocast, torch.compile) change how a step runs, not what
it computes; and a DDP-style wrapper around g_φ leaves φ's state dict alone."""

from __future__ import annotations

import copy as copy_module
import io
import subprocess
import sys

import pytest
import torch
from helpers import ROOT, TinyConvAttacker, image_batch
from torch import nn

from bilevel import JointTrainer, LearnedFollower
from bilevel.acceleration import Acceleration, resolve_device
from bilevel.errors import UserError
from learned_optimizers import build_attacker
from problems.adversarial.dro import AdversarialDRO
from problems.adversarial.dro_config import DROConfig
from problems.adversarial.models import SmallCNN

EPS = 0.3


def _trainer(speedup: Acceleration, update: str = "fused") -> tuple[JointTrainer, tuple]:
    torch.manual_seed(0)
    model = speedup.prepare(SmallCNN(), torch.device("cpu"))
    follower = LearnedFollower(TinyConvAttacker(2, 1, EPS), steps=2)
    speedup.prepare(follower.net, torch.device("cpu"))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    trainer = JointTrainer(AdversarialDRO(model, EPS), follower, optimizer, update, 1, speedup)
    torch.manual_seed(1)
    x, y = image_batch(16)
    return trainer, (speedup.batch(x), y)


def _parameters(trainer: JointTrainer) -> list[torch.Tensor]:
    nets = (trainer.problem.leader, trainer.follower.net)
    return [p.detach().clone() for net in nets for p in net.parameters()]


def _step_and_compare(
    speedup: Acceleration, update: str, rtol: float, atol: float
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Compare the parameters after one step with and without ``speedup``; returns each net's
    update (after − before, all its parameters in one vector) as (plain, ``speedup``)."""
    base, batch = _trainer(Acceleration(), update)
    before = _parameters(base)
    base.step(batch)
    fast, fast_batch = _trainer(speedup, update)
    fast.step(fast_batch)
    moved = 0
    for b, p_base, p_fast in zip(before, _parameters(base), _parameters(fast), strict=True):
        torch.testing.assert_close(p_fast, p_base, rtol=rtol, atol=atol)
        moved += int(not torch.equal(b, p_base))
    assert moved > len(before) // 2  # the step really changed θ and φ
    leader = len(list(base.problem.leader.parameters()))  # θ's tensors come first, then φ's

    def update_of(after: list[torch.Tensor], part: slice) -> torch.Tensor:
        return torch.cat(
            [(a - b).flatten() for a, b in zip(after[part], before[part], strict=True)]
        )

    nets = {"theta": slice(None, leader), "phi": slice(leader, None)}
    return {
        net: (update_of(_parameters(base), part), update_of(_parameters(fast), part))
        for net, part in nets.items()
    }


@pytest.mark.parametrize("update", ["fused", "alternating"])
def test_channels_last_takes_the_same_step(update: str) -> None:
    _step_and_compare(Acceleration(channels_last=True), update, rtol=1e-4, atol=1e-6)


def test_channels_last_reaches_the_leader_and_the_attacker() -> None:
    trainer, batch = _trainer(Acceleration(channels_last=True))
    seen = []
    for net in (trainer.problem.leader.body[0], trainer.follower.net.body[0]):
        net.register_forward_hook(lambda m, i, o: seen.append(o.is_contiguous(memory_format=torch.channels_last)))  # fmt: skip
    trainer.step(batch)
    assert seen and all(seen)


def test_amp_runs_the_networks_in_bf16_and_keeps_float32_parameters() -> None:
    dtypes = {}
    for amp in (False, True):
        trainer, batch = _trainer(Acceleration(amp=amp))
        seen: list[torch.dtype] = []
        trainer.problem.leader.register_forward_hook(
            lambda m, i, o, seen=seen: seen.append(o.dtype)
        )
        before = _parameters(trainer)
        out = trainer.step(batch)
        dtypes[amp] = set(seen)
        after = _parameters(trainer)
        assert all(p.dtype == torch.float32 and p.isfinite().all() for p in after)
        assert torch.isfinite(out["leader_loss"])
        assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert dtypes == {False: {torch.float32}, True: {torch.bfloat16}}


def test_amp_step_stays_close_to_the_float32_step() -> None:
    # bf16 keeps 8 bits of mantissa: one SGD step of size 0.05 agrees to ~1e-2 of the weights
    updates = _step_and_compare(Acceleration(amp=True), "fused", rtol=5e-2, atol=5e-3)
    # that tolerance is wider than one step (SGD 0.05 on θ, Adam 1e-3 on φ, ~1e-4..1e-3 per
    # weight): a dropped or sign-flipped φ update under autocast passes it, and a θ one fails it
    # on one or two bias entries only. So the updates themselves must point the same way
    # (measured: cosine 0.9993 for θ, 0.974 for φ, whose first Adam step is ~lr·sign(∇), so bf16
    # flips the sign of a few small gradients) and be as long
    minimum = {"theta": 0.99, "phi": 0.9}
    for net, (plain, amp) in updates.items():
        assert torch.cosine_similarity(amp, plain, dim=0) > minimum[net], net
        assert amp.norm() == pytest.approx(float(plain.norm()), rel=0.05), net


def test_compile_takes_the_same_step() -> None:
    _step_and_compare(Acceleration(compile=True), "alternating", rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_a_compiled_attacker_takes_a_new_eps_without_recompiling(norm: str) -> None:
    # the ε warm-up changes ε every step: the bound must stay outside the compiled graph
    import torch._dynamo
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()  # no cache or recompile count left by earlier tests
    torch.manual_seed(0)
    net = build_attacker("slim", 2, 1, eps=0.1, width=0.0625, norm=norm).eval()
    compiles = CompileCounter()
    net.compile(backend=compiles)
    a = torch.randn(4, 2, 28, 28)
    net(a)
    after_first = compiles.frame_count
    for eps in (0.2, 0.05, 0.3):
        net.eps = eps
        out = net(a)
        size = out.abs().amax() if norm == "linf" else out.flatten(1).norm(dim=1).max()
        assert eps / 2 < size < eps  # the new ε is the one applied
    assert compiles.frame_count == after_first > 0


def test_a_copy_of_a_compiled_attacker_bounds_with_its_own_eps() -> None:
    torch.manual_seed(0)
    net = build_attacker("slim", 2, 1, eps=0.3, width=0.0625).eval()
    net.compile(backend="eager")
    a = torch.randn(4, 2, 28, 28)
    for copy in (copy_module.deepcopy(net), _saved_and_loaded(net)):
        copy.eps = 0.5
        assert 0.3 < copy(a).abs().amax() < 0.5  # the copy's ε, not the original's 0.3
    assert net(a).abs().amax() < 0.3


def _saved_and_loaded(net: nn.Module) -> nn.Module:
    buffer = io.BytesIO()
    torch.save(net, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def test_the_command_line_starts_without_the_compiler_stack_or_matplotlib() -> None:
    # torch._dynamo (about 1.5 s) and matplotlib (0.3 s) would add to every command's start;
    # only --compile needs the one, and only the code that draws a figure the other
    code = "import sys, cli; print(sorted({'torch._dynamo', 'matplotlib'} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_distribute_routes_the_forward_and_keeps_the_state_dict() -> None:
    class CountingWrapper(nn.Module):  # stands in for DistributedDataParallel
        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self.module, self.calls = module, 0

        def forward(self, a: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return self.module(a)

    trainer, batch = _trainer(Acceleration())
    follower = trainer.follower
    keys = list(follower.state_dict())
    wrappers = []
    follower.distribute(lambda net: wrappers.append(CountingWrapper(net)) or wrappers[-1])
    trainer.step(batch)
    assert wrappers[0].calls == follower.steps  # every unrolled step went through the wrapper
    assert list(follower.state_dict()) == keys  # checkpoints are the same with and without it
    assert all(k.startswith("net.") for k in keys)


def test_channels_last_defaults_follow_the_data_set() -> None:
    assert DROConfig(dataset="cifar10").resolve().channels_last is True
    assert DROConfig(dataset="mnist5k").resolve().channels_last is False
    assert DROConfig(dataset="mnist5k", channels_last=True).resolve().channels_last is True


_PAGE_FAULTS = """
import resource, sys, torch
from bilevel.acceleration import keep_freed_memory
def faults_of_a_second_allocation():
    x = torch.ones(16 * 2**20); del x  # 64 MiB, allocated and freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(16 * 2**20)  # the same size again
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
plain = faults_of_a_second_allocation()
kept = keep_freed_memory()
# torch allocates with posix_memalign, which asks glibc for the block plus its alignment slack: a
# freed block that could not merge back into the top of the heap can be a little too small for the
# next request, and the heap grows again. After at most three rounds (40 of 40 runs) the heap
# holds blocks that fit, and every later step reuses them, as a training step does.
warm_up = [faults_of_a_second_allocation() for _ in range(3)]
print(plain, kept, max(faults_of_a_second_allocation() for _ in range(3)))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_keep_freed_memory_stops_page_faults_on_reallocation() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PAGE_FAULTS], capture_output=True, text=True, check=True, cwd=ROOT
    )
    plain, kept, reused = out.stdout.split()
    pages = 64 * 2**20 // 4096
    assert int(plain) > pages // 2  # glibc: a fresh mmap, every page faulted in again
    assert kept == "True"
    assert int(reused) < pages // 10  # served from the kept heap


def test_a_device_that_is_not_here_is_one_sentence() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    for name in ("bogus", "meta"):  # not a device name; a torch device no run uses
        with pytest.raises(UserError, match="Unknown --device"):
            resolve_device(name)
    if not torch.cuda.is_available():
        for name in ("cuda", "cuda:0"):
            with pytest.raises(UserError, match="no CUDA GPU is visible"):
                resolve_device(name)
    else:
        with pytest.raises(UserError, match="only"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
