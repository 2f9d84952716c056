"""docs/architecture.md lists every module of the three packages, once, under its folder, and
nothing that is not one: a newcomer's map that stays true as modules come and go."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bilevel", "learned_optimizers", "problems")


def modules() -> set[str]:
    """Every module file of the packages, as a path from the project's root."""
    found = {str(p.relative_to(ROOT)) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    return {path for path in found if not path.endswith("__init__.py")}


def listed(text: str) -> list[str]:
    """The modules the map names: each line `- `a.py`[, `b.py`]: ...` under a paragraph that
    opens with its folder, `folder/`."""
    names: list[str] = []
    folder = None
    for line in text.split("## Every module, in reading order", 1)[1].splitlines():
        if heading := re.match(r"`([\w/]+/)`", line):
            folder = heading.group(1)
        elif (entry := re.match(r"- ((?:`\w+\.py`(?:, )?)+):", line)) and folder:
            names += [folder + name for name in re.findall(r"`(\w+\.py)`", entry.group(1))]
    return names


def test_the_module_map_names_every_module_once_and_nothing_else() -> None:
    names = listed((ROOT / "docs" / "architecture.md").read_text())
    assert len(names) == len(set(names)), "a module listed twice"
    assert set(names) - modules() == set(), "listed, but no such module"
    assert modules() - set(names) == set(), "a module missing from the map"


def test_a_missing_or_unknown_module_would_be_caught() -> None:
    text = "## Every module, in reading order\n`bilevel/`, x:\n- `loop.py`, `nosuch.py`: y.\n"
    assert listed(text) == ["bilevel/loop.py", "bilevel/nosuch.py"]
    assert "bilevel/fit.py" in modules() - set(listed(text))
