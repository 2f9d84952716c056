"""benchmarks/gpu_profile.py: the GPU profile of a training step, checked on the CPU."""

from __future__ import annotations

import json
from types import SimpleNamespace

import torch
from helpers import load_script

from problems.adversarial.speed import mnist5k_step_levers


def load_benchmark():
    return load_script("benchmarks", "gpu_profile")


def test_optimizer_ranges_are_not_counted_as_kernels():
    """record_function ranges (an optimizer's step) span their kernels on the device timeline;
    counting them too would double the optimizer's kernel time."""
    script = load_benchmark()
    assert script._annotation(SimpleNamespace(key="Optimizer.step#Adam.step"))
    assert script._annotation(SimpleNamespace(key="anything", is_user_annotation=True))
    assert not script._annotation(SimpleNamespace(key="void cudnn::detail::dgrad_engine<float>"))


def test_host_waits_counts_cuda_sync_warnings_by_line_and_nothing_else():
    """CUDA's sync debug mode warns "called a synchronizing CUDA operation" at the Python line
    that waited; other warnings are not waits."""
    import warnings

    script = load_benchmark()
    with script.host_waits() as found:
        for _ in range(2):
            warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=1)
        warnings.warn("something else", UserWarning, stacklevel=1)
    assert sum(found.values()) == 2 and len(found) == 1
    assert next(iter(found)).startswith("test_gpu_profile.py:")


def test_levers_override_the_mnist5k_default_and_keep_the_rest(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    script = load_benchmark()
    seen = []
    make_trainer = script.make_trainer

    def spy(method, cfg, device):  # noqa: ANN001, ANN202
        seen.append(dict(cfg.levers))
        return make_trainer(method, cfg, device)

    monkeypatch.setattr(script, "make_trainer", spy)
    out = tmp_path / "profile.json"
    argv = ["--methods", "pgm-1,2-step-fused", "--batch-size", "2", "--steps", "1"]
    assert script.main([*argv, "--levers", '{"attacker_sign_step": 0.25}', "--json", str(out)]) == 0
    assert seen[1]["attacker_sign_step"] == 0.25
    assert set(seen[1]) == set(mnist5k_step_levers())
    rows = json.loads(out.read_text())["rows"]
    assert [row["method"] for row in rows] == ["pgm-1", "2-step-fused"]
    assert all(row["wall_s"] > 0 for row in rows)
    if not torch.cuda.is_available():  # kernel time is a GPU's alone
        assert all(row["kernel_s"] is None and row["launches"] is None for row in rows)


def test_bad_levers_or_a_solve_audit_without_a_gpu_is_one_sentence_and_exit_2(capsys):
    script = load_benchmark()
    assert script.main(["--levers", "{bad"]) == 2
    assert "--levers is not JSON" in capsys.readouterr().err
    assert script.main(["--levers", "[1]"]) == 2
    assert "must be a JSON object" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert script.main(["--solve", "--epochs 1"]) == 2
        assert "needs a GPU" in capsys.readouterr().err
