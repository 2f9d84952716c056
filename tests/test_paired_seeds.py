"""benchmarks/paired_seeds.py: the seed-by-seed comparison the README's nine-seed table quotes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers import load_script


def load_benchmark():
    return load_script("benchmarks", "paired_seeds")


def write_run(folder: Path, aa: float, clean: float = 0.97, beyond: float | None = 0.01) -> None:
    folder.mkdir(parents=True)
    row = {"autoattack_acc": aa, "clean_acc": clean}
    if beyond is not None:
        row["aa_beyond_apgd"] = beyond
    (folder / "bench-eval.json").write_text(json.dumps({"row": row}))
    (folder / "study-eval.json").write_text(json.dumps({"val_apgd_ce_t_acc": aa + 0.02}))
    (folder / "results.json").write_text(json.dumps({"train_cpu_seconds": 100.0}))


def test_the_paired_difference_its_standard_error_and_the_apgd_column(tmp_path, capsys) -> None:
    script = load_benchmark()
    a_acc, b_acc = [0.70, 0.75, 0.80], [0.73, 0.76, 0.85]  # differences 3, 1 and 5 points
    for s, (a, b) in enumerate(zip(a_acc, b_acc, strict=True)):
        write_run(tmp_path / "a" / f"seed-{s}", a)
        write_run(tmp_path / "b" / f"seed-{s}", b, beyond=0.02)
    out = tmp_path / "cmp.json"
    assert (
        script.main(
            [str(tmp_path / "a"), str(tmp_path / "b"), "--seeds", "0,1,2", "--json", str(out)]
        )
        == 0
    )
    aa = json.loads(out.read_text())["test AutoAttack"]
    assert aa["diff_mean"] == pytest.approx(0.03)
    assert aa["diff_se"] == pytest.approx(0.02 / math.sqrt(3))  # std of (3, 1, 5) points is 2
    assert aa["b_ahead"] == 3 and aa["a_std"] == pytest.approx(0.05)
    apgd = json.loads(out.read_text())["test APGD-CE+T"]
    assert apgd["a_per_seed"] == pytest.approx(
        [0.71, 0.76, 0.81]
    )  # AutoAttack + what FAB/Square took
    assert apgd["diff_mean"] == pytest.approx(0.04)
    assert "B ahead on 3 of 3" in capsys.readouterr().out


def test_an_older_run_takes_its_apgd_figure_from_the_apgd_root_or_says_it_cannot(
    tmp_path, capsys
) -> None:
    script = load_benchmark()
    write_run(tmp_path / "aa" / "m" / "seed-0", 0.70, beyond=None)
    with pytest.raises(SystemExit) as refused:
        script.read_run(tmp_path / "aa" / "m" / "seed-0", None)
    assert refused.value.code == 2 and "--apgd-root" in capsys.readouterr().err
    older = tmp_path / "apgd" / "m" / "seed-0"
    older.mkdir(parents=True)
    (older / "bench-eval.json").write_text(json.dumps({"row": {"apgd_ce_t_acc": 0.72}}))
    assert (
        script.read_run(tmp_path / "aa" / "m" / "seed-0", tmp_path / "apgd")[0]["test APGD-CE+T"]
        == 0.72
    )


def test_students_t_matches_its_closed_form_at_two_degrees_of_freedom() -> None:
    """With n = 3 seeds the t distribution has 2 degrees of freedom, where its CDF is closed:
    F(t) = 1/2 + t / (2 √(2 + t²)), so p = 1 − |t| / √(2 + t²), and the 0.975 quantile is
    a √(2 / (1 − a²)) with a = 0.95; a negative mean has the same p."""
    script = load_benchmark()
    for sign in (1, -1):
        diffs = [sign * d for d in (0.03, 0.01, 0.05)]  # mean ±3 points, std 2, SE 2/√3
        out = script.paired_t(diffs)
        t = sign * 0.03 / (0.02 / math.sqrt(3))
        assert out["diff_t"] == pytest.approx(t)
        assert out["diff_p_two_sided"] == pytest.approx(1 - abs(t) / math.sqrt(2 + t * t))
        half = 0.95 * math.sqrt(2 / (1 - 0.95**2)) * 0.02 / math.sqrt(3)
        assert out["diff_ci95"] == pytest.approx([sign * 0.03 - half, sign * 0.03 + half])


def test_the_seeds_for_80_percent_power_follow_the_normal_approximation() -> None:
    """n = ((z_0.975 + z_0.8) σ / |mean − margin|)²: σ = 2 points and a mean 1 point from the
    margin need ((1.96 + 0.84) · 2)² = 31.4, so 32 seeds; never fewer than 2, and none at all
    where the mean sits on the margin."""
    script = load_benchmark()
    assert script.paired_t([0.03, 0.01, 0.05], margin=0.02)["seeds_for_80pct_power_at_margin"] == 32
    assert script.paired_t([0.03, 0.01, 0.05], margin=-0.5)["seeds_for_80pct_power_at_margin"] == 2
    same = script.paired_t([0.02, 0.02, 0.02], margin=0.02)
    assert same["seeds_for_80pct_power_at_margin"] is None and same["diff_t"] is None
    with pytest.raises(ValueError, match="at least 2 seeds"):
        script.paired_t([0.01])


def test_a_difference_without_spread_is_certain_unless_it_is_zero() -> None:
    """Every seed the same difference: no t; p 0 for a non-zero difference, 1 for none."""
    script = load_benchmark()
    assert script.paired_t([0.02, 0.02, 0.02])["diff_p_two_sided"] == 0.0
    assert script.paired_t([0.0, 0.0, 0.0])["diff_p_two_sided"] == 1.0


def test_a_tied_seed_does_not_count_as_b_ahead() -> None:
    script = load_benchmark()
    a = [{column: 0.5 for column in script.FIELDS} for _ in range(3)]
    b = [{column: 0.5 + d for column in script.FIELDS} for d in (0.01, 0.0, -0.01)]
    assert {row["b_ahead"] for row in script.compare(a, b).values()} == {1}


def _pair(tmp_path: Path, a_acc: list[float], b_acc: list[float]) -> list[str]:
    for s, (a, b) in enumerate(zip(a_acc, b_acc, strict=True)):
        write_run(tmp_path / "a" / f"seed-{s}", a)
        write_run(tmp_path / "b" / f"seed-{s}", b)
    return [str(tmp_path / "a"), str(tmp_path / "b")]


def test_a_seed_named_twice_is_refused(tmp_path, capsys) -> None:
    """Counted twice, three seeds read as six: p fell from 0.12 to 0.009."""
    args = _pair(tmp_path, [0.70, 0.75, 0.80], [0.73, 0.76, 0.85])
    with pytest.raises(SystemExit) as refused:
        load_benchmark().main([*args, "--seeds", "0,0,1,1,2,2"])
    assert refused.value.code == 2 and "twice" in capsys.readouterr().err


@pytest.mark.parametrize("file", ["bench-eval.json", "study-eval.json"])
def test_runs_measured_otherwise_are_not_paired(tmp_path, capsys, file: str) -> None:
    """A seed judged on 200 test or validation digits where the others took the whole split."""
    args = _pair(tmp_path, [0.70, 0.75, 0.80], [0.73, 0.76, 0.85])
    for folder in [*(tmp_path / "a").iterdir(), *(tmp_path / "b").iterdir()]:
        data = json.loads((folder / file).read_text())
        odd = folder.name == "seed-1" and folder.parent.name == "b"
        if file == "bench-eval.json":
            data["asked"] = {"aa": "standard", "eval_size": 200 if odd else None}
        else:
            data["val_examples"] = 200 if odd else 500
        (folder / file).write_text(json.dumps(data))
    with pytest.raises(SystemExit) as refused:
        load_benchmark().main([*args, "--seeds", "0,1,2"])
    assert refused.value.code == 2 and "measured otherwise" in capsys.readouterr().err


def test_the_same_count_of_digits_stored_with_float32_noise_is_no_difference(tmp_path) -> None:
    """759 of 1,000 digits as two float32 means off in the eighth decimal: without rounding,
    every seed differed by the same −2.9e-8, so 'no spread' gave p 0 and a certain difference."""
    script = load_benchmark()
    for s in range(3):
        write_run(tmp_path / "a" / f"seed-{s}", 0.7590000033, beyond=0.0)
        write_run(tmp_path / "b" / f"seed-{s}", 0.7589999742, beyond=0.0)
    out = tmp_path / "cmp.json"
    script.main([str(tmp_path / "a"), str(tmp_path / "b"), "--seeds", "0,1,2", "--json", str(out)])
    aa = json.loads(out.read_text())["test AutoAttack"]
    assert aa["diff_mean"] == 0 and aa["diff_p_two_sided"] == 1.0


def test_the_margin_applies_to_the_robust_columns_only() -> None:
    script = load_benchmark()
    a = [{c: 0.5 + 0.01 * i for c in script.FIELDS} for i in range(3)]
    b = [{c: 0.52 + 0.013 * i for c in script.FIELDS} for i in range(3)]
    out = script.compare(a, b, margin=0.02)
    assert all("margin" in out[c] for c in script.ROBUST)
    assert "margin" not in out["test clean"] and "margin" not in out["train CPU s"]


def test_apgd_figures_from_the_apgd_root_pair_with_runs_that_carry_their_own(tmp_path) -> None:
    """A's APGD figure read from --apgd-root (asked recorded there), B's from its own cascade:
    one source a side is no mismatch."""
    for family, beyond in (("a", None), ("b", 0.01)):
        for s in (0, 1):
            write_run(tmp_path / family / f"seed-{s}", 0.7 + 0.01 * s, beyond=beyond)
    for s in (0, 1):
        older = tmp_path / "apgd" / "a" / f"seed-{s}"
        older.mkdir(parents=True)
        row = {"row": {"apgd_ce_t_acc": 0.72}, "asked": {"aa": "apgd-ce-t"}}
        (older / "bench-eval.json").write_text(json.dumps(row))
    args = [str(tmp_path / "a"), str(tmp_path / "b"), "--seeds", "0,1"]
    assert load_benchmark().main([*args, "--apgd-root", str(tmp_path / "apgd")]) == 0
