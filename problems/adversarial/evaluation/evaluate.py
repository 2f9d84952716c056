"""``evaluate RUN_DIR``: attack a run's selected classifier on the TEST split with every attack
asked for, in the ε-ball of the run's threat model (L∞ or L2, ``runs.threat_model``), report each
attack's accuracy and the per-example worst case

    robust accuracy = (1/n) Σ_i min_{a ∈ attacks ∪ {clean}} 1[f(x_i^a) = y_i],

run the gradient-masking checklist (Carlini et al. 2019) and write ``eval.json`` (every number and
every attack's settings, per-example results included), ``eval.md`` and plots into the run folder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bilevel.acceleration import resolve_device
from bilevel.errors import UserError, require_counts
from bilevel.norms import Norm
from bilevel.options import check_numbers
from bilevel.paths import check_not_empty, check_output_folder
from bilevel.run import RunDir
from bilevel.seeding import seeded
from problems.adversarial.config import LEARNED
from problems.adversarial.data import load_dataset, subset
from problems.adversarial.defaults import madry_step
from problems.adversarial.evaluation import checklist as cl
from problems.adversarial.evaluation.attacks import (
    Attack,
    AttackResult,
    pgd_attack,
    predict,
    run_attack,
    share,
)
from problems.adversarial.evaluation.autoattack_adapter import AutoAttackAdapter
from problems.adversarial.evaluation.report import check_compared, check_eval_files, write_outputs
from problems.adversarial.evaluation.runs import (
    learned_attack_loss,
    load_classifier,
    load_learned_attacker,
    threat_model,
)
from problems.adversarial.evaluation.suite import SuiteOptions, attack_names, build_attack

STEPS_GRID = (10, 20, 50, 100)
EPS_FRACTIONS = (0.25, 0.5, 1.0)
# the sweep's large ε, by norm and input channels (digits, CIFAR): one where an attack should
# reach chance (Carlini et al. 2019). L2: ~3x the L2 radius of digits (Schott et al. 2019's 1.5:
# 5.0 redraws part of a stroke) and 5x RobustBench's CIFAR-10 radius 0.5
LARGE_EPS = {Norm.LINF: {1: 0.5, 3: 0.3}, Norm.L2: {1: 5.0, 3: 2.5}}


@dataclass
class EvalOptions:
    """Every option of ``evaluate``; ``None`` means "the run's value"."""

    run_dir: Path
    attacks: str = "default"
    n_examples: int | None = None
    eps: float | None = None
    restarts: int = 1
    step_size: float | None = None
    noise_samples: int = 100
    surrogate: Path | None = None
    attacker_from: list[Path] = field(default_factory=list)
    model: Path | None = None
    dataset: str | None = None  # mnist5k, for a --model file where no config.json is
    arch: str | None = None
    checklist: bool = True
    aa_margin: float = 0.02
    steps_grid: tuple[int, ...] = STEPS_GRID
    tolerance: float = 0.005
    seed: int = 0
    batch_size: int = 500
    device: str = "auto"
    compare: list[Path] = field(default_factory=list)
    norm: str | None = None  # linf or l2; None: the run's (a plain model file's: linf)
    data_dir: Path | None = None  # CIFAR's folder; None: the run's recorded --data-dir


class Evaluator:
    """Runs attacks with a fixed seed each (so PGD-20 and PGD-100 share their random starts) and
    remembers results by name and settings, so the checklist reuses what the table computed.
    ``announce`` gets one line per attack run (its accuracy and seconds)."""

    def __init__(
        self, model: torch.nn.Module, x: Tensor, y: Tensor, seed: int, batch: int,
        announce: Callable[[str], None] | None = None,
    ) -> None:  # fmt: skip
        self.model, self.x, self.y, self.seed, self.batch = model, x, y, seed, batch
        self.announce = announce or (lambda line: None)
        self._cache: dict[str, AttackResult] = {}

    def run(self, attack: Attack, seed_offset: int = 0) -> AttackResult:
        params = attack.params()  # once: AutoAttack's builds the whole attack to read them
        key = f"{attack.name}|{sorted(params.items())!r}|{seed_offset}"
        if key not in self._cache:
            with seeded(self.seed + seed_offset):
                result = run_attack(attack, self.model, self.x, self.y, self.batch, params=params)
                self._cache[key] = result
            eps = f" at ε {params['eps']:g}" if isinstance(params.get("eps"), float) else ""
            self.announce(
                f"  {attack.name}{eps}: accuracy {result.accuracy:.3f}, {result.seconds:.1f} s"
            )
        return self._cache[key]


def _check_options(o: EvalOptions, norm: Norm) -> None:
    """The options' values (ε is ``threat_model``'s); an L2 step may exceed 1, an L∞ one not."""
    check_numbers(o)
    linf = norm is Norm.LINF
    if o.step_size is not None and not (o.step_size > 0 and (o.step_size <= 1 or not linf)):
        bound = "in (0, 1]" if linf else "positive"
        raise UserError(f"--step-size must be {bound}; got {o.step_size}.")
    if o.aa_margin < 0:
        raise UserError(f"--aa-margin must be at least 0; got {o.aa_margin}.")


def evaluate(o: EvalOptions, announce: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Evaluate one run (see the module docstring); returns what ``eval.json`` holds.

    The test examples are the first ``o.n_examples``, else the run's ``--eval-size``, else all.
    ``announce`` (e.g. ``print``) gets a line saying what will run, then one per attack.
    """
    check_not_empty(o.run_dir, "RUN_DIR")  # Path("") would be the current folder
    require_counts(o, ("n_examples", "restarts", "noise_samples", "batch_size"))
    device = resolve_device(o.device)
    run_dir = Path(o.run_dir)
    loaded = load_classifier(run_dir, o.model, o.dataset, o.arch, device)
    model, info, config = loaded.model, loaded.info, loaded.config
    norm, eps = threat_model(config, info.name, o.norm, o.eps, run_dir)
    _check_options(o, norm)
    check_output_folder(run_dir, "RUN_DIR")  # eval.json and the plots go there
    check_eval_files(run_dir)
    test = load_dataset(info.name, o.data_dir or config.get("data_dir", "./data")).test
    n_examples = o.n_examples or config.get("eval_size")
    x, y = subset(test, n_examples) if n_examples else test
    x, y = x.to(device), y.to(device)
    this = {"dataset": info.name, "n_examples": len(y), "norm": norm.value, "eps": eps}
    check_compared(o.compare, this)

    suite = SuiteOptions(
        eps=eps, cifar=info.name != "mnist5k", norm=norm, restarts=o.restarts,
        step_size=o.step_size, noise_samples=o.noise_samples, seed=o.seed, batch_size=o.batch_size,
    )  # fmt: skip
    if o.model is None and config.get("follower") in LEARNED:  # an L2L run's own g_φ
        suite.learned, suite.learned_source = load_learned_attacker(run_dir, device), str(run_dir)
        suite.learned_losses[str(run_dir)] = learned_attack_loss(run_dir)
    for other in o.attacker_from:
        suite.other_learned[str(other)] = load_learned_attacker(Path(other), device)
        suite.learned_losses[str(other)] = learned_attack_loss(Path(other))
    if o.surrogate is not None:
        suite.surrogate = load_classifier(Path(o.surrogate), device=device).model
        suite.surrogate_source = str(o.surrogate)
    attacks = [build_attack(name, suite) for name in attack_names(o.attacks, suite)]
    if announce is not None:
        given = "--n-examples" if o.n_examples else "the run's --eval-size" if n_examples else "all"
        sweeps = " and the checklist's PGD sweeps" if o.checklist else ""
        announce(
            f"evaluate: {len(y)} test examples ({given}), {len(attacks)} "
            f"attack{'s' if len(attacks) != 1 else ''}{sweeps}; "
            "the time grows with the examples, each attack's is shown as it ends"
        )
    out, results = evaluate_model(
        model, x, y, attacks, suite, info.num_classes, info.in_channels, o, announce
    )
    out = {
        "run": str(run_dir),
        "checkpoint": str(loaded.checkpoint),
        "weights": loaded.weights,
        "dataset": info.name,
        "model": type(model).__name__,
        "split": "test",
    } | out
    write_outputs(RunDir(run_dir), out, x.cpu(), results, o.compare)
    return out


def evaluate_model(
    model: torch.nn.Module, x: Tensor, y: Tensor, attacks: list[Attack], suite: SuiteOptions,
    num_classes: int, in_channels: int, o: EvalOptions,
    announce: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], list[AttackResult]]:  # fmt: skip
    """Every attack on (x, y), the per-example worst case and, if ``o.checklist``, the sweeps and
    the checklist; no files are written."""
    evaluator = Evaluator(model, x, y, o.seed, o.batch_size, announce)
    clean = predict(model, x, o.batch_size) == y
    results = [evaluator.run(a) for a in attacks]
    worst = cl.all_correct([clean.cpu(), *(r.correct for r in results)])
    out: dict[str, Any] = {
        "n_examples": len(y),
        "norm": suite.norm.value,
        "eps": suite.eps,
        "seed": o.seed,
        "clean_acc": share(clean),
        "clean_correct": _bits(clean),
        "attacks": [_attack_entry(a, r) for a, r in zip(attacks, results, strict=True)],
        "worst_case": {
            "accuracy": share(worst),
            "over": ["clean", *[r.name for r in results]],
            "correct": _bits(worst),
        },
    }
    if o.checklist:
        sweeps = _sweeps(evaluator, suite, in_channels, o.restarts, o.steps_grid)
        checks = _checklist(attacks, results, sweeps, len(y), num_classes, o)
        out["sweeps"], out["checklist"] = sweeps, [asdict(c) for c in checks]
    return out, results


def _bits(flags: Tensor) -> str:
    return "".join("1" if f else "0" for f in flags.tolist())


def _attack_entry(attack: Attack, result: AttackResult) -> dict[str, Any]:
    entry = {
        "name": result.name,
        "white_box": attack.white_box,
        "params": result.params,
        "accuracy": result.accuracy,
        "seconds": round(result.seconds, 2),
        "max_perturbation": result.max_perturbation,  # in L∞ and L2, whichever ball was attacked
        "correct": _bits(result.correct),
    }
    if isinstance(attack, AutoAttackAdapter):
        entry["broken_by_component"] = attack.broken_counts()
        entry["package_warnings"] = attack.warnings
    return entry


def _sweeps(
    ev: Evaluator, suite: SuiteOptions, channels: int, restarts: int, steps_grid: tuple[int, ...]
) -> dict[str, Any]:
    """PGD-CE accuracy over steps (same seed), restarts (fresh seeds) and ε (a grid up to a
    large ε), all in the suite's ball; the inputs of the checklist and of the Figure 3 plot."""
    eps, norm = suite.eps, suite.norm
    steps = [ev.run(pgd_attack(k, eps, suite.pgd_step(k), "ce", 1, norm)) for k in steps_grid]
    counts = sorted({1, max(restarts, 3)})
    rs = [ev.run(pgd_attack(20, eps, suite.pgd_step(20), "ce", r, norm), 1000 * r) for r in counts]
    large = max(LARGE_EPS[norm].get(channels, LARGE_EPS[norm][3]), eps)
    grid = sorted({*(f * eps for f in EPS_FRACTIONS), (eps + large) / 2, large})
    eps_runs = [ev.run(pgd_attack(20, e, madry_step(e, 20), "ce", 1, norm)) for e in grid]
    return {
        "steps": _curve(steps_grid, steps),
        "restarts": _curve(counts, rs),
        "eps": _curve(grid, eps_runs),
        "large_eps": large,
    }


def _curve(xs: Any, results: list[AttackResult]) -> dict[str, Any]:
    """One sweep: its x values, the accuracy at each and the settings of the last attack."""
    return {"x": list(xs), "acc": [r.accuracy for r in results], "params": results[-1].params}


def _checklist(
    attacks: list[Attack], results: list[AttackResult], sweeps: dict[str, Any], n: int,
    num_classes: int, o: EvalOptions,
) -> list[cl.Check]:  # fmt: skip
    """The lines of Carlini et al. (2019)'s checklist from the table's results and the sweeps."""
    tol = o.tolerance
    white, black = {}, {}  # attack name → per-example correctness
    for attack, r in zip(attacks, results, strict=True):
        if isinstance(attack, AutoAttackAdapter):
            # an example Square broke is one every earlier (gradient) component left correct
            square = torch.tensor([b == "square" for b in attack.broken_by], dtype=torch.bool)
            if "square" in attack.components:
                black[f"square (in {r.name})"] = ~square
            if attack.white_box:
                white[r.name + " (gradient parts)"] = r.correct | square
        else:
            (white if attack.white_box else black)[r.name] = r.correct
    correct = {r.name: r.correct for r in results}
    iterative = {k: c for k, c in correct.items() if k.startswith("pgd") or k == "cw-linf"}
    pgd = {r.name: r.accuracy for r in results if r.name.startswith("pgd")}
    # the strongest AutoAttack run (a lone Square is one too, and may come first in the list)
    aa = [(a, r) for a, r in zip(attacks, results, strict=True) if isinstance(a, AutoAttackAdapter)]
    aa.sort(key=lambda pair: pair[1].accuracy)
    aa_acc = aa[0][1].accuracy if aa else None
    s = sweeps
    return [
        cl.check_non_increasing("more PGD steps do not raise accuracy", s["steps"]["x"], s["steps"]["acc"], n, tol),
        cl.check_non_increasing("more restarts do not raise accuracy", s["restarts"]["x"], s["restarts"]["acc"], n, tol),
        cl.check_non_increasing("accuracy falls monotonically as ε rises", [f"{e:.3g}" for e in s["eps"]["x"]], s["eps"]["acc"], n, tol),
        cl.check_reaches_chance(s["large_eps"], s["eps"]["acc"][-1], num_classes, n, tol),
        cl.check_white_beats_black(white, black, tol),
        cl.check_iterative_beats_fgsm(iterative, correct.get("fgsm"), tol),
        cl.check_autoattack_margin(aa_acc, pgd, o.aa_margin, aa[0][0].name if aa else ""),
    ]  # fmt: skip
