"""How many operators one training step dispatches, per method: a test of the reading that on a
GPU the small CNN's step costs what it launches (docs/results.md, "On a GPU").

If every dispatched operator cost the same fixed overhead, a method's time would follow its count.
The count does not depend on the device, except for the optimizers: on CUDA, torch's Adam and SGD
take their multi-tensor (``foreach``) path, a few operators for all parameters at once, and on the
CPU one set per parameter; the count takes CUDA's path by default (``--no-foreach``: the CPU's).
View operators (``view``, ``t``, ``detach``, ...) launch no kernel, nor do allocations
(``empty``, ``empty_like``, ``empty_strided``, ...) and ``lift_fresh`` (``torch.tensor``'s
wrapping of a new tensor), nor does reading Adam's step counter (``_local_scalar_dense``: on CUDA
that counter stays on the CPU), nor do the profiler's range markers that the optimizers' ``step``
and ``zero_grad`` open (``_record_function_enter_new``, ``_record_function_exit``); they are counted
apart. (Until 2026-12-05 the allocations and ``lift_fresh`` were counted as launching: the
default's 274 against PGM-10's 395, 0.69x; 260 against 394, 0.66x, without them. Until a later
correction that day the markers were counted too, 8 in the default's step and 4 in PGM-10's:
without them 256 against 390, 0.66x, the default's step having gained 4 launching operators in
between.)

    python benchmarks/dispatch_count.py --channels-last --json benchmarks/results/dispatch-count-small-cnn.json
    python benchmarks/dispatch_count.py --channels-last --model preact-resnet18 --batch-size 8 --json benchmarks/results/dispatch-count-preact18.json
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.one_step import add_step_arguments, step_config  # noqa: E402
from bilevel.errors import UserError  # noqa: E402
from bilevel.paths import check_output_file  # noqa: E402
from bilevel.run import atomic_write_text  # noqa: E402
from problems.adversarial.speed import SpeedConfig, make_trainer  # noqa: E402

VIEWS = frozenset(
    "view _unsafe_view _reshape_alias reshape t transpose permute expand alias as_strided detach "
    "unsqueeze squeeze slice select split unbind".split()
)
# memory taken from the caching allocator, or a tensor wrapped as it is: no kernel either
ALLOCATIONS = frozenset(
    "empty empty_like empty_strided new_empty new_empty_strided lift_fresh".split()
)
# the profiler's range markers (``record_function``, which the optimizers' ``step`` and
# ``zero_grad`` open): host bookkeeping, no kernel
PROFILER_MARKERS = frozenset({"_record_function_enter_new", "_record_function_exit"})
NO_KERNEL = VIEWS | ALLOCATIONS | PROFILER_MARKERS | {"_local_scalar_dense"}


class CountOperators(TorchDispatchMode):
    """Counts every ATen operator dispatched below autograd while active, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def count_step(method: str, cfg: SpeedConfig, foreach: bool) -> collections.Counter[str]:
    """The operators of one training step of ``method``, after one warm-up step."""
    trainer, batch = make_trainer(method, cfg, torch.device("cpu"))
    optimizers = [trainer.leader_optimizer, getattr(trainer.follower, "optimizer", None)]
    for optimizer in filter(None, optimizers):
        for group in optimizer.param_groups:
            group["foreach"] = foreach
    trainer.step(batch)  # optimizer state and lazy buffers exist from here on
    with CountOperators() as counter:
        trainer.step(batch)
    return counter.counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_step_arguments(parser)
    parser.add_argument("--no-foreach", dest="foreach", action="store_false")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = step_config(args, args.channels_last)
    rows = []
    try:
        if args.json:
            check_output_file(args.json, "--json")
        counted = [
            (method, count_step(method, cfg, args.foreach)) for method in args.methods.split(",")
        ]
    except UserError as error:
        print(error, file=sys.stderr)
        return 2
    for method, counts in counted:
        kernels = sum(n for name, n in counts.items() if name not in NO_KERNEL)
        rows.append({"method": method, "operators": sum(counts.values()), "launching": kernels,
                     "top": counts.most_common(8)})  # fmt: skip
    base = next((r for r in rows if r["method"] == "pgm-10"), None)
    for row in rows:
        ratio = f"{row['launching'] / base['launching']:.2f}x PGM-10" if base else ""
        print(
            f"{row['method']:>14}: {row['operators']} operators, {row['launching']} launching {ratio}"
        )
    if args.json:
        payload = {"config": vars(args) | {"json": str(args.json)}, "rows": rows}
        atomic_write_text(args.json, json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
