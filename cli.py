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
from rich.table import Table

from bilevel.distributed import leave_process_group
from bilevel.errors import Stopped, UserError
from bilevel.paths import check_paths
from bilevel.stopping import INTERRUPTED_KEEPS, Interrupted, signals_raise

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
    ``UserError`` (or a bad value from a constructor) exits 2; a run stopped by SIGINT or SIGTERM
    (``Stopped``, or ``Interrupted`` outside a training loop) exits 130 or 143."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with signals_raise():
                return command(*args, **kwargs)
        except (UserError, ValueError) as err:
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


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    table = Table(title=title)
    for key in rows[0]:
        # spaces let a long header wrap instead of being cut to "seconds_per_…"
        table.add_column(key.replace("_", " "), justify="right" if key != "method" else "left")
    for row in rows:
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()))
    console.print(table)


def _milestones(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(
            f"--milestones takes epochs separated by commas, like 30,60,90; got {text!r}."
        ) from None


class Shared:
    """typer options of the adversarial commands, declared once (solve adversarial-dro and
    adversarial-ait, bench dro and ait); a command's own options stay in its signature."""

    dataset = typer.Option("mnist5k", help="mnist5k (embedded, offline), cifar10 or cifar100.")
    data_dir = typer.Option("./data", help="Where CIFAR is read from (downloaded if missing).")
    model = typer.Option(
        None, help="small-cnn, preact-resnet18 or wrn-34-10 (default: follows the data set)."
    )
    eps = typer.Option(None, help="L∞ radius ε in [0,1] pixels (default: 0.3 MNIST, 0.031 CIFAR).")
    batch_size = typer.Option(128)
    lr = typer.Option(None, help="Leader SGD learning rate (default: 0.1 CIFAR, 0.05 mnist5k).")
    milestones = typer.Option(
        None,
        help="Epochs where lr ×0.1, e.g. 30,60,90 (default: 30,60,90 for 100 epochs, else at "
        "1/2 and 3/4 of --epochs).",
    )
    attacker = typer.Option(
        None,
        help="Learned attacker: cnn (Table 1) or slim (Appendix B) (default: slim on mnist5k, "
        "cnn on CIFAR).",
    )
    attacker_width = typer.Option(
        None, help="Channel multiplier of the attacker (default: 0.0625 mnist5k, 1.0 CIFAR)."
    )
    follower_steps = typer.Option(1, help="Follower (φ) updates per leader (θ) update.")
    leader_optimizer = typer.Option("sgd", help="The leader's optimizer: sgd (momentum) or adam.")
    schedule = typer.Option(
        "multistep", help="Leader lr schedule: multistep (×0.1 at --milestones), constant, cosine."
    )
    attacker_lr = typer.Option(1e-3, help="Adam learning rate of the learned attacker φ.")
    attacker_betas = typer.Option("0.9,0.999", help="Adam betas of φ, like 0.9,0.999.")
    attacker_weight_decay = typer.Option(2e-4, help="Weight decay of φ's Adam.")
    unroll = typer.Option(
        None, help="Unrolled steps K of the learned follower (default: 1, or 2 for 2-step)."
    )
    grad_scaling = typer.Option(
        "sample", help="How ∇ is scaled for g_φ: sample (g/max|g| each), batch, sign or none."
    )
    attacker_random_start = typer.Option(
        None,
        "--attacker-random-start/--no-attacker-random-start",
        help="The learned follower starts uniformly in the ε-ball, as FGSM-RS and PGM do "
        "(default: on for mnist5k, off on CIFAR, the paper's).",
    )
    attacker_memory = typer.Option(
        "none", help="Extra input of g_φ: none, delta (the current δ/ε) or prev-grad."
    )
    attacker_sign_step = typer.Option(
        None,
        help="s > 0: each unrolled step adds a sign-gradient step s·ε to g_φ's output, and g_φ "
        "starts at zero, so the follower starts as PGM-K and learns a correction (default: "
        "0.625 for mnist5k, 0 on CIFAR, the paper's).",
    )
    attacker_init = typer.Option(None, help="A finished L2L run folder whose g_φ warm-starts φ.")
    gap_size = typer.Option(
        256, help="Training examples of the follower-gap probe measured every epoch (0: off)."
    )
    train_size = typer.Option(None, help="Use only the first N training examples.")
    eval_size = typer.Option(None, help="Use only the first N validation and test examples.")
    seed = typer.Option(0)
    device = typer.Option("auto", help="auto, cpu or cuda.")
    resume = typer.Option(False, help="Continue the run in --out where it stopped.")
    interrupt_after_epoch = typer.Option(None, hidden=True)
    json_path = typer.Option(None, "--json", help="Also write the table as JSON here.")
    eps_warmup = typer.Option(
        None,
        help="Epochs of linear ε ramp from 0 (default: a third of --epochs on mnist5k, 0 CIFAR).",
    )
    channels_last = typer.Option(
        None, "--channels-last/--no-channels-last", help="NHWC tensors (default: on for CIFAR)."
    )
    amp = typer.Option(False, help="bf16 autocast of every training step (CPU and GPU).")
    compile_ = typer.Option(
        False, "--compile/--no-compile", help="torch.compile the leader and the attacker."
    )


def _seeds(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(
            f"--seeds takes integers separated by commas, like 0,1,2; got {text!r}."
        ) from None


def _names(text: str) -> list[str]:
    """A comma-separated option as a list of names."""
    return [name.strip() for name in text.split(",") if name.strip()]


def _betas(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(
            f"--attacker-betas takes two numbers like 0.9,0.999; got {text!r}."
        ) from None


def _run_config(config_class: Any, options: dict[str, Any]) -> Any:
    """A run's configuration from a solve command's options (its parameters, by name); options
    that are not configuration (--out, --resume ...) are left out by ``from_dict``."""
    parsed = {
        "milestones": _milestones(options["milestones"]),
        "compile": options["compile_"],
        "attacker_betas": _betas(options["attacker_betas"]),
    }
    return config_class.from_dict({**options, **parsed})


def _print_solved(
    results: dict[str, Any] | None, title: str, out: Path, interrupt_after_epoch: int | None
) -> None:
    if results is None:  # stopped on purpose, or a torchrun process other than rank 0
        if interrupt_after_epoch is not None:
            console.print(f"stopped after epoch {interrupt_after_epoch}; continue with --resume")
        return
    print_table(title, [results])
    console.print(f"run folder: {out} (report.md, curves.png, metrics.jsonl)")


@solve_app.command("adversarial-dro")
@user_errors
def solve_adversarial_dro(
    dataset: str = Shared.dataset,
    data_dir: str = Shared.data_dir,
    model: str = Shared.model,
    follower: str = typer.Option(
        "2-step",
        help="How the follower finds δ: none (plain training), fgsm (random start), pgm (PGM-k), "
        "or a learned attacker: naive, grad, grad-only, 2-step, 2-step-grad-only.",
    ),
    eps: float = Shared.eps,
    pgm_steps: int = typer.Option(10, help="k of PGM-k training."),
    pgm_step_size: float = typer.Option(
        None, help="η of PGM-k (default: 0.007 CIFAR, 2.5ε/k MNIST)."
    ),
    epochs: int = typer.Option(None, help="Training epochs (default: 100 CIFAR, 10 mnist5k)."),
    batch_size: int = Shared.batch_size,
    lr: float = Shared.lr,
    milestones: str = Shared.milestones,
    attacker: str = Shared.attacker,
    attacker_width: float = Shared.attacker_width,
    update: str = typer.Option(
        None,
        help="alternating (the paper), follower-first or fused (one backward); default: the data "
        "set's for learned followers, alternating for hand-designed ones.",
    ),
    follower_steps: int = Shared.follower_steps,
    leader_optimizer: str = Shared.leader_optimizer,
    schedule: str = Shared.schedule,
    attacker_lr: float = Shared.attacker_lr,
    attacker_betas: str = Shared.attacker_betas,
    attacker_weight_decay: float = Shared.attacker_weight_decay,
    unroll: int = Shared.unroll,
    grad_scaling: str = Shared.grad_scaling,
    attacker_random_start: bool = Shared.attacker_random_start,
    attacker_memory: str = Shared.attacker_memory,
    attacker_sign_step: float = Shared.attacker_sign_step,
    attacker_init: str = Shared.attacker_init,
    gap_size: int = Shared.gap_size,
    train_size: int = Shared.train_size,
    eval_size: int = Shared.eval_size,
    seed: int = Shared.seed,
    device: str = Shared.device,
    out: Path = typer.Option(Path("runs/dro"), help="The run folder."),
    resume: bool = Shared.resume,
    interrupt_after_epoch: int = Shared.interrupt_after_epoch,
    eps_warmup: int = Shared.eps_warmup,
    channels_last: bool = Shared.channels_last,
    amp: bool = Shared.amp,
    compile_: bool = Shared.compile_,
    crash_after_epoch: int = typer.Option(None, hidden=True),
) -> None:
    """Adversarial training as DRO (Eq. 2-3), with a hand-designed or learned follower (Eq. 7).

    Multi-process: torchrun --nproc_per_node=N cli.py solve adversarial-dro ... (gloo on CPU,
    nccl on GPU); each process takes 1/N of every minibatch.
    """
    options = dict(locals())
    check_paths(folders={"--out": out}, inputs={"--data-dir": data_dir})
    from problems.adversarial.config import DROConfig
    from problems.adversarial.solve import solve_dro

    cfg = _run_config(DROConfig, options)
    results = solve_dro(
        cfg, out, resume=resume, interrupt_after_epoch=interrupt_after_epoch,
        crash_after_epoch=crash_after_epoch,
    )  # fmt: skip
    title = f"adversarial-dro, {cfg.follower} follower, {cfg.dataset} (test split)"
    _print_solved(results, title, out, interrupt_after_epoch)


@solve_app.command("adversarial-ait")
@user_errors
def solve_adversarial_ait(
    dataset: str = Shared.dataset,
    data_dir: str = Shared.data_dir,
    model: str = Shared.model,
    follower: str = typer.Option(
        "ait",
        help="ait (one signed step of size ε, the AIT Net), or a learned attacker: grad "
        "(L2L-AIT, Algorithm 4), 2-step, naive, grad-only, 2-step-grad-only.",
    ),
    eps: float = Shared.eps,
    eps_y: float = typer.Option(0.5, help="Label mixing ε_y of ỹ (Algorithm 2)."),
    pairing: str = typer.Option("reversed", help="Partners: reversed batch or permutation."),
    ait_direction: str = typer.Option(
        "toward", help="Features toward the partner's (AIT) or away (Eq. 6 as printed)."
    ),
    epochs: int = typer.Option(None, help="(default: 200 CIFAR, 10 mnist5k)"),
    batch_size: int = Shared.batch_size,
    lr: float = Shared.lr,
    milestones: str = Shared.milestones,
    attacker: str = Shared.attacker,
    attacker_width: float = Shared.attacker_width,
    update: str = typer.Option(
        "follower-first", help="follower-first (Algorithm 4: φ, then θ) or alternating."
    ),
    follower_steps: int = Shared.follower_steps,
    leader_optimizer: str = Shared.leader_optimizer,
    schedule: str = Shared.schedule,
    attacker_lr: float = Shared.attacker_lr,
    attacker_betas: str = Shared.attacker_betas,
    attacker_weight_decay: float = Shared.attacker_weight_decay,
    unroll: int = Shared.unroll,
    grad_scaling: str = Shared.grad_scaling,
    attacker_random_start: bool = Shared.attacker_random_start,
    attacker_memory: str = Shared.attacker_memory,
    attacker_sign_step: float = Shared.attacker_sign_step,
    attacker_init: str = Shared.attacker_init,
    gap_size: int = Shared.gap_size,
    train_size: int = Shared.train_size,
    eval_size: int = Shared.eval_size,
    seed: int = Shared.seed,
    device: str = Shared.device,
    out: Path = typer.Option(Path("runs/ait"), help="The run folder."),
    resume: bool = Shared.resume,
    interrupt_after_epoch: int = Shared.interrupt_after_epoch,
    eps_warmup: int = Shared.eps_warmup,
    channels_last: bool = Shared.channels_last,
    amp: bool = Shared.amp,
    compile_: bool = Shared.compile_,
) -> None:
    """Adversarial interpolation training (Eq. 5-6): AIT Net or L2L-AIT (Algorithm 4)."""
    options = dict(locals())
    check_paths(folders={"--out": out}, inputs={"--data-dir": data_dir})
    from problems.adversarial.solve import solve_dro
    from problems.adversarial.solve_ait import AITConfig

    cfg = _run_config(AITConfig, options)
    results = solve_dro(cfg, out, resume=resume, interrupt_after_epoch=interrupt_after_epoch)
    title = f"adversarial-ait, {cfg.follower} follower, {cfg.ait_direction}, {cfg.dataset} (test)"
    _print_solved(results, title, out, interrupt_after_epoch)


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
        help="With --grid: standard AutoAttack, or apgd-ce-t (its two gradient "
        "components, about 1/5 of the time).",
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
    process); clean, PGD-40 (step 0.01) and standard AutoAttack accuracy on the test split."""
    check_paths(folders={"--out": out}, files={"--json": json_path})
    from problems.adversarial.bench import bench_dro as run_bench

    if grid is not None:
        from problems.adversarial.bench import bench_grid
        from problems.adversarial.study import load_grid

        rows = bench_grid(
            load_grid(grid),
            out,
            json_path,
            autoattack,
            jobs,
            _seeds(seeds) if seeds else None,
            reuse,
            aa,
        )
    else:
        rows = run_bench(
            _names(methods), epochs, _seeds(seeds or "0"), update, out, json_path,
            train_size=train_size, eval_size=eval_size, autoattack=autoattack, jobs=jobs,
        )  # fmt: skip
    shown = [_mean_std_cells(row) for row in rows]
    print_table("bench dro: mnist5k, small CNN, ε = 0.3 (test split, mean ± std)", shown)


def _mean_std_cells(row: dict[str, Any]) -> dict[str, Any]:
    """A bench row for the terminal: every ``x`` with an ``x_std`` (``x_acc``: ``x_std``) shown as
    one "mean ± std" cell."""
    out = {}
    for key, value in row.items():
        std = row.get(key.removesuffix("_acc") + "_std") if not key.endswith("_std") else None
        if key.endswith("_std"):
            continue
        out[key] = f"{value:.3f} ± {std:.3f}" if std is not None else value
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
    print_table(
        f"bench l2l: {spec.name} (validation split)", [{k: r[k] for k in shown} for r in rows]
    )
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
        help="default (APGD-CE + APGD-T, FGSM, PGD-20/100 CE and CW, CW-L∞, noise, learned, "
        "transfer), full (default with the standard AutoAttack: + FAB-T and Square), or a list: "
        "apgd-ce-t,fgsm,pgd20,pgd100-cw,cw-linf,noise,learned,transfer,autoattack,square.",
    ),
    n_examples: int = typer.Option(
        None,
        help="First N test examples (default: the run's --eval-size, else the whole test split).",
    ),
    eps: float = typer.Option(None, help="L∞ radius ε (default: the run's)."),
    restarts: int = typer.Option(1, help="PGD restarts R (worst of R per example)."),
    step_size: float = typer.Option(
        None, help="PGD step (default: 0.003 CIFAR (the paper), 2.5 ε / k digits)."
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
        batch_size=batch_size, device=device, compare=compare or [],
    ), announce=lambda line: console.print(line, markup=False))  # fmt: skip
    evals = {str(run_dir): ev} | {str(p): read_eval(p) for p in compare or []}
    print_table(f"evaluate: {ev['dataset']} test, n = {ev['n_examples']}, ε = {ev['eps']:g}",
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
    levers: str = typer.Option(
        None, help="JSON options for the learned followers, e.g. '{\"attacker_sign_step\": 0.6}'."
    ),
    json_path: Path = typer.Option(None, "--json", help="Also write the table as JSON here."),
) -> None:
    """Seconds per training step: plain, FGSM-RS, PGM-10, Grad and 2-Step L2L (paper Table 3)."""
    check_paths(files={"--json": json_path})
    from problems.adversarial.speed import METHODS, SpeedConfig
    from problems.adversarial.speed import bench_speed as run_bench

    chosen = tuple(m.strip() for m in methods.split(",")) if methods else METHODS
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
def solve_gail_command(
    env: str = typer.Option("Pendulum-v1", help="A gymnasium id (Pendulum-v1, CartPole-v1 ...)."),
    follower: str = typer.Option(
        "adam", help="adam (GAIL), l2l (residual LSTM on Adam, L2L-GAIL) or oneshot."
    ),
    steps: int = typer.Option(100_000, help="Environment steps of the policy's rollouts."),
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("runs/gail"), help="The run folder."),
    resume: bool = typer.Option(False, help="Continue the run in --out where it stopped."),
    reward: str = typer.Option("gail", help="gail: −log(1−D); airl: log D − log(1−D)."),
    grad_penalty: float = typer.Option(0.0, help="Gradient penalty λ on D (10 is usual)."),
    disc_steps: int = typer.Option(3, help="Adam follower: steps on ψ per round."),
    disc_lr: float = typer.Option(1e-3, help="Adam follower: learning rate."),
    lstm_steps: int = typer.Option(None, help="L2L follower: steps K per round (--disc-steps)."),
    disc_norm: str = typer.Option(None, help="D's input statistics: expert or running."),
    meta_objective: str = typer.Option(None, help="Learned followers: q, q-gp or target."),
    trust_radius: float = typer.Option(None, help="ε of ‖ψ − ψ_t‖ ≤ ε per round; 0: none."),
    n_envs: int = typer.Option(4, help="Parallel environments of PPO."),
    n_steps: int = typer.Option(None, help="PPO steps per env and round (default: per env)."),
    eval_episodes: int = typer.Option(5, help="Validation episodes per epoch (model selection)."),
    test_episodes: int = typer.Option(20, help="Test episodes for the final table."),
    cache_dir: str = typer.Option("data/demos", help="Where demonstrations are cached."),
    interrupt_after_epoch: int = typer.Option(None, hidden=True),
) -> None:
    """GAIL as a bilevel problem: PPO policy (leader) against the discriminator ψ (follower)."""
    check_paths(folders={"--out": out}, inputs={"--cache-dir": cache_dir})
    from problems.imitation.config import GAILConfig
    from problems.imitation.solve import solve_gail

    chosen = dict(disc_norm=disc_norm, meta_objective=meta_objective, trust_radius=trust_radius)
    cfg = GAILConfig(
        env=env, follower=follower, steps=steps, seed=seed, reward=reward,
        grad_penalty=grad_penalty, disc_steps=disc_steps, disc_lr=disc_lr, lstm_steps=lstm_steps,
        n_envs=n_envs, n_steps=n_steps, eval_episodes=eval_episodes, test_episodes=test_episodes,
        cache_dir=cache_dir, **{k: v for k, v in chosen.items() if v is not None},
    )  # fmt: skip
    results = solve_gail(cfg, out, resume=resume, interrupt_after_epoch=interrupt_after_epoch)
    if results is None:  # stopped on purpose, or a torchrun process other than rank 0
        if interrupt_after_epoch is not None:
            console.print(f"stopped after epoch {interrupt_after_epoch}; continue with --resume")
        return
    print_table(f"gail, {follower} follower, {env} (test episodes, best epoch)", [results])
    console.print(f"run folder: {out} (report.md, gail.png, metrics.jsonl)")


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
    from problems.imitation.config import GAILConfig
    from problems.imitation.stability import run_stability, target_checks

    specs = [f.strip() for f in followers.split(",") if f.strip()]
    base = GAILConfig(env=env, steps=steps, reward=reward, cache_dir=cache_dir)
    summary = run_stability(base, specs, seeds, out, jobs)
    keys = ("method", "final_median", "final_iqr", "final_cvar", "drawdown_cvar", "short_term_risk")
    rows = [{k: row[k] for k in keys} for row in summary["rows"]]
    print_table(f"gail-stability: {env}, {seeds} seeds, {steps} steps per run", rows)
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
    levers: str = typer.Option(
        None,
        help="JSON options for the learned followers, e.g. '{\"attacker_sign_step\": 1.0}'.",
    ),
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
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise UserError(f"{option} takes a JSON object like '{{\"unroll\": 2}}'; got {text!r}.")
    return value


if __name__ == "__main__":
    app()
