"""The command line of the scripts here that read finished run folders (``carried_gap.py``,
``robust_generalisation.py``, and the probes ``square_share.py`` and ``apgd_share.py``): ``--help``
from the script's docstring, and a folder that is not a run as one line ``error: ...`` with exit
code 2, as the project's commands do."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from bilevel.errors import UserError
from bilevel.files import atomic_write_text


@contextmanager
def not_a_run_exits_2() -> Iterator[None]:
    """Inside: an error of a folder that is not a run is one line ``error: ...``, exit code 2."""
    try:
        yield
    except (UserError, OSError, KeyError, StopIteration) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def over_run_folders(main: Callable[[list[str]], None], doc: str) -> None:
    """Parse ``RUN [RUN ...]`` and call ``main`` with them."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders written by solve adversarial-dro")
    with not_a_run_exits_2():
        main(parser.parse_args().runs)


def probe_run_folders(
    probe: Callable[[Path], dict[str, Any]], line: Callable[[dict[str, Any]], str], doc: str
) -> list[dict[str, Any]]:
    """Parse ``RUN [RUN ...] [--json FILE]``; on one thread, ``probe`` each run in turn, print
    ``line`` of its row and, with ``--json``, write the rows so far after every run (a stopped
    probe keeps what it measured). Returns the rows."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders written by solve")
    parser.add_argument("--json", type=Path, help="Also write the rows here.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows: list[dict[str, Any]] = []
    with not_a_run_exits_2():
        for run_dir in args.runs:
            rows.append(probe(run_dir))
            print(f"{run_dir}: {line(rows[-1])}", flush=True)
            if args.json:
                atomic_write_text(args.json, json.dumps(rows, indent=2) + "\n")
    return rows
