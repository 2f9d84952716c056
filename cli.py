"""bilevel-l2l command line: ``solve`` a bilevel problem, ``bench`` methods side by side.

Thin by design: this file is the map of the commands. Each one lives beside its problem
(``problems.adversarial.commands`` and ``.bench_commands``, ``problems.imitation.commands``),
parses its options, calls one function of that package, and prints. Errors a user can cause
print one sentence and exit with code 2 (``bilevel.commands.user_errors``).
"""

from __future__ import annotations

import typer

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

solve_app.command("adversarial-dro")(adversarial.solve_adversarial_dro)
solve_app.command("adversarial-ait")(adversarial.solve_adversarial_ait)
solve_app.command("gail")(imitation.solve_gail_command)
app.command("evaluate")(adversarial.evaluate_run)
app.command("gail-stability")(imitation.gail_stability)
expert_app.command("train")(imitation.expert_train)
bench_app.command("dro")(adversarial_bench.bench_dro)
bench_app.command("l2l")(adversarial_bench.bench_l2l)
bench_app.command("speed")(adversarial_bench.bench_speed)
bench_app.command("ait")(adversarial_bench.bench_ait)

if __name__ == "__main__":
    app()
