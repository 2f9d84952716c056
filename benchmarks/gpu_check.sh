#!/usr/bin/env bash
# Everything a GPU lease checks, in one script of about 6 minutes on an H200 (run it from the
# repository root on a CUDA machine): bash benchmarks/gpu_check.sh [OUT_FOLDER] | tee LOG
#   0. the tests that only a GPU runs (the CUDA generator's seeding; the profile's kernel times);
#   1. gpu_speed.sh: the paper's Table 3 setting (WRN-34-10, full-width Table 1 attacker, batch 128),
#      float32 and bf16 autocast;
#   2. the default L2L attacker (slim x0.0625, random start, sign step 0.625 ε, truncated unroll)
#      against FGSM-RS and PGM-10 per batch at CIFAR shape (PreAct-18, batch 128) on the GPU;
#   3. bench dro on mnist5k, seed 0, trained end to end on the GPU (benchmarks/l2l/gpu-cost-seed0.json:
#      FGSM-RS, PGM-10, the default 2-Step L2L and the pointwise attacker at 0.25ε, the GPU's cost
#      lever), with clean, PGD-40 and APGD-CE + APGD-T accuracy on the test split and training
#      seconds. Standard AutoAttack took over 2 minutes per model there (Square's 5,000 queries are
#      bound by Python's overhead), too long for one lease. It runs before the per-batch steps
#      below, so that a lease cut short still has the end-to-end figures;
#   4. the same per batch on the small CNN at mnist5k's batch 64, where the attacker costs as much
#      as the classifier (the carry is not in bench speed), in channels_last and, as bench dro
#      trains mnist5k, in the contiguous format;
#   5. the same for the pointwise attacker at 0.25ε (contiguous), which tied the default on
#      validation with fewer operators.
# Measured 2026-12-04 (H200), by the script as it then was (bench dro last, on --methods
# fgsm,pgm,2-step, without the GPU-only tests): benchmarks/results/gpu/ (docs/results.md, "On a GPU").
# Packages missing on the GPU image (mlxtend, higher, pyautoattack, gymnasium, farama-notifications:
# all pure Python) may sit unpacked in .devsite/, which goes on PYTHONPATH; made on a machine with
# pip: `pip download --no-deps --only-binary=:all: -d .whl NAME...`, then `unzip` each wheel into
# .devsite/ (pyautoattack's examples/ folder, a 44 MB model, can go).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/gpu}"
source benchmarks/gpu_preamble.sh
timeout 90 "$PY" -m pytest -q -p no:cacheprovider tests/test_seeding.py tests/test_gpu_profile.py ||
  failed "the GPU's tests" $?
PY="$PY" bash benchmarks/gpu_speed.sh "$out/gpu_speed" || failed "gpu_speed.sh" $?
timeout 90 "$PY" cli.py bench speed --device cuda --attacker slim --attacker-width 0.0625 \
  --batch-size 128 --batches 5 --rounds 3 --methods fgsm-rs,pgm-10,2-step-fused \
  --levers "$levers" --json "$out/speed-l2l-b128.json" || failed "bench speed (L2L)" $?
timeout 240 "$PY" cli.py bench dro --grid benchmarks/l2l/gpu-cost-seed0.json --aa apgd-ce-t \
  --reuse --out "$out/bench-dro" --json "$out/bench-dro-apgd.json" || failed "bench dro" $?
for format in channels-last no-channels-last; do  # the second is the format bench dro trains in
  name="speed-small-cnn-b64$([ "$format" = no-channels-last ] && echo -contiguous)"
  timeout 60 "$PY" cli.py bench speed --device cuda --model small-cnn --attacker slim \
    --attacker-width 0.0625 --batch-size 64 --batches 10 --rounds 3 "--$format" \
    --methods fgsm-rs,pgm-10,2-step-fused --levers "$levers" --json "$out/$name.json" ||
    failed "bench speed (small CNN, $format)" $?
done
# the coordinate-wise attacker at 0.25ε, which tied the default on validation (study steps 26-27)
# with 0.48x PGM-10's operators a step: 0.40x and 0.53x a step in two leases' profiles (gpu_cost_audit.sh)
timeout 60 "$PY" cli.py bench speed --device cuda --model small-cnn --attacker pointwise \
  --attacker-width 0.0625 --batch-size 64 --batches 10 --rounds 3 --no-channels-last \
  --methods fgsm-rs,pgm-10,2-step-fused --levers '{"attacker_random_start": true, "attacker_sign_step": 0.25, "truncated_unroll": true}' \
  --json "$out/speed-small-cnn-b64-pointwise.json" || failed "bench speed (pointwise)" $?
finish  # exit 1 if any step failed: a lease's partial results must not look complete
