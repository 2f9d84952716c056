"""Run ``cli.py`` in a fresh process with one fault injected (for the fault tests).

    python tests/fault_runner.py FAULT N [cli arguments...]

FAULT is one of:
- ``SIGINT`` / ``SIGTERM``: the process sends itself that signal just before its N-th training
  step (counted over the whole process), so the signal arrives in the middle of a batch;
- ``exit``: the process ends at once with ``os._exit(1)`` just before its N-th training step, as
  a crash would: no handler runs, nothing is saved (``torchrun --max-restarts`` sees exit code 1);
- ``kill-in-checkpoint``: the N-th write of ``last.pt`` stops halfway through its bytes and the
  process is killed with SIGKILL, as a power cut or ``kill -9`` would;
- ``kill-before-best``: the process is killed with SIGKILL as it starts its N-th write of
  ``best.pt``.

``FAULT_RANK`` (environment) limits the fault to one torchrun rank; under ``torchrun
--max-restarts`` only the first attempt is faulty. The faults are patched in here, so the
training code knows nothing of them.
"""

from __future__ import annotations

import io
import os
import signal
import sys
from collections.abc import Callable

import torch

from bilevel.loop import JointTrainer


def faulty_step(step, n: int, fault: Callable[[], None]):
    """``JointTrainer.step`` that first calls ``fault()`` at its ``n``-th call."""
    count = [0]

    def step_after_fault(self, batch):
        count[0] += 1
        if count[0] == n:
            fault()
        return step(self, batch)

    return step_after_fault


def signalling_step(step, n: int, signals: list[signal.Signals]):
    """``JointTrainer.step`` that first sends this process ``signals`` at its ``n``-th call."""

    def send() -> None:
        for sig in signals:
            os.kill(os.getpid(), sig)

    return faulty_step(step, n, send)


def _fault_at_save(marker: str, n: int, fault: Callable[[object, object], None]) -> None:
    """``torch.save`` that calls ``fault(obj, f)`` at its ``n``-th write of a file whose
    temporary name holds ``marker``, then writes as usual (unless the fault killed the process)."""
    save, count = torch.save, [0]

    def faulty_save(obj, f, *args, **kwargs):
        if marker in str(getattr(f, "name", "")):
            count[0] += 1
            if count[0] == n:
                fault(obj, f)
        return save(obj, f, *args, **kwargs)

    torch.save = faulty_save


def _half_written_then_killed(obj, f) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    f.write(buffer.getvalue()[: buffer.tell() // 2])
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    fault, n, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    rank = os.environ.get("FAULT_RANK")
    first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    if first_attempt and (rank is None or rank == os.environ.get("RANK", "0")):
        if fault == "kill-in-checkpoint":
            _fault_at_save(".last.pt.", n, _half_written_then_killed)
        elif fault == "kill-before-best":
            _fault_at_save(".best.pt.", n, lambda obj, f: os.kill(os.getpid(), signal.SIGKILL))
        elif fault == "exit":
            JointTrainer.step = faulty_step(JointTrainer.step, n, lambda: os._exit(1))
        else:
            JointTrainer.step = signalling_step(JointTrainer.step, n, [signal.Signals[fault]])
    from cli import app

    app(args=args, prog_name="cli.py")


if __name__ == "__main__":
    main()
