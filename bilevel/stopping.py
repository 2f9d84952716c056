"""SIGINT (Ctrl-C) and SIGTERM (what a cluster scheduler sends before it kills a job).

Two layers:

- ``signals_raise()`` (every CLI command): a signal raises ``Interrupted`` where the program
  stands, so the CLI can print one line and exit with 128 + the signal's number (130, 143)
  instead of a traceback or a silent death. Every file is written atomically (``bilevel.run``),
  so what was written before is whole.
- ``StopRequests`` (the training loop): a signal only records a request; the loop finishes the
  current batch, writes ``last.pt`` and stops (``bilevel.fit``). A second signal in a single
  process raises ``Interrupted`` at once, for a user who will not wait for the batch. Under
  torchrun the second one is ignored: the agent forwards its own signal once and kills workers
  that do not exit within its ``--shutdown-timeout``.

Handlers are only installed from the main thread (Python's rule); elsewhere both are no-ops.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)
INTERRUPTED_KEEPS = (
    "every file written before it is whole (each write is atomic), and a run folder that holds "
    "a last.pt continues with --resume."
)


class Interrupted(BaseException):
    """A signal that stops the process where it stands (a ``BaseException``, as
    ``KeyboardInterrupt`` is: ``except Exception`` clauses do not swallow it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def _handlers(handler: Any) -> Iterator[None]:
    """Install ``handler`` for SIGINT and SIGTERM inside the block; restore the old ones after."""
    if not _main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextmanager
def signals_raise() -> Iterator[None]:
    """Inside the block, SIGINT and SIGTERM raise ``Interrupted``."""
    with _handlers(_raise):
        yield


class StopRequests:
    """``with StopRequests(force_on_second) as stop:`` records SIGINT and SIGTERM in
    ``stop.signum`` (the first one's number; None while none came) for the loop to act on
    between batches. With ``force_on_second``, a second signal raises ``Interrupted``."""

    def __init__(self, force_on_second: bool = True) -> None:
        self.signum: int | None = None
        self.force_on_second = force_on_second
        self._block: Any = None

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
        elif self.force_on_second:
            raise Interrupted(signum)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def __enter__(self) -> StopRequests:
        self._block = _handlers(self._record)
        self._block.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._block.__exit__(*exc)
