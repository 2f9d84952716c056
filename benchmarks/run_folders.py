"""The command line of the scripts here that read finished run folders (``carried_gap.py``,
``robust_generalisation.py``): ``--help`` from the script's docstring, and a folder that is not a
run as one line ``error: ...`` with exit code 2, as the project's commands do."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from bilevel.errors import UserError


def over_run_folders(main: Callable[[list[str]], None], doc: str) -> None:
    """Parse ``RUN [RUN ...]`` and call ``main`` with them."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders written by solve adversarial-dro")
    try:
        main(parser.parse_args().runs)
    except (UserError, OSError, KeyError, StopIteration) as err:  # a folder that is not a run
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
