#!/usr/bin/env bash
# The paper's Table 3 setting on one GPU, in at most ~5 minutes: WRN-34-10 leader, the full-width
# Table 1 attacker, batch 128, every method interleaved; writes its tables as JSON, in float32 and
# with bf16 autocast (--amp). channels_last is bench speed's default.
# Usage (on a CUDA machine, from the repository root): bash benchmarks/gpu_speed.sh [OUT_PREFIX]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/gpu_speed}"
mkdir -p "$(dirname "$out")"
PY="${PY:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
args=(cli.py bench speed --device cuda --model wrn-34-10 --attacker cnn --attacker-width 1.0
  --batch-size 128 --batches 3 --rounds 3)
timeout 150 "$PY" "${args[@]}" --json "$out.json"
timeout 150 "$PY" "${args[@]}" --amp --json "$out-amp.json"
