"""The adversarial commands of ``cli.py``: ``solve adversarial-dro`` / ``adversarial-ait`` and
``evaluate`` (the ``bench`` commands are in ``bench_commands``). Each parses its options, calls
one function of this package (imported when the command runs, so that ``--help`` stays fast), and
prints; ``cli.py`` names them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from bilevel.command_options import with_options
from bilevel.commands import Shared, console, path_option, print_solved, print_table, user_errors
from bilevel.options import field_default
from bilevel.paths import check_not_empty, check_paths, keep_empty
from problems.adversarial.ait_config import AITConfig
from problems.adversarial.dro_config import DROConfig
from problems.adversarial.evaluation import EvalOptions  # loaded with the package already


@user_errors
@with_options(DROConfig)
def solve_adversarial_dro(
    cfg: DROConfig,
    out: Path = path_option(Path("runs/dro"), help="The run folder."),
    resume: bool = Shared.resume,
    interrupt_after_epoch: int = Shared.interrupt_after_epoch,
) -> None:
    """Adversarial training as DRO (Eq. 2-3), with a hand-designed or learned follower (Eq. 7).

    Multi-process: torchrun --nproc_per_node=N cli.py solve adversarial-dro ... (gloo on CPU,
    nccl on GPU); each process takes 1/N of every minibatch.
    """
    check_paths(folders={"--out": out}, inputs={"--data-dir": cfg.data_dir})
    from problems.adversarial.solve import solve

    results = solve(cfg, out, resume, interrupt_after_epoch)
    title = f"adversarial-dro, {cfg.follower} follower, {cfg.dataset} (test split)"
    print_solved(results, title, out, interrupt_after_epoch, "curves.png")


@user_errors
@with_options(AITConfig)
def solve_adversarial_ait(
    cfg: AITConfig,
    out: Path = path_option(Path("runs/ait"), help="The run folder."),
    resume: bool = Shared.resume,
    interrupt_after_epoch: int = Shared.interrupt_after_epoch,
) -> None:
    """Adversarial interpolation training (Eq. 5-6): AIT Net or L2L-AIT (Algorithm 4)."""
    check_paths(folders={"--out": out}, inputs={"--data-dir": cfg.data_dir})
    from problems.adversarial.solve import solve

    results = solve(cfg, out, resume, interrupt_after_epoch)
    title = f"adversarial-ait, {cfg.follower} follower, {cfg.ait_direction}, {cfg.dataset} (test)"
    print_solved(results, title, out, interrupt_after_epoch, "curves.png")


def _evaluate_option(name: str, help: str | None = None, path: bool = False) -> Any:
    """An option of ``evaluate`` whose default is the ``EvalOptions`` field's of that ``name``,
    so that the default is written once, on the dataclass; a ``path`` keeps "" as "" for
    ``evaluate_run`` to refuse (``Path("")`` is the current folder)."""
    parser = keep_empty if path else None
    return typer.Option(field_default(EvalOptions, name), help=help, parser=parser)


@user_errors
def evaluate_run(
    run_dir: Path = typer.Argument(
        ...,
        parser=keep_empty,  # "" is refused, not read as the current folder
        help="A run folder written by `solve` (or, with --model, "
        "the folder to write eval.json into).",
    ),
    attacks: str = _evaluate_option(
        "attacks",
        help="default (APGD-CE + APGD-T, FGSM, PGD-20/100 CE and CW, CW-L∞ (L∞ only), noise, "
        "learned, transfer), full (default with the standard AutoAttack: + FAB-T and Square), or "
        "a list: apgd-ce-t,fgsm,pgd20,pgd100-cw,cw-linf,noise,learned,transfer,autoattack,square. "
        "Every attack stays in the run's ball (--norm).",
    ),
    n_examples: int = _evaluate_option(
        "n_examples",
        help="First N test examples (default: the run's --eval-size, else the whole test split).",
    ),
    eps: float = _evaluate_option("eps", help="Radius ε of the ball (default: the run's)."),
    norm: str = _evaluate_option(
        "norm",
        help="The ball attacked, linf or l2: the run's own (a run is attacked in the ball it was "
        "trained against); with --model and no config.json, linf unless given.",
    ),
    restarts: int = _evaluate_option("restarts", help="PGD restarts R (worst of R per example)."),
    step_size: float = _evaluate_option(
        "step_size",
        help="PGD step (default: CIFAR L∞ 0.003 × ε / 0.031 (the paper), else 2.5 ε / k).",
    ),
    noise_samples: int = _evaluate_option("noise_samples", help="Random-noise draws per example."),
    surrogate: Path = _evaluate_option(
        "surrogate", path=True, help="Run folder of a transfer (black-box) source."
    ),
    attacker_from: list[Path] = _evaluate_option(
        "attacker_from", path=True, help="Also attack with this L2L run's g_φ."
    ),
    model: Path = _evaluate_option(
        "model",
        path=True,
        help="A state-dict file to evaluate instead of best.pt: a plain one, or a run's last.pt "
        "(θ as last trained; θ̄ for a run with --leader-ema, as best.pt).",
    ),
    dataset: str = _evaluate_option(
        "dataset", help="With --model and no config.json: the data set."
    ),
    arch: str = _evaluate_option("arch", help="With --model and no config.json: the architecture."),
    checklist: bool = _evaluate_option(
        "checklist", help="Run the gradient-masking checklist sweeps."
    ),
    aa_margin: float = _evaluate_option(
        "aa_margin", help="Largest PGD − AutoAttack gap that passes."
    ),
    compare: list[Path] = _evaluate_option(
        "compare",
        path=True,
        help="Run folders with an eval.json to show beside (of the same data set, number of "
        "examples, ball and ε).",
    ),
    seed: int = _evaluate_option("seed"),
    batch_size: int = _evaluate_option("batch_size"),
    device: str = _evaluate_option("device", help="auto, cpu or cuda."),
    data_dir: Path = path_option(
        None,
        help="Where CIFAR's files are (default: the run's --data-dir, which a relative path "
        "reads from the current folder); mnist5k is embedded.",
    ),
) -> None:
    """Attack a trained run on the test split; write eval.json, eval.md and plots into it."""
    check_paths(inputs={"--data-dir": data_dir})
    for option, given in (("--surrogate", [surrogate]), ("--attacker-from", attacker_from),
                          ("--model", [model]), ("--compare", compare)):  # fmt: skip
        for one in given:
            if one is not None:
                check_not_empty(one, option, "file" if option == "--model" else "folder")
    from problems.adversarial.evaluation import evaluate
    from problems.adversarial.evaluation.report import checklist_lines, read_eval, table_rows

    ev = evaluate(EvalOptions(
        run_dir, attacks, n_examples, eps, restarts, step_size, noise_samples, surrogate,
        attacker_from, model, dataset, arch, checklist, aa_margin, seed=seed,
        batch_size=batch_size, device=device, compare=compare, norm=norm, data_dir=data_dir,
    ), announce=lambda line: console.print(line, markup=False))  # fmt: skip
    evals = {str(run_dir): ev} | {str(p): read_eval(p) for p in compare}
    ball = "" if ev["norm"] == "linf" else "L2 "
    print_table(f"evaluate: {ev['dataset']} test, n = {ev['n_examples']}, {ball}ε = {ev['eps']:g}",
                table_rows(evals))  # fmt: skip
    for line in checklist_lines(ev):
        console.print(line, markup=False)
    console.print(f"written: {run_dir}/eval.json, eval.md, {', '.join(ev['plots'])}")
