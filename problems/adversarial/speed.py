"""``bench speed``: the cost of one training step per method (paper Table 3), measured in one process
and interleaved (A B C ... A B C ...) so the machine's drift cancels: each ratio to a reference is
taken within a round, then the median over rounds.

Methods: plain training, FGSM with random start, PGM-10, and Grad / 2-Step L2L with the alternating
and the fused update, on random batches (timing does not depend on pixel values) shaped as the
model's data: CIFAR's 3x32x32, or 1x28x28 digits for ``DIGIT_MODELS``.
Peak memory: ``torch.cuda.max_memory_allocated`` on GPU; on CPU the peak resident set size of a
fresh child process per method, above its size once the model and batch exist (the peak is reset
there, after the imports). The timed process uses ``keep_freed_memory``, as ``solve`` does.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from bilevel.acceleration import Acceleration, keep_freed_memory, resolve_device
from bilevel.errors import UserError, require_counts
from bilevel.learned_follower import LearnedFollower
from bilevel.loop import JointTrainer
from bilevel.options import as_written, check_levers
from bilevel.run import atomic_write_text
from bilevel.workers import value_from_child
from problems.adversarial.checks import check_for_learned
from problems.adversarial.data import DatasetInfo
from problems.adversarial.defaults import DATASET_DEFAULTS, MAX_PGD_STEPS
from problems.adversarial.dro import AdversarialDRO
from problems.adversarial.dro_config import DROConfig
from problems.adversarial.followers import build_follower
from problems.adversarial.models import DIGIT_MODELS, MODEL_NAMES, build_model

# plain training, the hand-designed followers, then each learned follower with each update
METHODS = ("plain", "fgsm-rs", "pgm-10") + tuple(
    f"{follower}-{update}" for follower in ("grad", "2-step") for update in ("alternating", "fused")
)
EPS = 8 / 255
# MNIST's 60,000 training digits, the largest training set here: a larger batch is no training
# step (and a size past int64 or the machine's memory was a traceback from torch.rand)
MAX_BATCH_SIZE = 60_000
# the options of a learned follower that one timed step reads (``build_follower``, and the ascent
# loss): bench speed's levers. It sets the others itself, alike for every method, or its step has
# none of them (epochs, the leader's schedule, the carried δ)
STEP_LEVERS = (
    "attacker_lr", "attacker_betas", "attacker_weight_decay", "unroll", "plain_steps",
    "truncated_unroll", "grad_scaling", "attacker_random_start", "attacker_memory",
    "attacker_sign_step", "attacker_init", "ascent_loss",
)  # fmt: skip
_NOT_STEP_LEVERS = tuple(f.name for f in fields(DROConfig) if f.name not in STEP_LEVERS)
_NOT_STEP_LEVERS_WHY = (
    "bench speed sets them itself (each method's follower and update, --model, --attacker, "
    "--attacker-width, --batch-size, --device ...) or its timed step does not use them; its "
    f"levers are {', '.join(STEP_LEVERS)}"
)


@dataclass
class SpeedConfig:
    """The options of ``bench speed``: the classifier and attacker measured, the batch shape,
    and how many steps and interleaved rounds are timed."""

    model: str = "preact-resnet18"
    attacker: str = "cnn"
    attacker_width: float = 0.25
    batch_size: int = 128
    batches: int = 3  # timed steps per method per round
    rounds: int = 3  # interleaved rounds; the median over rounds is reported
    device: str = "auto"
    amp: bool = False  # bf16 autocast
    channels_last: bool = True  # measured faster for every method (docs/results.md)
    compile: bool = False  # torch.compile of the leader and the attacker
    methods: tuple[str, ...] = METHODS  # any of METHODS, and pgm-K for another K
    levers: dict[str, Any] = field(default_factory=dict)  # DROConfig options of learned ones


def mnist5k_step_levers() -> dict[str, Any]:
    """The mnist5k default's levers that one ``bench speed`` step has (the carry needs a data
    set's indices, so it is left out)."""
    keys = ("attacker_random_start", "attacker_sign_step", "truncated_unroll")
    return {key: DATASET_DEFAULTS["mnist5k"][key] for key in keys}


def step_options(method: str, cfg: SpeedConfig) -> DROConfig:
    """``method``'s resolved ``solve`` options: the follower and update its name says, at
    CIFAR's shape and ε = 8/255, with ``cfg.levers`` over a learned one's (``STEP_LEVERS`` only:
    a lever of another option would be ignored or override what the command sets)."""
    pgm = re.fullmatch(r"pgm-(\d+)", method)
    steps = int(pgm.group(1)) if pgm else None  # PGM-K's K
    if method not in METHODS and not steps:  # pgm-0 included
        raise UserError(f"Unknown method {method!r}; choose from: {', '.join(METHODS)}, pgm-K.")
    if steps and steps > MAX_PGD_STEPS:  # in its own words: bench has no --pgm-steps
        raise UserError(f"pgm-K takes K from 1 to {MAX_PGD_STEPS:,} steps; got {method}.")
    name = {"plain": "none", "fgsm-rs": "fgsm"}.get(method, "pgm" if pgm else method)
    name = name.removesuffix("-fused").removesuffix("-alternating")
    update = "fused" if method.endswith("fused") else "alternating"
    levers = cfg.levers if name not in ("none", "fgsm", "pgm") else {}
    check_levers(DROConfig, levers, "--levers", exclude=_NOT_STEP_LEVERS, why=_NOT_STEP_LEVERS_WHY)
    with as_written("--levers", levers):  # bench speed has no --attacker-sign-step
        return DROConfig(
            **{"dataset": "cifar10", "follower": name, "eps": EPS, "update": update,
               "pgm_steps": steps or 10, "pgm_step_size": 2 / 255,
               "attacker": cfg.attacker, "attacker_width": cfg.attacker_width} | levers
        ).resolve()  # fmt: skip


def check_methods(cfg: SpeedConfig) -> None:
    """Every method's options and every lever, checked before anything is built, whatever
    ``cfg.methods`` names; levers with no learned method to read them are refused."""
    if not cfg.methods:
        raise UserError("--methods names no method; give one or more, like fgsm-rs,pgm-10.")
    check_levers(
        DROConfig, cfg.levers, "--levers", exclude=_NOT_STEP_LEVERS, why=_NOT_STEP_LEVERS_WHY
    )
    learned = [step_options(method, cfg).learned for method in cfg.methods]
    check_for_learned(bool(cfg.levers), any(learned), "--levers shape")


def make_trainer(method: str, cfg: SpeedConfig, device: torch.device) -> tuple[JointTrainer, Any]:
    """A ``JointTrainer`` for ``method`` and one random batch (CIFAR-shaped; digits for the digit
    models).

    The follower is ``solve``'s own for that name (``build_follower``): FGSM-RS steps 1.25 ε,
    PGM-10 steps 2/255, the learned ones take [x, ∇] into the attacker."""
    options = step_options(method, cfg)
    if cfg.model not in MODEL_NAMES:
        raise UserError(f"Unknown --model {cfg.model!r}; choose one of: {', '.join(MODEL_NAMES)}.")
    torch.manual_seed(0)
    speedup = Acceleration(cfg.channels_last, cfg.amp, cfg.compile)
    channels, size = (1, 28) if cfg.model in DIGIT_MODELS else (3, 32)  # digits or CIFAR shape
    info = DatasetInfo("random", 10, channels, size, (0.5,) * channels, (0.25,) * channels)
    model = build_model(cfg.model, info.num_classes, channels, info.mean, info.std)
    model = speedup.prepare(model, device)
    follower = build_follower(options, info)
    if isinstance(follower, LearnedFollower):
        speedup.prepare(follower.net, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    problem = AdversarialDRO(model, EPS, ascent=options.ascent_loss)
    trainer = JointTrainer(problem, follower, optimizer, options.update, 1, speedup)
    x = speedup.batch(torch.rand(cfg.batch_size, channels, size, size, device=device))
    y = torch.randint(0, 10, (cfg.batch_size,), device=device)
    return trainer, (x, y)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a CUDA GPU's; nothing to wait for on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_mib(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last reset) of this process, in MiB."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024  # kB


def _peak_memory_child(method: str, cfg: SpeedConfig, queue: Any) -> None:
    """Child process: peak RSS (MiB) of two steps above the RSS with model and batch built.

    The peak is reset after the build (``clear_refs`` 5, Linux ≥ 4.0), so import-time peaks of
    torch's libraries do not mask the training step's own."""
    device = torch.device("cpu")
    # glibc's default allocator here, not ``keep_freed_memory``: freed large blocks go back to the
    # system at once, so the peak RSS is the peak of live tensors (as max_memory_allocated on GPU)
    # and not of a heap that keeps what it once held
    trainer, batch = make_trainer(method, cfg, device)
    Path("/proc/self/clear_refs").write_text("5")
    base = _rss_mib("VmRSS")
    for _ in range(2):
        trainer.step(batch)
    queue.put(_rss_mib("VmHWM") - base)
    queue.close()
    queue.join_thread()
    os._exit(0)  # skip interpreter teardown, which can hang on torch's worker threads


def peak_memory_mib(method: str, cfg: SpeedConfig, device: torch.device) -> float | None:
    """The peak memory of ``method``'s training step above what its model and batch hold, in MiB
    (module docstring), or None where the CPU's measuring process gave no figure."""
    if device.type == "cuda":
        trainer, batch = make_trainer(method, cfg, device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        trainer.step(batch)
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    value = value_from_child(_peak_memory_child, (method, cfg))
    if value is None:
        print(f"bench speed: the peak-memory process of {method} ended without a figure; none is recorded.")  # fmt: skip
        return None
    return float(value)


def _mib_rounded(mib: float | None) -> float | None:
    return None if mib is None else round(mib, 1)


def paired_ratio(seconds: list[float], reference: list[float] | None) -> float | None:
    """The median over rounds of ``seconds[r] / reference[r]``, to 3 decimals; None without the
    reference (not among the methods) or when one of its rounds took no measurable time."""
    if not reference or not all(reference):
        return None
    return round(statistics.median(s / r for s, r in zip(seconds, reference, strict=True)), 3)


def bench_speed(cfg: SpeedConfig, json_path: Path | None = None) -> list[dict[str, Any]]:
    """Seconds per batch (each method's median over the interleaved rounds), ratios to plain and
    PGM-10 (the median over rounds of the method's time in a round over the reference's in the
    same round: a round's methods ran back to back, so the pairing cancels load that changes
    between rounds, which a ratio of the two medians does not), peak memory; the JSON keeps
    every round's seconds per batch (``round_seconds``)."""
    require_counts(cfg, ("batch_size", "batches", "rounds"))
    if cfg.batch_size > MAX_BATCH_SIZE:
        raise UserError(
            f"--batch-size takes 1 to {MAX_BATCH_SIZE:,} examples (MNIST's training set, the "
            f"largest here); got {cfg.batch_size:,}."
        )
    check_methods(cfg)
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        keep_freed_memory()
    trainers = {m: make_trainer(m, cfg, device) for m in cfg.methods}
    for trainer, batch in trainers.values():  # warm-up: allocator, kernels, Adam state, compile
        for _ in range(2 if cfg.compile else 1):
            trainer.step(batch)
    synchronize(device)
    times: dict[str, list[float]] = {m: [] for m in cfg.methods}
    for _ in range(cfg.rounds):
        for method, (trainer, batch) in trainers.items():
            tic = time.perf_counter()
            for _ in range(cfg.batches):
                trainer.step(batch)
            synchronize(device)
            times[method].append((time.perf_counter() - tic) / cfg.batches)
    del trainers
    rows = [
        {
            "method": method,
            "seconds_per_batch": float(f"{statistics.median(times[method]):.4g}"),  # 4 digits
            "ratio_to_plain": paired_ratio(times[method], times.get("plain")),
            "ratio_to_pgm10": paired_ratio(times[method], times.get("pgm-10")),
            "peak_memory_mib": _mib_rounded(peak_memory_mib(method, cfg, device)),
            "round_seconds": times[method],
        }
        for method in cfg.methods
    ]
    if json_path is not None:
        # the seconds per batch depend on the torch thread count, which is the environment's
        payload = {
            "config": asdict(cfg), "device": str(device),
            "torch_threads": torch.get_num_threads(), "rows": rows,
        }  # fmt: skip
        atomic_write_text(Path(json_path), json.dumps(payload, indent=2) + "\n")
    return rows
