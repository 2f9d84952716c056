#!/usr/bin/env bash
# The GAIL stabilisation study of the README: every follower on Pendulum-v1 and
# Acrobot-v1 (scripted experts, nothing downloaded), the same seeds and steps for all, with the
# reliability metrics of Chan et al. (2020). Finished runs are reused and interrupted ones resumed,
# so the script can be stopped and started again. Writes OUT/<env>/stability.{json,md,png} and
# OUT/timing.txt (wall seconds per task).
# Usage, from the repository root:
#   bash benchmarks/gail_stability.sh                 # 8 seeds × 100k steps, one run at a time
#   JOBS=2 SEEDS=8 STEPS=100000 OUT=runs/gail-study bash benchmarks/gail_stability.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
SEEDS="${SEEDS:-8}"
STEPS="${STEPS:-100000}"
JOBS="${JOBS:-1}"
OUT="${OUT:-runs/gail-study}"
FOLLOWERS="${FOLLOWERS:-adam,l2l,oneshot,adam-gp,adam-1step}"
ENVS="${ENVS:-Pendulum-v1 Acrobot-v1}"
mkdir -p "$OUT"
touch "$OUT/timing.txt"
for env in $ENVS; do
  # one line a task: a rerun's time replaces the last one's, the other tasks' lines stay
  { grep -v "^$env: " "$OUT/timing.txt" || true; } > "$OUT/timing.txt.new"
  mv "$OUT/timing.txt.new" "$OUT/timing.txt"
  start=$(date +%s)
  "$PY" cli.py gail-stability --env "$env" --seeds "$SEEDS" --steps "$STEPS" \
    --followers "$FOLLOWERS" --jobs "$JOBS" --out "$OUT/$env"
  echo "$env: $(( $(date +%s) - start )) s wall, seeds $SEEDS, steps $STEPS, jobs $JOBS" \
    >> "$OUT/timing.txt"
done
cat "$OUT/timing.txt"
