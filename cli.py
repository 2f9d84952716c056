"""bilevel-l2l command line: ``solve`` a bilevel problem, ``bench`` methods side by side.

Thin by design: every command parses options, calls one function of a package, and prints.
Errors a user can cause print one sentence and exit with code 2.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from bilevel.errors import UserError

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
    """Turn a ``UserError`` (or a bad value from a constructor) into one sentence and exit 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (UserError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            raise typer.Exit(2) from None

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
    milestones = typer.Option(None, help="Epochs where lr ×0.1, e.g. 30,60,90.")
    attacker = typer.Option(None, help="Learned attacker: cnn (Table 1) or slim (Appendix B).")
    attacker_width = typer.Option(None, help="Channel multiplier of the attacker.")
    follower_steps = typer.Option(1, help="Follower (φ) updates per leader update.")
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
    compile_ = typer.Option(False, "--compile", help="torch.compile the leader and the attacker.")


def _names(text: str) -> list[str]:
    """A comma-separated option as a list of names."""
    return [name.strip() for name in text.split(",") if name.strip()]


def _run_config(config_class: Any, options: dict[str, Any]) -> Any:
    """A run's configuration from a solve command's options (its parameters, by name); options
    that are not configuration (--out, --resume ...) are left out by ``from_dict``."""
    parsed = {"milestones": _milestones(options["milestones"]), "compile": options["compile_"]}
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
        "alternating", help="alternating (the paper), follower-first or fused (one backward)."
    ),
    follower_steps: int = Shared.follower_steps,
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
    update: str = typer.Option("alternating", help="Update mode of the learned followers."),
    seed: int = Shared.seed,
    train_size: int = Shared.train_size,
    eval_size: int = Shared.eval_size,
    out: Path = typer.Option(Path("runs/bench-dro"), help="Folder for the runs."),
    json_path: Path = Shared.json_path,
) -> None:
    """mnist5k, small CNN, ε = 0.3: methods side by side; PGD-40 (step 0.01) on the test split."""
    from problems.adversarial.bench import bench_dro as run_bench

    rows = run_bench(
        _names(methods), epochs, seed, update, out, json_path, train_size=train_size,
        eval_size=eval_size,
    )  # fmt: skip
    print_table("bench dro: mnist5k, small CNN, ε = 0.3 (test split)", rows)


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
        help="default (FGSM, PGD-20/100 CE and CW, CW-L∞, noise, learned, transfer), "
        "full (default + AutoAttack standard), or a list: fgsm,pgd20,pgd100-cw,cw-linf,noise,"
        "learned,transfer,autoattack,square.",
    ),
    n_examples: int = typer.Option(None, help="First N test examples (default: all)."),
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
    ))  # fmt: skip
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
    compile_: bool = typer.Option(False, "--compile", help="torch.compile the networks."),
    methods: str = typer.Option(None, help="Comma-separated subset of the methods."),
    json_path: Path = typer.Option(None, "--json", help="Also write the table as JSON here."),
) -> None:
    """Seconds per training step: plain, FGSM-RS, PGM-10, Grad and 2-Step L2L (paper Table 3)."""
    from problems.adversarial.speed import METHODS, SpeedConfig
    from problems.adversarial.speed import bench_speed as run_bench

    chosen = tuple(m.strip() for m in methods.split(",")) if methods else METHODS
    cfg = SpeedConfig(
        model=model, attacker=attacker, attacker_width=attacker_width, batch_size=batch_size,
        batches=batches, rounds=rounds, device=device, amp=amp, channels_last=channels_last,
        compile=compile_, methods=chosen,
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
    from problems.imitation.ppo_expert import train_expert

    path, mean_return = train_expert(env, steps, cache_dir, seed)
    console.print(f"expert saved to {path}; mean return {mean_return:.1f} over 10 episodes")


@bench_app.command("ait")
@user_errors
def bench_ait(
    epochs: int = typer.Option(10, help="Epochs for every run."),
    methods: str = typer.Option("ait,grad", help="AIT followers, comma-separated."),
    directions: str = typer.Option("toward,away", help="Feature directions, comma-separated."),
    seed: int = Shared.seed,
    train_size: int = Shared.train_size,
    eval_size: int = Shared.eval_size,
    out: Path = typer.Option(Path("runs/bench-ait"), help="Folder for the runs."),
    json_path: Path = Shared.json_path,
) -> None:
    """mnist5k, small CNN, ε = 0.3: AIT vs L2L-AIT; PGD-40 and CW-PGD-40 on the test split."""
    from problems.adversarial.bench_ait import bench_ait as run_bench

    rows = run_bench(
        _names(methods), _names(directions), epochs, seed, out, json_path,
        train_size=train_size, eval_size=eval_size,
    )  # fmt: skip
    print_table("bench ait: mnist5k, small CNN, ε = 0.3 (test split)", rows)


if __name__ == "__main__":
    app()
