"""bilevel-l2l command line: ``solve`` a bilevel problem, ``bench`` methods side by side.

Thin by design: every command parses options, calls one function of a package, and prints.
Errors a user can cause print one sentence and exit with code 2.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from bilevel import report
from bilevel.distributed import leave_process_group
from bilevel.errors import Stopped, UserError
from bilevel.options import parse_list, with_options
from bilevel.paths import check_paths
from bilevel.stopping import INTERRUPTED_KEEPS, Interrupted, signals_raise
from problems.adversarial.config import AITConfig, DROConfig
from problems.imitation.config import GAILConfig

app = typer.Typer(
    help="Learning to learn for bilevel problems: a leader (θ) against a learned follower (g_φ).",
    no_args_is_help=True,
    add_completion=False,
)
solve_app = typer.Typer(help="Train a leader and its follower jointly on one bilevel problem.")
bench_app = typer.Typer(help="Benchmarks: methods side by side in one process.")
app.add_typer(solve_app, name="solve", no_args_is_help=True)
app.add_typer(bench_app, name="bench", no_args_is_help=True)
console = Console()


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Every known way for a command to stop, as one line on stderr and an exit code: a
    ``UserError`` exits 2 (any other exception is a bug and keeps its traceback); a run stopped by SIGINT or SIGTERM
    (``Stopped``, or ``Interrupted`` outside a training loop) exits 130 or 143."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with signals_raise():
                return command(*args, **kwargs)
        except UserError as err:
            message, code = f"error: {err}", 2
        except Stopped as stop:
            message, code = str(stop), stop.exit_code
        except Interrupted as err:
            message, code = f"Stopped by {err.name}; {INTERRUPTED_KEEPS}", err.exit_code
        if message:
            print(message, file=sys.stderr)
        leave_process_group()  # the run's DDP wrappers went with the exception
        raise typer.Exit(code)

    return wrapper


def print_table(title: str, rows: list[dict[str, Any]], keys: tuple[str, ...] = ()) -> None:
    """``rows`` under ``title``, only their ``keys`` where given."""
    report.print_table(console, title, [{k: r[k] for k in keys} for r in rows] if keys else rows)


class Shared:
    """typer options that are not a run's configuration, shared by several commands (a run's
    options come from its configuration dataclass, ``bilevel.options.with_options``)."""

    train_size = typer.Option(None, help="Use only the first N training examples.")
    eval_size = typer.Option(None, help="Use only the first N validation and test examples.")
    resume = typer.Option(False, help="Continue the run in --out where it stopped.")
    interrupt_after_epoch = typer.Option(None, hidden=True)
    json_path = typer.Option(None, "--json", help="Also write the table as JSON here.")
    levers = typer.Option(
        None, help="JSON options for the learned followers, e.g. '{\"attacker_sign_step\": 0.6}'."
    )


def _seeds(text: str) -> list[int]:
    return parse_list("seeds", text, int, "0,1,2")


def _names(text: str) -> list[str]:
    """A comma-separated option as a list of names."""
    return [name.strip() for name in text.split(",") if name.strip()]


def _print_solved(
    results: dict[str, Any] | None, title: str, out: Path, interrupted: int | None, plot: str
) -> None:
    """A solve command's results and run folder (``plot`` its curves), or how to go on after
    ``--interrupt-after-epoch``."""
    if results is None:  # stopped on purpose, or a torchrun process other than rank 0
        if interrupted is not None:
            console.print(f"stopped after epoch {interrupted}; continue with --resume")
        return
    print_table(title, [results])
    console.print(f"run folder: {out} (report.md, {plot}, metrics.jsonl)")


@solve_app.command("adversarial-dro")
@user_errors
@with_options(DROConfig)
def solve_adversarial_dro(
    cfg: DROConfig,
    out: Path = typer.Option(Path("runs/dro"), help="The run folder."),
    resume: bool = Shared.resume,
    interrupt_after_epoch: int = Shared.interrupt_after_epoch,
    crash_after_epoch: int = typer.Option(None, hidden=True),
) -> None:
    """Adversarial training as DRO (Eq. 2-3), with a hand-designed or learned follower (Eq. 7).

    Multi-process: torchrun --nproc_per_node=N cli.py solve adversarial-dro ... (gloo on CPU,
    nccl on GPU); each process takes 1/N of every minibatch.
    """
    check_paths(folders={"--out": out}, inputs={"--data-dir": cfg.data_dir})
    from problems.adversarial.solve import solve

    results = solve(cfg, out, resume, interrupt_after_epoch, crash_after_epoch=crash_after_epoch)
    title = f"adversarial-dro, {cfg.follower} follower, {cfg.dataset} (test split)"
    _print_solved(results, title, out, interrupt_after_epoch, "curves.png")


@solve_app.command("adversarial-ait")
@user_errors
@with_options(AITConfig)
def solve_adversarial_ait(
    cfg: AITConfig,
    out: Path = typer.Option(Path("runs/ait"), help="The run folder."),
    resume: bool = Shared.resume,
    interrupt_after_epoch: int = Shared.interrupt_after_epoch,
) -> None:
    """Adversarial interpolation training (Eq. 5-6): AIT Net or L2L-AIT (Algorithm 4)."""
    check_paths(folders={"--out": out}, inputs={"--data-dir": cfg.data_dir})
    from problems.adversarial.solve import solve

    results = solve(cfg, out, resume, interrupt_after_epoch)
    title = f"adversarial-ait, {cfg.follower} follower, {cfg.ait_direction}, {cfg.dataset} (test)"
    _print_solved(results, title, out, interrupt_after_epoch, "curves.png")


@bench_app.command("dro")
@user_errors
def bench_dro(
    epochs: int = typer.Option(10, help="Epochs for every method."),
    methods: str = typer.Option("none,fgsm,pgm,grad,2-step", help="Followers, comma-separated."),
    update: str = typer.Option(
        None, help="Update mode of the learned followers (default: the data set's)."
    ),
    seeds: str = typer.Option(
        None, help="Seeds, comma-separated; rows give mean and std (default: 0, or the grid's)."
    ),
    grid: Path = typer.Option(
        None, help="A study grid (bench l2l) whose entries replace --methods, --epochs, --update."
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
    reuse: bool = typer.Option(
        False,
        help="With --grid: evaluate a finished run of the same configuration in --out "
        "(e.g. the study's, with the same --out) instead of training it again.",
    ),
    autoattack: bool = typer.Option(
        True, help="Standard AutoAttack on the test split (minutes per robust model on a CPU)."
    ),
    jobs: int = typer.Option(1, help="Worker processes for the evaluations (after training)."),
    train_size: int = Shared.train_size,
    eval_size: int = Shared.eval_size,
    out: Path = typer.Option(Path("runs/bench-dro"), help="Folder for the runs."),
    json_path: Path = Shared.json_path,
) -> None:
    """mnist5k, small CNN, ε = 0.3: methods side by side (trained one after another in this
    process); clean, PGD-40 (step 0.01) and standard AutoAttack accuracy on the test split.
    With --norm l2, all of it in the L2 ball (ε = 1.5, PGD-L2 step 2.5 ε / 40)."""
    check_paths(folders={"--out": out}, files={"--json": json_path})
    from problems.adversarial.bench import bench_dro as run_bench

    if grid is not None:
        from problems.adversarial.bench import bench_grid
        from problems.adversarial.study import load_grid

        chosen = _seeds(seeds) if seeds else None  # None: the grid's
        rows = bench_grid(
            load_grid(grid), out, json_path, autoattack, jobs, chosen, reuse, aa, norm, eps
        )
    else:
        rows = run_bench(
            _names(methods), epochs, _seeds(seeds or "0"), update, out, json_path,
            train_size=train_size, eval_size=eval_size, autoattack=autoattack, jobs=jobs,
            norm=norm or "linf", eps=eps, aa_version=aa,
        )  # fmt: skip
    first = rows[0]  # an L2 row names its ball
    ball = f"{'L2 ' if first.get('norm') == 'l2' else ''}ε = {first.get('eps', eps or 0.3):g}"
    shown = [_mean_std_cells(row) for row in rows]
    print_table(f"bench dro: mnist5k, small CNN, {ball} (test split, mean ± std)", shown)


def _mean_std_cells(row: dict[str, Any]) -> dict[str, Any]:
    """A bench row for the terminal: every ``x`` with an ``x_std`` (``x_acc``: ``x_std``) shown as
    one "mean ± std" cell."""
    out = {}
    for key, value in row.items():
        if not key.endswith("_std"):
            std = row.get(key.removesuffix("_acc") + "_std")
            out[key] = value if std is None else f"{value:.3f} ± {std:.3f}"
    return out


@bench_app.command("l2l")
@user_errors
def bench_l2l(
    grid: Path = typer.Option(..., help="A JSON grid of configurations (benchmarks/l2l/*.json)."),
    out: Path = typer.Option(Path("runs/l2l-study"), help="Folder for the runs (reused)."),
    results: Path = typer.Option(
        Path("benchmarks/results"), help="Where <grid>.md, <grid>.json and <grid>.png go."
    ),
) -> None:
    """A study: learned-follower configurations and PGM-k / FGSM-RS references, 3 seeds each,
    judged by APGD-CE + APGD-T on the validation split against training seconds (Pareto plot)."""
    from problems.adversarial.study import load_grid, run_study

    spec = load_grid(grid)
    rows = run_study(spec, out, results)
    shown = ("entry", "val_apgd_ce_t_acc", "val_apgd_ce_t_std", "val_clean_acc", "train_seconds",
             "seconds_vs_pgm10")  # fmt: skip
    print_table(f"bench l2l: {spec.name} (validation split)", rows, shown)
    console.print(f"written: {results}/{spec.name}.md, .json, .png")


@app.command("evaluate")
@user_errors
def evaluate_run(
    run_dir: Path = typer.Argument(
        ...,
        help="A run folder written by `solve` (or, with --model, "
        "the folder to write eval.json into).",
    ),
    attacks: str = typer.Option(
        "default",
        help="default (APGD-CE + APGD-T, FGSM, PGD-20/100 CE and CW, CW-L∞ (L∞ only), noise, "
        "learned, transfer), full (default with the standard AutoAttack: + FAB-T and Square), or "
        "a list: apgd-ce-t,fgsm,pgd20,pgd100-cw,cw-linf,noise,learned,transfer,autoattack,square. "
        "Every attack stays in the run's ball (--norm).",
    ),
    n_examples: int = typer.Option(
        None,
        help="First N test examples (default: the run's --eval-size, else the whole test split).",
    ),
    eps: float = typer.Option(None, help="Radius ε of the ball (default: the run's)."),
    norm: str = typer.Option(
        None,
        help="The ball attacked, linf or l2: the run's own (a run is attacked in the ball it was "
        "trained against); with --model and no config.json, linf unless given.",
    ),
    restarts: int = typer.Option(1, help="PGD restarts R (worst of R per example)."),
    step_size: float = typer.Option(
        None, help="PGD step (default: 0.003 CIFAR L∞ (the paper), else 2.5 ε / k)."
    ),
    noise_samples: int = typer.Option(100, help="Random-noise draws per example."),
    surrogate: Path = typer.Option(None, help="Run folder of a transfer (black-box) source."),
    attacker_from: list[Path] = typer.Option(None, help="Also attack with this L2L run's g_φ."),
    model: Path = typer.Option(
        None, help="A plain state-dict file to evaluate instead of best.pt."
    ),
    dataset: str = typer.Option("mnist5k", help="With --model and no config.json: the data set."),
    arch: str = typer.Option(None, help="With --model and no config.json: the architecture."),
    checklist: bool = typer.Option(True, help="Run the gradient-masking checklist sweeps."),
    aa_margin: float = typer.Option(0.02, help="Largest PGD − AutoAttack gap that passes."),
    compare: list[Path] = typer.Option(None, help="Run folders with an eval.json to show beside."),
    seed: int = typer.Option(0),
    batch_size: int = typer.Option(500),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
) -> None:
    """Attack a trained run on the test split; write eval.json, eval.md and plots into it."""
    from problems.adversarial.evaluation import EvalOptions, evaluate
    from problems.adversarial.evaluation.report import checklist_lines, read_eval, table_rows

    ev = evaluate(EvalOptions(
        run_dir, attacks, n_examples, eps, restarts, step_size, noise_samples, surrogate,
        attacker_from or [], model, dataset, arch, checklist, aa_margin, seed=seed,
        batch_size=batch_size, device=device, compare=compare or [], norm=norm,
    ), announce=lambda line: console.print(line, markup=False))  # fmt: skip
    evals = {str(run_dir): ev} | {str(p): read_eval(p) for p in compare or []}
    ball = "" if ev["norm"] == "linf" else "L2 "
    print_table(f"evaluate: {ev['dataset']} test, n = {ev['n_examples']}, {ball}ε = {ev['eps']:g}",
                table_rows(evals))  # fmt: skip
    for line in checklist_lines(ev):
        console.print(line, markup=False)
    console.print(f"written: {run_dir}/eval.json, eval.md, {', '.join(ev['plots'])}")


@bench_app.command("speed")
@user_errors
def bench_speed(
    model: str = typer.Option("preact-resnet18", help="The leader network."),
    attacker: str = typer.Option("cnn", help="cnn (Table 1) or slim (Appendix B)."),
    attacker_width: float = typer.Option(0.25, help="Channel multiplier of the attacker."),
    batch_size: int = typer.Option(128),
    batches: int = typer.Option(3, help="Timed steps per method in each round."),
    rounds: int = typer.Option(3, help="Interleaved rounds (A B C ... A B C); the median is kept."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    amp: bool = typer.Option(False, help="bf16 autocast."),
    channels_last: bool = typer.Option(True, help="channels_last memory format."),
    compile_: bool = typer.Option(
        False, "--compile/--no-compile", help="torch.compile the networks."
    ),
    methods: str = typer.Option(
        None, help="Comma-separated subset of the methods, and pgm-K for another K."
    ),
    levers: str = Shared.levers,
    json_path: Path = Shared.json_path,
) -> None:
    """Seconds per training step: plain, FGSM-RS, PGM-10, Grad and 2-Step L2L (paper Table 3)."""
    check_paths(files={"--json": json_path})
    from problems.adversarial.speed import METHODS, SpeedConfig
    from problems.adversarial.speed import bench_speed as run_bench

    chosen = tuple(_names(methods)) if methods else METHODS
    cfg = SpeedConfig(
        model=model, attacker=attacker, attacker_width=attacker_width, batch_size=batch_size,
        batches=batches, rounds=rounds, device=device, amp=amp, channels_last=channels_last,
        compile=compile_, methods=chosen, levers=_json_object("--levers", levers),
    )  # fmt: skip
    rows = run_bench(cfg, json_path)
    print_table(
        f"bench speed: {model}, attacker {attacker} x{attacker_width}, batch {batch_size}", rows
    )


expert_app = typer.Typer(help="Experts for imitation: scripted ones, or PPO trained here.")
app.add_typer(expert_app, name="expert", no_args_is_help=True)


@solve_app.command("gail")
@user_errors
@with_options(GAILConfig)
def solve_gail_command(
    cfg: GAILConfig,
    out: Path = typer.Option(Path("runs/gail"), help="The run folder."),
    resume: bool = Shared.resume,
    interrupt_after_epoch: int = Shared.interrupt_after_epoch,
) -> None:
    """GAIL as a bilevel problem: PPO policy (leader) against the discriminator ψ (follower)."""
    check_paths(folders={"--out": out}, inputs={"--cache-dir": cfg.cache_dir})
    from problems.imitation.solve import solve_gail

    results = solve_gail(cfg, out, resume, interrupt_after_epoch)
    title = f"gail, {cfg.follower} follower, {cfg.env} (test episodes, best epoch)"
    _print_solved(results, title, out, interrupt_after_epoch, "gail.png")


@app.command("gail-stability")
@user_errors
def gail_stability(
    env: str = typer.Option("Pendulum-v1", help="A gymnasium id with an expert."),
    seeds: int = typer.Option(8, help="Seeds 0..N-1 per follower (at least 2)."),
    followers: str = typer.Option(
        "adam,l2l",
        help="Comma-separated: adam, l2l, oneshot, adam-gp, adam-1step, each optionally with "
        ":field=value overrides of solve gail's options (e.g. l2l:meta_objective=q).",
    ),
    steps: int = typer.Option(100_000, help="Environment steps per run."),
    jobs: int = typer.Option(1, help="Worker processes (runs in parallel where cores allow)."),
    out: Path = typer.Option(Path("runs/gail-stability"), help="Folder for the runs."),
    reward: str = typer.Option("gail", help="gail: −log(1−D); airl: log D − log(1−D)."),
    cache_dir: str = typer.Option("data/demos", help="Where demonstrations are cached."),
) -> None:
    """GAIL vs L2L-GAIL across seeds: reliability metrics (Chan et al. 2020), curves, tables."""
    check_paths(folders={"--out": out})
    from problems.imitation.stability import run_stability, target_checks

    base = GAILConfig(env=env, steps=steps, reward=reward, cache_dir=cache_dir)
    summary = run_stability(base, _names(followers), seeds, out, jobs)
    keys = ("method", "final_median", "final_iqr", "final_cvar", "drawdown_cvar", "short_term_risk")
    rows = summary["rows"]
    print_table(f"gail-stability: {env}, {seeds} seeds, {steps} steps per run", rows, keys)
    for line in target_checks(summary["rows"]):
        console.print(line)
    console.print(f"written: {out}/stability.png, stability.md, stability.json")


@expert_app.command("train")
@user_errors
def expert_train(
    env: str = typer.Option(..., help="A gymnasium id without a scripted expert."),
    steps: int = typer.Option(200_000, help="PPO environment steps."),
    seed: int = typer.Option(0),
    cache_dir: str = typer.Option("data/demos", help="Where the expert is saved."),
) -> None:
    """Train a PPO expert on the true reward; GAIL then uses it for demonstrations."""
    check_paths(folders={"--cache-dir": cache_dir})
    from problems.imitation.ppo_expert import train_expert

    path, mean_return = train_expert(env, steps, cache_dir, seed)
    console.print(f"expert saved to {path}; mean return {mean_return:.1f} over 10 episodes")


@bench_app.command("ait")
@user_errors
def bench_ait(
    epochs: int = typer.Option(10, help="Epochs for every run."),
    methods: str = typer.Option("ait,grad", help="AIT followers, comma-separated."),
    directions: str = typer.Option("toward,away", help="Feature directions, comma-separated."),
    seeds: str = typer.Option("0", help="Seeds, comma-separated; rows give mean and std."),
    levers: str = Shared.levers,
    autoattack: bool = typer.Option(True, help="Standard AutoAttack on the test split."),
    jobs: int = typer.Option(1, help="Worker processes for the evaluations (after training)."),
    train_size: int = Shared.train_size,
    eval_size: int = Shared.eval_size,
    out: Path = typer.Option(Path("runs/bench-ait"), help="Folder for the runs."),
    json_path: Path = Shared.json_path,
) -> None:
    """mnist5k, small CNN, ε = 0.3: AIT vs L2L-AIT; PGD-40, CW-PGD-40 and AutoAttack (test)."""
    check_paths(folders={"--out": out}, files={"--json": json_path})
    from problems.adversarial.bench_ait import bench_ait as run_bench

    rows = run_bench(
        _names(methods), _names(directions), epochs, _seeds(seeds), out, json_path,
        train_size=train_size, eval_size=eval_size, autoattack=autoattack, jobs=jobs,
        levers=_json_object("--levers", levers),
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


if __name__ == "__main__":
    app()
