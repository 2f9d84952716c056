"""The ``bench`` commands of ``cli.py`` for the adversarial problems: ``bench dro`` / ``l2l`` /
``speed`` / ``ait``. Each parses its options, calls one function of this package (imported when
the command runs, so that ``--help`` stays fast), and prints its table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from bilevel.commands import (
    Shared,
    console,
    parse_seeds,
    path_option,
    print_table,
    split_names,
    user_errors,
)
from bilevel.errors import UserError, as_flag
from bilevel.paths import check_paths

# bench dro's options that a --grid's entries set instead (typed beside --grid, one sentence)
GRID_SETS = ("methods", "epochs", "update", "train_size", "eval_size")
LEVERS = typer.Option(
    None,
    help="JSON options for the learned followers, e.g. '{\"attacker_sign_step\": 0.6}'; those "
    "the bench sets itself (seed, model, device ...) are refused.",
)


REUSE = typer.Option(
    False,
    help="Evaluate a finished run of the same configuration in --out (e.g. one an earlier bench "
    "or a study trained there) instead of training it again; without it, a finished run there is "
    "refused, never deleted.",
)


@user_errors
def bench_dro(
    context: typer.Context,
    epochs: int = typer.Option(10, help="Epochs for every method."),
    methods: str = typer.Option("none,fgsm,pgm,grad,2-step", help="Followers, comma-separated."),
    update: str = typer.Option(
        None, help="Update mode of the learned followers (default: the data set's)."
    ),
    seeds: str = typer.Option(
        None, help="Seeds, comma-separated; rows give mean and std (default: 0, or the grid's)."
    ),
    grid: Path = path_option(
        None,
        help="A study grid (bench l2l) whose entries replace --methods, --epochs, --update, "
        "--train-size and --eval-size.",
    ),
    aa: str = typer.Option(
        "standard",
        help="standard AutoAttack, or apgd-ce-t (its two gradient components, about 1/5 of the "
        "time).",
    ),
    norm: str = typer.Option(
        None,
        help="The threat model every method trains and is attacked in: linf or l2 (default: "
        "linf; with --grid, the grid's).",
    ),
    eps: float = typer.Option(
        None, help="Radius ε of the --norm ball (default: 0.3 in L∞, 1.5 in L2, as solve's)."
    ),
    reuse: bool = REUSE,
    autoattack: bool = typer.Option(
        True, help="Standard AutoAttack on the test split (minutes per robust model on a CPU)."
    ),
    jobs: int = typer.Option(1, help="Worker processes for the evaluations (after training)."),
    train_size: int = Shared.train_size,
    eval_size: int = Shared.eval_size,
    out: Path = path_option(Path("runs/bench-dro"), help="Folder for the runs."),
    json_path: Path = Shared.json_path,
) -> None:
    """mnist5k, small CNN, ε = 0.3: methods side by side (trained one after another in this
    process); clean, PGD-40 (step 0.01) and standard AutoAttack accuracy on the test split.
    With --norm l2, all of it in the L2 ball (ε = 1.5, PGD-L2 step 2.5 ε / 40)."""
    check_paths(folders={"--out": out}, files={"--json": json_path})
    typed = [n for n in GRID_SETS if context.get_parameter_source(n).name != "DEFAULT"]
    if not autoattack and context.get_parameter_source("aa").name != "DEFAULT":
        raise UserError("--aa chooses the AutoAttack that --no-autoattack turns off; drop one.")
    if grid is not None and typed:  # they would be ignored
        shown = ", ".join(as_flag(n) for n in typed)
        raise UserError(f"{shown} apply without --grid; a grid sets them in its entries.")
    from problems.adversarial.bench import bench_dro as run_bench

    if grid is not None:
        from problems.adversarial.bench import bench_grid
        from problems.adversarial.study import load_grid

        chosen = parse_seeds(seeds) if seeds is not None else None  # None: the grid's
        spec = load_grid(grid)
        rows = bench_grid(spec, out, json_path, autoattack, jobs, chosen, reuse, aa, norm, eps)
        setting = _grid_setting(spec.entries().values())
    else:
        chosen = parse_seeds(seeds) if seeds is not None else [0]
        rows = run_bench(
            split_names(methods, "--methods"), epochs, chosen, update, out, json_path,
            train_size=train_size, eval_size=eval_size, autoattack=autoattack, jobs=jobs,
            norm=norm if norm is not None else "linf", eps=eps, aa_version=aa, reuse=reuse,
        )  # fmt: skip
        first = rows[0]  # an L2 row names its ball
        ball = f"{'L2 ' if first.get('norm') == 'l2' else ''}ε = {first.get('eps', eps or 0.3):g}"
        setting = f"mnist5k, small CNN, {ball}"
    shown = [_mean_std_cells(row) for row in rows]
    print_table(f"bench dro: {setting} (test split, mean ± std)", shown)


def _grid_setting(entries: Any) -> str:
    """The data set, model and ball a grid's entries train in, as the table's title names them
    ("several settings" where they differ): a grid sets them in its options, not bench dro."""
    from problems.adversarial.dro_config import DROConfig

    settings = set()
    for options in entries:
        cfg = DROConfig(**options).resolve()
        ball = f"{'L2 ' if cfg.norm == 'l2' else ''}ε = {cfg.eps:g}"
        settings.add(f"{cfg.dataset}, {cfg.model}, {ball}")
    return settings.pop() if len(settings) == 1 else "several settings (see each run)"


def _mean_std_cells(row: dict[str, Any]) -> dict[str, Any]:
    """A bench row for the terminal: every ``x`` with an ``x_std`` (``x_acc``: ``x_std``) shown as
    one "mean ± std" cell."""
    out = {}
    for key, value in row.items():
        if not key.endswith("_std"):
            std = row.get(key.removesuffix("_acc") + "_std")
            out[key] = value if std is None else f"{value:.3f} ± {std:.3f}"
    return out


@user_errors
def bench_l2l(
    grid: Path = path_option(..., help="A JSON grid of configurations (benchmarks/l2l/*.json)."),
    out: Path = path_option(Path("runs/l2l-study"), help="Folder for the runs (reused)."),
    results: Path = path_option(
        Path("benchmarks/results"), help="Where <grid>.md, <grid>.json and <grid>.png go."
    ),
    jobs: int = typer.Option(
        1, help="Worker processes of one thread each; a run (training, then its attack) is a task."
    ),
) -> None:
    """A study: learned-follower configurations and PGM-k / FGSM-RS references, 3 seeds each,
    judged by APGD-CE + APGD-T on the validation split against training seconds (Pareto plot)."""
    check_paths(folders={"--out": out, "--results": results})
    from problems.adversarial.study import load_grid, run_study

    spec = load_grid(grid)
    rows = run_study(spec, out, results, jobs)
    shown = ("entry", "val_apgd_ce_t_acc", "val_apgd_ce_t_std", "val_clean_acc", "train_seconds",
             "seconds_vs_pgm10")  # fmt: skip
    print_table(f"bench l2l: {spec.name} (validation split)", rows, shown)
    console.print(f"written: {results}/{spec.name}.md, .json, .png")


@user_errors
def bench_speed(
    model: str = typer.Option("preact-resnet18", help="The leader network."),
    attacker: str = typer.Option("cnn", help="cnn (Table 1) or slim (Appendix B)."),
    attacker_width: float = typer.Option(0.25, help="Channel multiplier of the attacker."),
    batch_size: int = typer.Option(128),
    batches: int = typer.Option(3, help="Timed steps per method in each round."),
    rounds: int = typer.Option(
        3,
        help="Interleaved rounds (A B C ... A B C); a method's seconds are its median, its "
        "ratios the median of its per-round ratios (--json keeps every round).",
    ),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    amp: bool = typer.Option(False, help="bf16 autocast."),
    channels_last: bool = typer.Option(True, help="channels_last memory format."),
    compile_: bool = typer.Option(
        False, "--compile/--no-compile", help="torch.compile the networks."
    ),
    methods: str = typer.Option(
        None, help="Comma-separated subset of the methods, and pgm-K for another K."
    ),
    levers: str = LEVERS,
    json_path: Path = Shared.json_path,
) -> None:
    """Seconds per training step: plain, FGSM-RS, PGM-10, Grad and 2-Step L2L (paper Table 3)."""
    check_paths(files={"--json": json_path})
    from problems.adversarial.speed import METHODS, SpeedConfig
    from problems.adversarial.speed import bench_speed as run_bench

    chosen = tuple(split_names(methods, "--methods")) if methods is not None else METHODS
    cfg = SpeedConfig(
        model=model, attacker=attacker, attacker_width=attacker_width, batch_size=batch_size,
        batches=batches, rounds=rounds, device=device, amp=amp, channels_last=channels_last,
        compile=compile_, methods=chosen, levers=_json_object("--levers", levers),
    )  # fmt: skip
    rows = run_bench(cfg, json_path)
    shown = ("method", "seconds_per_batch", "ratio_to_plain", "ratio_to_pgm10", "peak_memory_mib")
    print_table(
        f"bench speed: {model}, attacker {attacker} x{attacker_width}, batch {batch_size} "
        f"(median over {rounds} rounds; ratios: median of the per-round ratios)",
        rows,
        shown,
    )


@user_errors
def bench_ait(
    epochs: int = typer.Option(10, help="Epochs for every run."),
    methods: str = typer.Option("ait,grad", help="AIT followers, comma-separated."),
    directions: str = typer.Option("toward,away", help="Feature directions, comma-separated."),
    seeds: str = typer.Option("0", help="Seeds, comma-separated; rows give mean and std."),
    levers: str = LEVERS,
    reuse: bool = REUSE,
    autoattack: bool = typer.Option(True, help="Standard AutoAttack on the test split."),
    jobs: int = typer.Option(1, help="Worker processes for the evaluations (after training)."),
    train_size: int = Shared.train_size,
    eval_size: int = Shared.eval_size,
    out: Path = path_option(Path("runs/bench-ait"), help="Folder for the runs."),
    json_path: Path = Shared.json_path,
) -> None:
    """mnist5k, small CNN, ε = 0.3: AIT vs L2L-AIT; PGD-40, CW-PGD-40 and AutoAttack (test)."""
    check_paths(folders={"--out": out}, files={"--json": json_path})
    from problems.adversarial.bench_ait import bench_ait as run_bench

    method_names = split_names(methods, "--methods")
    direction_names = split_names(directions, "--directions")
    rows = run_bench(
        method_names, direction_names, epochs, parse_seeds(seeds), out, json_path,
        train_size=train_size, eval_size=eval_size, autoattack=autoattack, jobs=jobs,
        levers=_json_object("--levers", levers), reuse=reuse,
    )  # fmt: skip
    shown = [_mean_std_cells(row) for row in rows]
    print_table("bench ait: mnist5k, small CNN, ε = 0.3 (test split, mean ± std)", shown)


def _json_object(option: str, text: str | None) -> dict[str, Any]:
    try:
        value = {} if text is None else json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise UserError(f"{option} takes a JSON object like '{{\"unroll\": 2}}'; got {text!r}.")
    return value
