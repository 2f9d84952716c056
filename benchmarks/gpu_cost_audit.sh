#!/usr/bin/env bash
# Why the small CNN's step costs more than half of PGM-10's on a GPU, in one script of about 4
# minutes on an H200 (from the repository root): bash benchmarks/gpu_cost_audit.sh [OUT] | tee LOG
#   1. gpu_profile.py: kernel time against wall time, launches and host waits of one training step,
#      per method, on the small CNN at batch 64 in the format bench dro trains in (contiguous), for
#      the default and for the pointwise attacker at 0.25ε, then at CIFAR shape (PreAct-18, 128),
#      beside bench speed's figure for that step;
#   2. the same audit of host waits over a whole epoch of `solve adversarial-dro` (the default, then
#      PGM-10), with the carry, the ε warm-up and the batches, which bench speed leaves out;
#   3. bench dro, seed 0, trained end to end: FGSM-RS, PGM-10, the default and the pointwise
#      attacker at 0.25ε side by side (clean and PGD-40 on the test split, training seconds).
# Packages missing on the GPU image go in .devsite/ as for gpu_check.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/gpu-audit}"
source benchmarks/gpu_preamble.sh
timeout 60 "$PY" benchmarks/gpu_profile.py --no-channels-last \
  --json "$out/profile-small-cnn-b64.json" || failed "profile (small CNN)" $?
timeout 40 "$PY" benchmarks/gpu_profile.py --no-channels-last --methods 2-step-fused \
  --attacker pointwise --levers '{"attacker_sign_step": 0.25}' \
  --json "$out/profile-small-cnn-b64-pointwise.json" || failed "profile (pointwise)" $?
timeout 60 "$PY" benchmarks/gpu_profile.py --model preact-resnet18 --batch-size 128 \
  --json "$out/profile-preact18-b128.json" || failed "profile (PreAct-18)" $?
# bench speed's per-batch figure for the same step (gpu_check.sh's), beside the profile's
timeout 90 "$PY" cli.py bench speed --device cuda --attacker slim --attacker-width 0.0625 \
  --batch-size 128 --batches 5 --rounds 3 --methods fgsm-rs,pgm-10,2-step-fused \
  --levers "$levers" \
  --json "$out/speed-l2l-b128.json" || failed "bench speed (PreAct-18)" $?
for follower in 2-step pgm; do
  timeout 60 "$PY" benchmarks/gpu_profile.py \
    --solve "--follower $follower --epochs 1 --seed 0 --out $out/audit-$follower" ||
    failed "loop audit ($follower)" $?
done
timeout 240 "$PY" cli.py bench dro --grid benchmarks/l2l/gpu-cost-seed0.json --no-autoattack \
  --reuse --out "$out/bench-dro" --json "$out/bench-dro.json" || failed "bench dro" $?
finish  # exit 1 if any step failed: a lease's partial results must not look complete
