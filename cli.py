"""bilevel-l2l command line: ``solve`` a bilevel problem, ``bench`` methods side by side.

Thin by design: this file is the map of the commands. Each one lives beside its problem
(``problems.adversarial.commands`` and ``.bench_commands``, ``problems.imitation.commands``),
parses its options, calls one function of that package, and prints. Errors a user can cause
print one sentence and exit with code 2 (``bilevel.commands.user_errors``).
"""

from __future__ import annotations

import typer

from bilevel.commands import flowing
from problems.adversarial import bench_commands as adversarial_bench
from problems.adversarial import commands as adversarial
from problems.imitation import commands as imitation

app = typer.Typer(
    help="Learning to learn for bilevel problems: a leader (θ) against a learned follower (g_φ).",
    no_args_is_help=True,
    add_completion=False,
)
solve_app = typer.Typer(help="Train a leader and its follower jointly on one bilevel problem.")
bench_app = typer.Typer(help="Benchmarks: methods side by side in one process.")
expert_app = typer.Typer(help="Experts for imitation: scripted ones, or PPO trained here.")
app.add_typer(solve_app, name="solve", no_args_is_help=True)
app.add_typer(bench_app, name="bench", no_args_is_help=True)
app.add_typer(expert_app, name="expert", no_args_is_help=True)

COMMANDS = [
    (solve_app, "adversarial-dro", adversarial.solve_adversarial_dro),
    (solve_app, "adversarial-ait", adversarial.solve_adversarial_ait),
    (solve_app, "gail", imitation.solve_gail_command),
    (app, "evaluate", adversarial.evaluate_run),
    (app, "gail-stability", imitation.gail_stability),
    (expert_app, "train", imitation.expert_train),
    (bench_app, "dro", adversarial_bench.bench_dro),
    (bench_app, "l2l", adversarial_bench.bench_l2l),
    (bench_app, "speed", adversarial_bench.bench_speed),
    (bench_app, "ait", adversarial_bench.bench_ait),
]
for group, name, command in COMMANDS:  # the docstring is the help, each paragraph flowing
    group.command(name, help=flowing(command.__doc__))(command)

if __name__ == "__main__":
    app()
