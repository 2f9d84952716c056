"""Where one training step's time goes on a GPU, per method: the kernels' own time against the
step's wall-clock time, the kernels launched, and the calls that make the host wait for the GPU
(docs/results.md, "On a GPU").

It tests the operator count's reading (``dispatch_count.py``): if kernels keep the GPU busy for
most of a step, the step is bound by arithmetic and fewer operators buy little; if they fill a
small share of it, the GPU waits on the host, for launches or for a synchronisation. Same step and
settings as ``bench speed`` (``make_trainer``). Without CUDA it runs on the CPU and reports wall
time and CPU-side counts only, so the script can be checked anywhere.

    python benchmarks/gpu_profile.py --model small-cnn --batch-size 64 --no-channels-last \
        --json benchmarks/results/gpu/profile-small-cnn-b64.json
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.one_step import add_step_arguments, step_config  # noqa: E402
from bilevel.errors import UserError  # noqa: E402
from bilevel.paths import check_output_file  # noqa: E402
from bilevel.run import atomic_write_text  # noqa: E402
from problems.adversarial.speed import SpeedConfig, make_trainer, synchronize  # noqa: E402

# the host-side CUDA runtime calls that wait for the device (or for queued work) to finish
# every runtime and driver kernel launch: the Ex / ExC forms (cudaLaunchKernelExC, cuLaunchKernelEx)
# launch kernels too, and an exact match on the two plain names would miss them
LAUNCH_CALLS = ("cudaLaunchKernel", "cuLaunchKernel")
WAITING_CALLS = (
    "cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaMemcpy", "cudaEventSynchronize"
)  # fmt: skip


def _device_us(event: Any) -> float:
    """An averaged profiler event's own device time in µs (its name changed across versions)."""
    for name in ("self_device_time_total", "self_cuda_time_total"):
        if hasattr(event, name):
            return float(getattr(event, name))
    return 0.0


def _annotation(event: Any) -> bool:
    """Whether an averaged event is a user-annotated range, not a kernel."""
    return bool(getattr(event, "is_user_annotation", False)) or event.key.startswith("Optimizer.")


@contextlib.contextmanager
def host_waits() -> Iterator[collections.Counter[str]]:
    """Records the warnings raised inside; on leaving, counts CUDA's sync-debug ones by where
    (file:line) the host waited, into the Counter it gave."""
    found: collections.Counter[str] = collections.Counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield found
    for warning in caught:
        if "synchroniz" in str(warning.message).lower():
            found[f"{Path(warning.filename).name}:{warning.lineno}"] += 1


def synchronising_lines(trainer: Any, batch: Any, steps: int) -> dict[str, int]:
    """CUDA's sync debug mode over ``steps`` steps: where (file:line) the host waited, how often."""
    with host_waits() as found:
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                trainer.step(batch)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return dict(found.most_common())


def loop_synchronising_lines(solve_args: list[str]) -> dict[str, int]:
    """The same audit over a whole ``solve adversarial-dro`` run's training batches (the carry, the
    ε warm-up, the batches and the progress bar included; each epoch's validation left out)."""
    import cli  # the repository root is on sys.path
    from bilevel import fit

    run, end_epoch = fit._Loop.run, fit._Loop._end_epoch

    def audited(mode: str, method):  # noqa: ANN001, ANN202
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            torch.cuda.set_sync_debug_mode(mode)
            try:
                return method(*args, **kwargs)
            finally:
                torch.cuda.set_sync_debug_mode("warn" if mode == "default" else "default")

        return wrapper

    fit._Loop.run, fit._Loop._end_epoch = audited("warn", run), audited("default", end_epoch)
    try:
        with host_waits() as found:
            cli.app(["solve", "adversarial-dro", *solve_args], standalone_mode=False)
    finally:
        fit._Loop.run, fit._Loop._end_epoch = run, end_epoch
    return dict(found.most_common())


def profile_method(method: str, cfg: SpeedConfig, device: torch.device, steps: int) -> dict:
    """Wall seconds a step (unprofiled, synchronised once per ``steps``), then a profiled window."""
    trainer, batch = make_trainer(method, cfg, device)
    for _ in range(3):  # optimizer state, cuDNN's choice of algorithms, lazy buffers
        trainer.step(batch)
    synchronize(device)
    tic = time.perf_counter()
    for _ in range(steps):
        trainer.step(batch)
    synchronize(device)
    wall = (time.perf_counter() - tic) / steps
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            trainer.step(batch)
        synchronize(device)
    events = prof.key_averages()
    # on the device timeline, record_function ranges (the optimizers' steps) span their kernels
    kernels = [
        e for e in events if cuda and str(e.device_type).endswith("CUDA") and not _annotation(e)
    ]
    waits = {e.key: e.count / steps for e in events if e.key.startswith(WAITING_CALLS)}
    launches = sum(e.count for e in events if e.key.startswith(LAUNCH_CALLS))
    kernel_s = sum(_device_us(e) for e in kernels) / steps / 1e6
    row = {
        "method": method,
        "wall_s": round(wall, 6),
        "kernel_s": round(kernel_s, 6) if cuda else None,
        "gpu_busy": round(kernel_s / wall, 3) if cuda else None,
        "launches": launches / steps if cuda else None,
        "waiting_calls": waits,
        "top_kernels": [
            (e.key[:60], round(_device_us(e) / steps, 1))
            for e in sorted(kernels, key=_device_us, reverse=True)[:6]
        ],  # fmt: skip
    }
    if cuda:
        row["synchronising_lines"] = synchronising_lines(trainer, batch, steps)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_step_arguments(parser)
    parser.add_argument("--levers", default="{}", help="JSON over the mnist5k default's levers")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--solve", help="instead: audit a solve adversarial-dro run with these options"
    )
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)
    if args.solve is not None:
        if device.type != "cuda":
            print("--solve audits CUDA's synchronisations and needs a GPU.", file=sys.stderr)
            return 2
        waits = loop_synchronising_lines(args.solve.split())
        print(f"host waited, over the training batches, at {waits}")
        return 0
    try:
        given = json.loads(args.levers)
        if not isinstance(given, dict):
            raise UserError(f"--levers must be a JSON object of options; got {args.levers!r}.")
        if args.json:
            check_output_file(args.json, "--json")
        cfg = step_config(args, args.channels_last, given)
        rows = [profile_method(m, cfg, device, args.steps) for m in args.methods.split(",")]
    except (UserError, json.JSONDecodeError) as error:
        print(f"{error}" if isinstance(error, UserError) else f"--levers is not JSON: {error}.",
              file=sys.stderr)  # fmt: skip
        return 2
    base = next((r for r in rows if r["method"] == "pgm-10"), None)
    for row in rows:
        ratio = f" ({row['wall_s'] / base['wall_s']:.2f}x PGM-10)" if base else ""
        busy = ""
        if row["kernel_s"] is not None:
            busy = (
                f", kernels {row['kernel_s'] * 1e3:.2f} ms ({row['gpu_busy']:.0%} busy), "
                f"{row['launches']:.0f} launches"
            )
        step = f"{row['wall_s'] * 1e3:.2f} ms a step{ratio}{busy}"
        print(f"{row['method']:>14}: {step}; waits {row['waiting_calls']}")
        if row.get("synchronising_lines"):
            print(f"{'':>16}host waited at {row['synchronising_lines']}")
    if args.json:
        config = vars(args) | {"json": str(args.json), "device": str(device)}
        payload = {"config": config, "rows": rows}
        atomic_write_text(args.json, json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
