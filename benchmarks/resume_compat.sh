#!/usr/bin/env bash
# Resume compatibility across a code change: run folders made by an older commit, stopped after
# epoch 1, must resume under the current code to exactly the metrics of the older commit's
# unbroken run (DRO, AIT and GAIL, tiny budgets). Prints one line per problem and exits 1 on a
# mismatch. Usage, from the repository root:  bash benchmarks/resume_compat.sh OLD_COMMIT
# Against a commit before 624b282, GAIL's reward_mean, reward_std and leader_loss differ by
# definition (they held SB3's bootstrap values before): those three are left out of the
# comparison there, and every other figure must still agree.
set -euo pipefail
cd "$(dirname "$0")/.."
OLD="${1:?usage: bash benchmarks/resume_compat.sh OLD_COMMIT}"
PY="${PY:-.venv/bin/python}"
PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"  # absolute, the venv link kept
NEW="$(pwd)"
TMP="$(mktemp -d)"
trap 'git worktree remove --force "$TMP/old-code" >/dev/null 2>&1 || true; rm -rf "$TMP"' EXIT
git worktree add -q --detach "$TMP/old-code" "$OLD"
export OMP_NUM_THREADS=1
export REDEFINED=""  # figures whose definition changed since OLD
git merge-base --is-ancestor 624b282 "$OLD" 2>/dev/null || REDEFINED="reward_mean reward_std leader_loss"
declare -A CMDS=(
  [dro]="solve adversarial-dro --follower 2-step --train-size 128 --eval-size 32 --batch-size 32 --epochs 3"
  [ait]="solve adversarial-ait --follower 2-step --train-size 128 --eval-size 32 --batch-size 32 --epochs 3"
  [gail]="solve gail --env Pendulum-v1 --steps 600 --n-envs 1 --n-steps 200 --eval-episodes 1 --test-episodes 2 --follower l2l --cache-dir $TMP/demos"
)
status=0
run() {  # run cli.py "$@" in the code at $1; a failure names the command and shows its tail
  local code="$1"; shift
  (cd "$code" && PYTHONPATH=. "$PY" cli.py "$@" >"$TMP/log" 2>&1) ||
    { echo "$name: cli.py $* failed under $code:"; tail -5 "$TMP/log"; exit 1; }
}
for name in dro ait gail; do
  cmd=${CMDS[$name]}
  run "$TMP/old-code" $cmd --out "$TMP/$name-unbroken"
  run "$TMP/old-code" $cmd --out "$TMP/$name" --interrupt-after-epoch 1
  logged=$(wc -l < "$TMP/$name/metrics.jsonl")
  if [ "$logged" -ne 1 ] || [ -e "$TMP/$name/results.json" ]; then  # else nothing is resumed
    echo "$name: the old commit's run did not stop after epoch 1 ($logged epochs logged)"
    status=1
    continue
  fi
  run "$NEW" $cmd --out "$TMP/$name" --resume
  "$PY" - "$TMP/$name-unbroken/metrics.jsonl" "$TMP/$name/metrics.jsonl" "$name" <<'PYEOF' || status=1
import json, os, sys
redefined = os.environ["REDEFINED"].split()
def rows(path):  # every logged figure except clocks, the thread count (a setting, recorded
    # from 6e4da14 on) and those redefined since the old commit
    return [{k: v for k, v in json.loads(line).items()
             if "time" not in k and "seconds" not in k and k != "torch_threads"
             and k not in redefined}
            for line in open(path)]
old, resumed, name = rows(sys.argv[1]), rows(sys.argv[2]), sys.argv[3]
same = old == resumed
differ = sorted({k for a, b in zip(old, resumed) for k in a.keys() | b.keys() if a.get(k) != b.get(k)})
print(f"{name}: {len(resumed)} epochs, resumed under the current code "
      f"{'equal' if same else 'DIFFERENT'} to the old commit's unbroken run"
      + ("" if same else f" ({', '.join(differ) or 'the number of epochs'})"))
sys.exit(0 if same else 1)
PYEOF
done
exit $status
