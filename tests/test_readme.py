"""The README's "Define your own problem" snippet runs as written and finds the closed-form
answers of its toy: θ* = the data's centre and z* = ε·sign(x − θ)."""

from __future__ import annotations

import re

import torch
from helpers import ROOT


def readme_snippet(section: str) -> str:
    """The first ```python block under the README heading ``section``."""
    text = (ROOT / "README.md").read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", body, re.S)
    assert match, f"no python block under '## {section}'"
    return match.group(1)


def test_define_your_own_problem_snippet_runs_and_solves_the_toy(capsys) -> None:
    namespace: dict = {"__name__": "readme"}
    exec(compile(readme_snippet("Define your own problem"), "README.md", "exec"), namespace)
    assert "θ* =" in capsys.readouterr().out
    problem, follower, centre = namespace["problem"], namespace["follower"], namespace["centre"]
    assert (problem.leader.theta.detach() - centre).norm() < 0.08  # the leader's θ* = centre
    x = centre + 2 * torch.rand(2000, 2) - 1
    z = follower.solve(problem, x)
    z_star = problem.eps * torch.sign(x - problem.leader.theta.detach())
    assert (z - z_star).abs().mean() / problem.eps < 0.1  # the follower's z* = ε·sign(x − θ)
