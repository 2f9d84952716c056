"""The cost of each update mode as behaviour, not timings: how many passes each mode computes,
and what ``bench speed`` measures and writes (interleaved rounds, ratios, JSON, its limits)."""

from __future__ import annotations

import json
import statistics
from types import SimpleNamespace

import pytest
import torch
from helpers import TinyConvAttacker, image_batch
from typer.testing import CliRunner

from bilevel import JointTrainer, LearnedFollower
from cli import app
from problems.adversarial import speed
from problems.adversarial.defaults import MAX_PGD_STEPS
from problems.adversarial.dro import AdversarialDRO
from problems.adversarial.models import SmallCNN

EPS = 0.3


@pytest.mark.parametrize(
    ("steps", "update", "leader_passes", "attacker_passes"),
    [
        # gradient input at z0, θ's step, q at the updated θ (new θ: not a repeat)
        (1, "alternating", 3, 1),
        # gradient input at z0, one pass for θ and φ
        (1, "fused", 2, 1),
        # gradient inputs at z0 and z1, θ's step, q at the updated θ
        (2, "alternating", 4, 2),
        (2, "fused", 3, 2),
    ],
)
def test_no_pass_is_computed_twice(steps, update, leader_passes, attacker_passes) -> None:
    torch.manual_seed(0)
    model = SmallCNN()
    follower = LearnedFollower(TinyConvAttacker(2, 1, EPS), steps=steps)
    trainer = JointTrainer(
        AdversarialDRO(model, EPS), follower, torch.optim.SGD(model.parameters(), lr=0.01), update
    )
    assert _passes(trainer, image_batch(8)) == {
        "leader": leader_passes,
        "attacker": attacker_passes,
    }


def _passes(trainer: JointTrainer, batch) -> dict[str, int]:
    """The forward passes of the leader (the classifier) and of g_φ in one training step."""
    counts = {"leader": 0, "attacker": 0}
    for name, net in (("leader", trainer.problem.leader), ("attacker", trainer.follower.net)):
        net.register_forward_hook(lambda *_, name=name: counts.__setitem__(name, counts[name] + 1))
    trainer.step(batch)
    return counts


def test_a_timed_learned_step_takes_one_phi_step() -> None:
    """bench speed's 2-Step fused step is solve's (the (2, "fused") case above): a second φ step
    per batch would add a fresh solve and time a method solve does not train."""
    cfg = speed.SpeedConfig(model="small-cnn", batch_size=2, methods=("2-step-fused",))
    trainer, batch = speed.make_trainer("2-step-fused", cfg, torch.device("cpu"))
    assert _passes(trainer, batch) == {"leader": 3, "attacker": 2}


def test_bench_speed_interleaves_the_methods_and_writes_its_table(tmp_path, monkeypatch) -> None:
    order: list[str] = []
    make_trainer = speed.make_trainer

    def recording_make_trainer(method, cfg, device):
        trainer, batch = make_trainer(method, cfg, device)
        step = trainer.step
        trainer.step = lambda b: (order.append(method), step(b))[1]
        return trainer, batch

    monkeypatch.setattr(speed, "make_trainer", recording_make_trainer)
    out = tmp_path / "speed.json"
    args = ["bench", "speed", "--model", "small-cnn", "--batch-size", "4", "--batches", "1",
            "--rounds", "2", "--methods", "plain,pgm-10,grad-fused", "--json", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    methods = ["plain", "pgm-10", "grad-fused"]
    # one warm-up step each, then rounds A B C A B C (the peak-memory children are other processes)
    assert order == methods + methods + methods
    payload = json.loads(out.read_text())
    rows = {row["method"]: row for row in payload["rows"]}
    assert list(rows) == methods
    plain, pgm = rows["plain"]["round_seconds"], rows["pgm-10"]["round_seconds"]
    for row in rows.values():
        assert row["seconds_per_batch"] > 0 and row["peak_memory_mib"] >= 0
        assert len(row["round_seconds"]) == 2  # every round's seconds per batch
        median = statistics.median(row["round_seconds"])
        assert row["seconds_per_batch"] == float(f"{median:.4g}")  # 4 significant digits
        for key, reference in (("ratio_to_plain", plain), ("ratio_to_pgm10", pgm)):
            paired = [t / r for t, r in zip(row["round_seconds"], reference, strict=True)]
            assert row[key] == round(statistics.median(paired), 3), (key, row)
    assert payload["config"]["channels_last"] is True  # the measured-faster default
    assert payload["torch_threads"] == torch.get_num_threads()  # the count it was timed at


def test_bench_speed_ratios_pair_each_round_with_the_references_same_round(
    tmp_path, monkeypatch
) -> None:
    """A clock the stub trainers move on by scripted seconds per round. PGM-10 takes 1, 2, 4 s a
    batch and 2-Step 0.5, 3, 2 s: within each round 2-Step takes 0.5, 1.5, 0.5 times PGM-10's
    time, median 0.5; the two medians (2 and 2) would give 1.0, pairing rounds that ran at
    different loads. The seconds per batch stay each method's median, and the JSON keeps every
    round's."""
    scripted = {
        "plain": [1.0, 1.0, 1.0],
        "pgm-10": [1.0, 2.0, 4.0],
        "2-step-fused": [0.5, 3.0, 2.0],
    }
    clock = [0.0]

    class Stub:
        def __init__(self, method: str) -> None:
            # the warm-up step, then 2 batches a round (dyadic seconds: the sums are exact)
            self.seconds = iter([0.0] + [t for t in scripted[method] for _ in range(2)])

        def step(self, batch) -> None:
            clock[0] += next(self.seconds)

    monkeypatch.setattr(speed, "make_trainer", lambda method, cfg, device: (Stub(method), None))
    monkeypatch.setattr(speed, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    monkeypatch.setattr(speed, "peak_memory_mib", lambda *args: None)
    cfg = speed.SpeedConfig(
        model="small-cnn", batch_size=2, batches=2, rounds=3, methods=tuple(scripted)
    )
    out = tmp_path / "speed.json"
    rows = {row["method"]: row for row in speed.bench_speed(cfg, out)}
    default = rows["2-step-fused"]
    assert default["ratio_to_pgm10"] == 0.5
    assert default["ratio_to_plain"] == 2.0  # 0.5, 3, 2: median 2
    assert default["seconds_per_batch"] == 2.0 and rows["pgm-10"]["seconds_per_batch"] == 2.0
    assert rows["pgm-10"]["ratio_to_pgm10"] == 1.0 and rows["pgm-10"]["ratio_to_plain"] == 2.0
    written = {row["method"]: row for row in json.loads(out.read_text())["rows"]}
    assert {m: row["round_seconds"] for m, row in written.items()} == scripted


def test_bench_speed_rejects_an_unknown_method() -> None:
    result = CliRunner().invoke(app, ["bench", "speed", "--methods", "plain,pgm-0"])
    assert result.exit_code == 2
    assert "Unknown method 'pgm-0'" in result.output


def test_bench_speed_builds_learned_followers_with_the_levers_and_any_pgm_k() -> None:
    cfg = speed.SpeedConfig(
        model="small-cnn", batch_size=2, methods=("pgm-3", "2-step-fused"), attacker="slim",
        levers={"attacker_sign_step": 0.5, "unroll": 3},
    )  # fmt: skip
    pgm, _ = speed.make_trainer("pgm-3", cfg, torch.device("cpu"))
    assert pgm.follower.steps == 3 and not hasattr(pgm.follower, "sign_step")
    learned, _ = speed.make_trainer("2-step-fused", cfg, torch.device("cpu"))
    assert learned.follower.sign_step == 0.5 and learned.follower.steps == 3
    assert type(learned.follower.net).__name__ == "SlimAttacker"
    assert learned.update.value == "fused"


@pytest.mark.parametrize("model", ["small-cnn", "trades-cnn"])
def test_bench_speed_gives_the_digit_models_digits(model: str) -> None:
    """Both MNIST classifiers have heads sized for 28x28: a CIFAR-shaped batch cannot pass."""
    cfg = speed.SpeedConfig(model=model, batch_size=2, methods=("plain",))
    trainer, (x, y) = speed.make_trainer("plain", cfg, torch.device("cpu"))
    assert x.shape == (2, 1, 28, 28)
    assert trainer.problem.leader(x).shape == (2, 10)


@pytest.mark.parametrize("command", [["bench", "speed", "--model", "small-cnn"], ["bench", "ait"]])
def test_a_lever_of_the_wrong_type_is_one_sentence(command, tmp_path) -> None:
    out = ["--out", str(tmp_path / "runs")] if command[1] == "ait" else []
    args = [*command, *out, "--levers", '{"unroll": "x"}']
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "unroll must be a whole number" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("methods", [",", ""])
def test_bench_speed_refuses_an_empty_method_list_and_writes_nothing(methods, tmp_path) -> None:
    """',' measured nothing and overwrote --json with no rows; '' measured every method."""
    path = tmp_path / "speed.json"
    path.write_text("earlier measurement\n")
    args = ["bench", "speed", "--model", "small-cnn", "--methods", methods, "--json", str(path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "--methods names no method" in result.output, result.output
    assert path.read_text() == "earlier measurement\n"


def test_bench_speed_refuses_a_device_that_is_not_one() -> None:
    result = CliRunner().invoke(app, ["bench", "speed", "--model", "small-cnn", "--device", "gpu0"])
    assert result.exit_code == 2 and "Unknown --device 'gpu0'" in result.output, result.output


@pytest.mark.parametrize(
    ("option", "sentence"),
    [
        (["--batch-size", "60001"], "--batch-size takes 1 to 60,000 examples"),
        (["--batch-size", str(10**20)], "got 100,000,000,000,000,000,000."),  # past int64
        (["--methods", "pgm-10001"], "pgm-K takes K from 1 to 10,000 steps; got pgm-10001."),
    ],
)
def test_bench_speed_refuses_a_batch_or_a_pgm_k_past_its_limit(option, sentence, tmp_path) -> None:
    """A batch past MNIST's training set (a size past int64 was a traceback from torch.rand);
    a PGM-K of more steps than `evaluate`'s PGD takes, in bench's words (it has no --pgm-steps)."""
    path = tmp_path / "speed.json"
    args = ["bench", "speed", "--model", "small-cnn", "--methods", "plain", *option]
    result = CliRunner().invoke(app, [*args, "--json", str(path)])
    assert result.exit_code == 2 and sentence in result.output, result.output
    assert "--pgm-steps" not in result.output and not path.exists()


def test_levers_reach_the_learned_methods_of_a_mixed_list_and_not_the_references() -> None:
    """--levers with plain and PGM-10 beside a learned method are accepted (a learned one reads
    them), and shape that one alone: the references are timed as solve trains them."""
    levers = {"unroll": 3, "ascent_loss": "margin"}
    cfg = speed.SpeedConfig(
        model="small-cnn", batch_size=2, methods=("plain", "pgm-10", "2-step-fused"), levers=levers
    )
    speed.check_methods(cfg)
    trainers = {m: speed.make_trainer(m, cfg, torch.device("cpu"))[0] for m in cfg.methods}
    assert trainers["2-step-fused"].problem.ascent == "margin"
    assert trainers["2-step-fused"].follower.steps == 3
    assert trainers["plain"].problem.ascent == trainers["pgm-10"].problem.ascent == "ce"
    assert trainers["pgm-10"].follower.steps == 10


def _queued_work_bench(monkeypatch, cfg: speed.SpeedConfig, seconds: dict[str, float]):
    """``bench_speed`` on stub trainers whose step only queues ``seconds[method]`` of device work
    (as CUDA queues kernels): the clock reaches it at the next ``synchronize``. Returns the rows
    and how many steps each method took before the first timed one."""
    clock, queued, warm_up = [0.0], [0.0], {m: 0 for m in cfg.methods}

    class Stub:
        def __init__(self, method: str) -> None:
            self.method = method

        def step(self, batch) -> None:
            queued[0] += seconds[self.method]
            if not started:
                warm_up[self.method] += 1

    def synchronize(device) -> None:
        clock[0], queued[0] = clock[0] + queued[0], 0.0

    started = False

    def perf_counter() -> float:
        nonlocal started
        started = True
        return clock[0]

    monkeypatch.setattr(speed, "make_trainer", lambda method, cfg, device: (Stub(method), None))
    monkeypatch.setattr(speed, "synchronize", synchronize)
    monkeypatch.setattr(speed, "time", SimpleNamespace(perf_counter=perf_counter))
    monkeypatch.setattr(speed, "peak_memory_mib", lambda *args: None)
    return {row["method"]: row for row in speed.bench_speed(cfg)}, warm_up


def test_the_timed_seconds_are_the_device_s_work_and_not_the_warm_up_s(monkeypatch) -> None:
    """Each round waits for the device's queued work before it reads the clock, so a batch's
    seconds are its work (0.5 s, 2 s) and the ratio theirs (4); the warm-up's work, waited for
    before the first round, is in no round."""
    cfg = speed.SpeedConfig(model="small-cnn", batches=2, rounds=3, methods=("plain", "pgm-10"))
    rows, _ = _queued_work_bench(monkeypatch, cfg, {"plain": 0.5, "pgm-10": 2.0})
    assert rows["plain"]["round_seconds"] == [0.5] * 3
    assert rows["pgm-10"]["round_seconds"] == [2.0] * 3
    assert rows["pgm-10"]["ratio_to_plain"] == 4.0 and rows["plain"]["ratio_to_pgm10"] == 0.25


@pytest.mark.parametrize(("compile", "untimed"), [(False, 1), (True, 2)])
def test_compile_takes_a_second_untimed_step_before_the_rounds(monkeypatch, compile, untimed):
    """torch.compile compiles at the first step (and may recompile at the second): under
    --compile every method takes two steps before the timed rounds, else one."""
    cfg = speed.SpeedConfig(
        model="small-cnn", batches=1, rounds=1, compile=compile, methods=("plain", "fgsm-rs")
    )
    _, warm_up = _queued_work_bench(monkeypatch, cfg, {"plain": 1.0, "fgsm-rs": 1.0})
    assert warm_up == {"plain": untimed, "fgsm-rs": untimed}


def test_a_ratio_is_the_median_of_the_rounds_to_3_decimals_or_none() -> None:
    """1/3, 2/3 and 2/2 in the three rounds: median 2/3, kept to 3 decimals; a reference round
    that took no measurable time (a coarse clock) gives no ratio rather than a division by 0."""
    assert speed.paired_ratio([1.0, 2.0, 2.0], [3.0, 3.0, 2.0]) == 0.667
    assert speed.paired_ratio([1.0, 2.0], [0.0, 1.0]) is None
    assert speed.paired_ratio([1.0, 2.0], None) is None


def test_the_largest_batch_and_pgm_k_are_accepted(monkeypatch) -> None:
    """MNIST's whole training set is a batch, and pgm-K takes K up to evaluate's PGD limit; one
    past either is refused (above)."""
    big = f"pgm-{MAX_PGD_STEPS}"
    assert speed.step_options(big, speed.SpeedConfig()).pgm_steps == MAX_PGD_STEPS
    cfg = speed.SpeedConfig(batch_size=speed.MAX_BATCH_SIZE, batches=1, rounds=1,
                            methods=("plain", big))  # fmt: skip
    rows, _ = _queued_work_bench(monkeypatch, cfg, {"plain": 1.0, big: 2.0})
    assert rows[big]["ratio_to_plain"] == 2.0
