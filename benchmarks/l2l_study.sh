#!/usr/bin/env bash
# The learned-attacker study of docs/results.md (the README sums it up), every step with
# the command that made its figures. mnist5k, small CNN, ε = 0.3, 10 epochs; batch 128 in steps 1-5 unless a grid says 64.
# CPU-bound: each process takes one thread, so two of them can share a 2-core machine. Finished
# runs are reused, so the script can be restarted.
#   1. screening of the levers, seed 0, validation only (APGD-CE + APGD-T, first 200 digits);
#   2. the final study: PGM-k (k = 2, 3, 5, 10), FGSM-RS, the paper's 2-step follower and the
#      chosen one (the mnist5k default), 3 seeds, validation only -> benchmarks/results/final.*;
#   3. the same runs judged on the 1,000 test digits by APGD-CE + APGD-T (--reuse: no
#      retraining) -> benchmarks/results/final-test.json;
#   4. the chosen levers carried over to AIT, and the per-batch cost at CIFAR scale;
#   5. standard AutoAttack on those runs, and the later lever screens (screen4-7);
#   6. batch 64, the mnist5k default since screen 6: validation, test split, standard AutoAttack.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
RUNS_FOR_AA="pgm-10 default_carried_delta_truncated_unroll"
# copy_for_aa FROM TO SEED: PGM-10's and the default's run of SEED from FROM into TO, without its
# cached test row (a folder keeps one evaluation, so standard AutoAttack gets copies)
copy_for_aa() {
  local run copy
  for run in $RUNS_FOR_AA; do
    copy="$2/$run/seed-$3"
    [ -d "$copy" ] || { mkdir -p "$2/$run" && cp -r "$1/$run/seed-$3" "$copy" && rm -f "$copy/bench-eval.json"; }
  done
}
# attack_new_seeds GRID JSON SEED...: train PGM-10 and the default at each declared SEED
# (benchmarks/l2l/seed-SEED-b64.json), copy the runs for standard AutoAttack, attack them (GRID
# names both; JSON gets the new seeds' table)
attack_new_seeds() {
  local grid="$1" json="$2" seed; shift 2
  for seed in "$@"; do
    "$PY" cli.py bench l2l --grid "benchmarks/l2l/seed-$seed-b64.json" --out runs/l2l-budget
    copy_for_aa runs/l2l-budget runs/l2l-budget-aa "$seed"
  done
  "$PY" cli.py bench dro --grid "$grid" --seeds "$(IFS=,; echo "$*")" --reuse \
    --out runs/l2l-budget-aa --aa standard --jobs 2 --json "$json"
}
AIT_LEVERS='{"attacker_random_start": true, "attacker_sign_step": 0.625, "attacker_width": 0.125}'  # AIT cannot fuse (not zero-sum)
"$PY" cli.py bench l2l --grid benchmarks/l2l/screen.json --out runs/l2l-screen
"$PY" cli.py bench l2l --grid benchmarks/l2l/final.json --out runs/l2l-final
"$PY" cli.py bench l2l --grid benchmarks/l2l/screen3.json --out runs/l2l-screen3   # cost levers
"$PY" cli.py bench dro --grid benchmarks/l2l/final-test.json --reuse --out runs/l2l-final \
  --seeds 0,1,2 --aa apgd-ce-t --jobs 2 --json benchmarks/results/final-test.json
"$PY" cli.py bench ait --methods ait,2-step --directions toward --seeds 0,1,2 --reuse \
  --levers "$AIT_LEVERS" --out runs/bench-ait-l2l --json benchmarks/results/bench-ait.json
for width in 0.0625 0.125; do   # the default width, and the study's first choice
  "$PY" cli.py bench speed --attacker slim --attacker-width "$width" --batch-size 32 --batches 2 \
    --rounds 3 --methods plain,fgsm-rs,pgm-2,pgm-3,pgm-5,pgm-10,2-step-fused \
    --levers '{"attacker_random_start": true, "attacker_sign_step": 0.625}' \
    --json "benchmarks/results/speed-slim$([ "$width" = 0.125 ] || echo "$width")-b32.json"
done
# 5. standard AutoAttack on the batch-128 runs; the levers screened after the first study (seed 0):
#    K = 3, then leader Adam, 2 φ updates, sign-scaled ∇ and the batch size, then warm-started φ
"$PY" cli.py bench dro --grid benchmarks/l2l/final-test-aa.json --reuse --out runs/l2l-final \
  --aa standard --jobs 2 --json benchmarks/results/final-test-aa.json
for screen in screen4 screen5 screen6 screen7; do  # screen8: after the batch-64 runs
  "$PY" cli.py bench l2l --grid "benchmarks/l2l/$screen.json" --out runs/l2l-final
done
# 6. batch 64, the mnist5k default since screen 6: 3 seeds on validation, then the test split
#    (APGD-CE + APGD-T, all seeds; standard AutoAttack, seed 0)
"$PY" cli.py bench l2l --grid benchmarks/l2l/final-b64.json --out runs/l2l-b64
"$PY" cli.py bench l2l --grid benchmarks/l2l/screen8.json --out runs/l2l-final
"$PY" cli.py bench l2l --grid benchmarks/l2l/b64-seeds.json --out runs/l2l-final
"$PY" cli.py bench dro --grid benchmarks/l2l/final-b64-test.json --reuse --out runs/l2l-b64 \
  --aa apgd-ce-t --jobs 2 --json benchmarks/results/final-b64-test.json
"$PY" cli.py bench dro --grid benchmarks/l2l/final-b64-test-aa.json --reuse --out runs/l2l-b64 \
  --aa standard --jobs 2 --seeds 0 --json benchmarks/results/final-b64-test-aa.json
"$PY" cli.py bench dro --grid benchmarks/l2l/betas-b64-test.json --reuse --out runs/l2l-final \
  --aa apgd-ce-t --jobs 2 --json benchmarks/results/betas-b64-test.json
# 7. each example's δ carried across epochs (ATTA; the mnist5k default since): screens 9-10 (seed
#    0), then 3 seeds on validation, the test split, standard AutoAttack, the carried follower gap
#    and the carry in AIT
for screen in screen9 screen10; do
  "$PY" cli.py bench l2l --grid "benchmarks/l2l/$screen.json" --out runs/l2l-final
done
"$PY" cli.py bench l2l --grid benchmarks/l2l/carry-b64.json --out runs/l2l-b64
"$PY" cli.py bench dro --grid benchmarks/l2l/carry-b64-test.json --reuse --out runs/l2l-b64 \
  --aa apgd-ce-t --jobs 2 --json benchmarks/results/carry-b64-test.json
"$PY" cli.py bench dro --grid benchmarks/l2l/carry-b64-test-aa.json --reuse --out runs/l2l-b64-aa \
  --aa standard --jobs 2 --json benchmarks/results/carry-b64-test-aa.json
"$PY" benchmarks/carried_gap.py runs/l2l-b64/default_carried_delta{,_1_of_2_steps_learned}/seed-{0,1,2} \
  runs/l2l-b64/pgm-2_carried_delta/seed-0 runs/l2l-b64/K_1_carried_delta/seed-0
"$PY" cli.py bench ait --methods ait,2-step --directions toward --seeds 0,1,2 --reuse \
  --levers "${AIT_LEVERS%\}}, \"carry_decision\": true, \"plain_steps\": 1}" --out runs/bench-ait-carry \
  --json benchmarks/results/bench-ait-carry.json
# 8. the truncated unroll (φ through the last g_φ call only; the mnist5k default since): 3 seeds
#    on validation, the test split, standard AutoAttack (into a copy of the run folders: a folder
#    keeps one evaluation), the carried follower gap, the CIFAR-shaped per-batch cost, and AIT
"$PY" cli.py bench l2l --grid benchmarks/l2l/truncated-b64.json --out runs/l2l-b64
"$PY" cli.py bench dro --grid benchmarks/l2l/truncated-b64-test.json --reuse --out runs/l2l-b64 \
  --aa apgd-ce-t --jobs 2 --json benchmarks/results/truncated-b64-test.json
for seed in 0 1 2; do copy_for_aa runs/l2l-b64 runs/l2l-b64-aa "$seed"; done
"$PY" cli.py bench dro --grid benchmarks/l2l/truncated-b64-test-aa.json --reuse --out runs/l2l-b64-aa \
  --aa standard --jobs 2 --json benchmarks/results/truncated-b64-test-aa.json
"$PY" benchmarks/carried_gap.py runs/l2l-b64/default_carried_delta_truncated_unroll/seed-{0,1,2}
"$PY" cli.py bench speed --attacker slim --attacker-width 0.0625 --batch-size 32 --batches 2 \
  --rounds 3 --methods fgsm-rs,pgm-10,2-step-fused --json benchmarks/results/speed-truncated-b32.json \
  --levers '{"attacker_random_start": true, "attacker_sign_step": 0.625, "truncated_unroll": true}'
"$PY" cli.py bench ait --methods 2-step --directions toward --seeds 0,1,2 --reuse \
  --levers "${AIT_LEVERS%\}}, \"carry_decision\": true, \"truncated_unroll\": true}" \
  --out runs/bench-ait-truncated --json benchmarks/results/bench-ait-truncated.json
# 9. spending the cost budget: the truncated default with an 11th epoch (0.47x) or the leader's
#    cosine schedule, and PGM-10 with the cosine schedule too (is it a follower or a leader
#    lever?); 3 seeds on 500 validation digits, then the cosine pair on the test split
"$PY" cli.py bench l2l --grid benchmarks/l2l/budget-b64.json --out runs/l2l-budget
"$PY" cli.py bench dro --grid benchmarks/l2l/budget-b64-cosine-test.json --reuse --out runs/l2l-budget \
  --aa apgd-ce-t --jobs 2 --json benchmarks/results/budget-b64-cosine-test.json
# 10. two more seeds, declared before they were read: PGM-10 and the default at seeds 3 and 4 (with
#     seeds 0-2 of step 9's folder, all trained at one commit), validation then the test split;
#     standard AutoAttack seed by seed on copies of the folders (a folder keeps one evaluation;
#     seeds 3 and 4 first, as they were measured; the default's seed 3 was attacked again once
#     bench dro counted what each component broke, and gave the same 0.788), then all five from
#     the folders' cached rows;
#     and the carried default's sign step at 0.4ε, 0.5ε (5 seeds) and 0.75ε on validation
"$PY" cli.py bench l2l --grid benchmarks/l2l/five-seeds-b64.json --out runs/l2l-budget
"$PY" cli.py bench dro --grid benchmarks/l2l/five-seeds-b64.json --reuse --out runs/l2l-budget \
  --aa apgd-ce-t --jobs 2 --json benchmarks/results/five-seeds-b64-test.json
for seed in 3 4 0 1 2; do
  copy_for_aa runs/l2l-budget runs/l2l-budget-aa "$seed"
  "$PY" cli.py bench dro --grid benchmarks/l2l/five-seeds-b64.json --seeds "$seed" --reuse \
    --out runs/l2l-budget-aa --aa standard --json "benchmarks/results/five-seeds-b64-aa-seed$seed.json"
done
"$PY" cli.py bench dro --grid benchmarks/l2l/five-seeds-b64.json --seeds 0,1,2,3,4 --reuse \
  --out runs/l2l-budget-aa --aa standard --json benchmarks/results/five-seeds-b64-aa.json
for grid in sign-step-b64 sign-step-b64-five-seeds sign-step-0.4-b64; do
  "$PY" cli.py bench l2l --grid "benchmarks/l2l/$grid.json" --out runs/l2l-budget
done
# 11. is Square's share the carry's? The default without the carried δ at the same five seeds
#     (validation), then APGD-CE + APGD-T and Square on what they leave, on the test split, for
#     those runs and, as the check, the default's seed 3 (the standard cascade gave 18 to Square)
"$PY" cli.py bench l2l --grid benchmarks/l2l/no-carry-b64-five-seeds.json --out runs/l2l-budget
"$PY" benchmarks/square_share.py runs/l2l-budget/default_carried_delta_truncated_unroll/seed-3 \
  runs/l2l-budget/default_without_the_carry/seed-{0,1,2,3} --json benchmarks/results/square-share.json
# 12. two levers aimed at the carry's Square share, 5 seeds on validation: a quarter of each
#     batch's carried δ restarted at random, and every carried δ jittered by half a random start
for grid in carry-restart-b64-five-seeds carry-jitter-b64-five-seeds; do
  "$PY" cli.py bench l2l --grid "benchmarks/l2l/$grid.json" --out runs/l2l-budget
done
# 13. two more seeds of PGM-10 and the default, declared before they were trained (5 and 6):
#     validation, then standard AutoAttack on copies of the folders, then all seven from the
#     folders' cached rows (validation and test)
attack_new_seeds benchmarks/l2l/seven-seeds-b64.json benchmarks/results/seeds-5-6-b64-aa.json 5 6
"$PY" cli.py bench l2l --grid benchmarks/l2l/seven-seeds-b64.json --out runs/l2l-budget
"$PY" cli.py bench dro --grid benchmarks/l2l/seven-seeds-b64.json --seeds 0,1,2,3,4,5,6 --reuse \
  --out runs/l2l-budget-aa --aa standard --json benchmarks/results/seven-seeds-b64-aa.json
# 14. seeds 7 and 8, the last two (declared before training): as step 13, nine seeds in all
attack_new_seeds benchmarks/l2l/nine-seeds-b64.json benchmarks/results/seeds-7-8-b64-aa.json 7 8
"$PY" cli.py bench l2l --grid benchmarks/l2l/nine-seeds-b64.json --out runs/l2l-budget
"$PY" cli.py bench dro --grid benchmarks/l2l/nine-seeds-b64.json --seeds 0,1,2,3,4,5,6,7,8 --reuse \
  --out runs/l2l-budget-aa --aa standard --json benchmarks/results/nine-seeds-b64-aa.json
# the paired comparison the README's nine-seed table quotes (seeds 0, 3 and 4 of PGM-10 and 4 of
# the default were attacked before the cascade recorded what FAB-T and Square took: their
# APGD-CE + APGD-T figure comes from the same runs' evaluation in runs/l2l-budget)
"$PY" benchmarks/paired_seeds.py runs/l2l-budget-aa/pgm-10 \
  runs/l2l-budget-aa/default_carried_delta_truncated_unroll --seeds 0,1,2,3,4,5,6,7,8 \
  --apgd-root runs/l2l-budget --margin 0.02 --json benchmarks/results/nine-seeds-paired.json
# 15. φ's betas (0.5, 0.999) and δ as memory, screened only before the carry, on the carried
#     default: five seeds on validation (declared before training)
for lever in carry-betas carry-delta-memory; do
  "$PY" cli.py bench l2l --grid "benchmarks/l2l/$lever-b64-five-seeds.json" --out runs/l2l-budget
done
# 16. FGSM-RS under standard AutoAttack at batch 64 (the README's table had only its APGD-CE +
#     APGD-T): seeds 0-2 trained at this commit beside the cached default, then attacked on copies
"$PY" cli.py bench l2l --grid benchmarks/l2l/fgsm-rs-b64-aa.json --out runs/l2l-budget
for seed in 0 1 2; do RUNS_FOR_AA=fgsm copy_for_aa runs/l2l-budget runs/l2l-budget-aa "$seed"; done
"$PY" cli.py bench dro --grid benchmarks/l2l/fgsm-rs-b64-aa.json --seeds 0,1,2 --reuse \
  --out runs/l2l-budget-aa --aa standard --jobs 2 --json benchmarks/results/fgsm-rs-b64-test-aa.json
# 17. Does classifier capacity cap what the stronger training adversary buys? PGM-10 and the
#     default on the TRADES MNIST CNN (about 4x the small CNN's compute), seeds 0-2, validation
#     only; declared before training. An insight, not a default change: if L2L's validation lead
#     over PGM-10 beats the small CNN's on the same seeds (+1.7) by 2 points or more, capacity is
#     named as the lever to measure on the test split next; otherwise it is reported as not the
#     cap.
"$PY" cli.py bench l2l --grid benchmarks/l2l/capacity-trades-cnn.json --out runs/l2l-capacity --jobs 2
# the stalled seed 1 of the default, diagnosed: without the carry, and with the leader at lr 0.01
DIAG="--model trades-cnn --seed 1 --gap-size 500 --follower 2-step"
"$PY" cli.py solve adversarial-dro $DIAG --no-carry-decision --out runs/l2l-capacity-diag/no-carry-seed-1
"$PY" cli.py solve adversarial-dro $DIAG --lr 0.01 --out runs/l2l-capacity-diag/lr-0.01-seed-1
# the stall's cause, found after step 17: FGSM-RS stalls on the same seed (the learned follower is
# not needed for it), an Adam leader does not, and neither does TRADES's own initialisation of the
# network (He-normal convolutions, zero head), which the TRADES CNN here had lacked (fixed in
# 2bfe920; before it, at a53d10a, these two commands stalled for two to four epochs, and the
# default with --leader-optimizer adam added, out runs/l2l-capacity-diag/adam-default-seed-1, did not)
DIAG="--model trades-cnn --seed 1 --gap-size 0"
"$PY" cli.py solve adversarial-dro $DIAG --follower fgsm --out runs/l2l-capacity-diag/trades-init-fgsm-rs-seed-1
"$PY" cli.py solve adversarial-dro $DIAG --follower 2-step --out runs/l2l-capacity-diag/trades-init-default-seed-1
# 18. Step 17 again with TRADES's initialisation (declared before training, same seeds, same
#     validation-only rule): if the default's mean validation lead over PGM-10 on seeds 0-2 beats
#     the small CNN's on the same seeds (+1.7) by 2 points or more, capacity is named as the lever
#     to measure on the test split next; otherwise it is reported as not the cap. Step 17's reading
#     (the lead goes, one seed stalls) is replaced by this one either way, as step 17 ran a network
#     that did not start as TRADES's does.
"$PY" cli.py bench l2l --grid benchmarks/l2l/capacity-trades-init.json --out runs/l2l-capacity-init --jobs 2
# 19. The ε warm-up's length, on both sides (declared before training). Step 18 showed that the
#     early epochs decide much at this budget: the TRADES CNN's slow start from PyTorch's
#     initialisation ended 5-10 points more robust, as if it learned little until ε was large. On
#     the small CNN the warm-up (3 epochs by default) was never screened. Seeds 0-2, validation
#     only; the default and PGM-10 at warm-up 3 are the runs already in runs/l2l-budget (lead +1.7
#     on these seeds). Rule: a length W is named a lever for the learned follower only if the
#     default's mean lead over PGM-10, both at W, beats +1.7 by 2 points or more (it would then
#     need five seeds and the test split before any default changes); otherwise it is reported as
#     not one. The defaults do not change in this step.
"$PY" cli.py bench l2l --grid benchmarks/l2l/warmup-b64.json --out runs/l2l-budget --jobs 2
# 20. Where the stronger training adversary goes (a reading of the instrument, no decision): PGM-10
#     and the default at the make-run settings, seeds 0-2, then the robust generalisation gap
#     (PGD-10 accuracy on the training probe minus validation) at each run's selected epoch. Its
#     first reading (a 256-digit probe, and the default's seed 0 then taken from a two-thread
#     `make run`) was replaced by the same reading of step 21's runs (a 500-digit probe), below.
for seed in 0 1 2; do
  "$PY" cli.py solve adversarial-dro --follower pgm --seed "$seed" --out "runs/gap-check/pgm-10-seed-$seed" &
  pgm=$!
  "$PY" cli.py solve adversarial-dro --follower 2-step --seed "$seed" --out "runs/gap-check/default-seed-$seed"
  wait "$pgm"  # a bare wait returns 0 and set -e would miss a failed PGM-10 run
done
"$PY" benchmarks/robust_generalisation.py runs/gap-check/pgm-10-seed-{0,1,2}
"$PY" benchmarks/robust_generalisation.py runs/gap-check/default-seed-{0,1,2}
# 21. θ̄, an exponential moving average of the leader's weights (--leader-ema 0.99: a horizon of
#     about 100 steps, two epochs of 55 batches), on both sides; declared before training. Step 20
#     found the default's lead lost mostly between the training digits and validation (robust
#     overfitting), and weight averaging is the literature's cheapest lever against it (Gowal et
#     al. 2020, Rebuffi et al. 2021). Seeds 0-2, validation only (APGD-CE + APGD-T, 500 digits);
#     PGM-10 and the default without θ̄ are trained again here (runs/ of earlier sessions is gone;
#     at one commit a run is bit for bit the same, so they should give step 19's +1.7 again).
#     Rule: θ̄ is named a lever for the learned follower only if the default's mean lead over
#     PGM-10, both with θ̄, beats the lead without it on the same seeds by 2 points or more (it
#     would then need five seeds and the test split before any default changes); otherwise it is
#     reported as not one, and as a leader lever if it lifts both. The robust generalisation gap
#     (step 20's reading) is reported for each entry as a description. No default changes here.
"$PY" cli.py bench l2l --grid benchmarks/l2l/ema-b64.json --out runs/l2l-budget --jobs 2
for entry in pgm-10 default_carried_delta_truncated_unroll pgm-10_leader_EMA_0.99 default_leader_EMA_0.99; do
  "$PY" benchmarks/robust_generalisation.py runs/l2l-budget/"$entry"/seed-{0,1,2}
done
# 22. The follower's steps on the CW margin (--ascent-loss margin: PGM-10's steps, g_φ's ∇ input
#     and its sign step climb max_{j≠y} Z_j − Z_y; φ and θ keep CE), on both sides; declared before
#     training. Step 20 found a third of the default's lead lost between PGD-40 (CE) and standard
#     AutoAttack, whose APGD-T, FAB-T and Square climb margins. Seeds 0-2, validation only
#     (APGD-CE + APGD-T, 500 digits); the CE runs are step 21's, reused.
#     Rule: the margin is named a lever for the learned follower only if the default's mean lead
#     over PGM-10, both on the margin, beats the lead with both on CE on the same seeds by 2 points
#     or more (it would then need five seeds and the test split before any default changes);
#     otherwise it is reported as not one, and as a lever of any follower if it lifts both by 2
#     points or more. No default changes here.
"$PY" cli.py bench l2l --grid benchmarks/l2l/ascent-b64.json --out runs/l2l-budget --jobs 2
#     Read (docs/results.md, step 22): the lead +1.7 (CE) -> +2.1 (margin), +0.4 < 2: not a lever.
# 23. A free step on the carried δ (--carry-free-step s): after the fused backward, each carried δ
#     takes one more s·ε step along the gradient that backward left on it (Free-AT's reuse), at
#     no extra pass; s = 0.25 and 0.625 (the sign step's size). Declared before training. A third
#     unrolled step was 0.8 points ahead at 0.87x PGM-10's cost; this asks whether climbing the
#     carried δ further for free buys robustness. Seeds 0-2, validation only (APGD-CE + APGD-T,
#     500 digits); the default's runs are step 21's, reused; PGM-10 has no carry, so its runs and
#     the lead's other side are unchanged.
#     Rule: a free step is named a lever if the default with it beats the default without it by
#     2 points or more on the mean of seeds 0-2 (it would then need seeds 3 and 4 on validation
#     before any test reading or default change); otherwise it is reported as not one. The
#     instrument's carried ratio (last epoch's probe) is reported for each entry. No default
#     changes here.
"$PY" cli.py bench l2l --grid benchmarks/l2l/free-step-b64.json --out runs/l2l-budget --jobs 2
#     Read (docs/results.md, step 23): 0.789 (default), 0.781 (0.25), 0.790 (0.625): not a lever.
#     (The third unrolled step above was 0.8 points ahead of the default, not of PGM-10.)
# 24. How much robustness does a stronger hand-designed training adversary buy at this budget?
#     PGM-20 and PGM-40 (steps of 2.5ε/k, as PGM-10's), beside PGM-10 and the default, trained
#     in one session. The carried follower finds 1.13-1.36x PGD-10's loss on the training probe
#     and leads PGM-10 by about 2 points; this calibrates that against PGD made stronger by brute
#     force: the follower-gap ratio of each PGM-k's training follower against the robustness it
#     buys. Declared before training. Seeds 0-2, validation only (APGD-CE + APGD-T, 500 digits).
#     Rule, on the mean of seeds 0-2 (paired leads over PGM-10 trained here):
#     - PGM-40's lead over PGM-10 at most 2 points: a hand-designed adversary four times
#       stronger in steps buys no more than the target's +2, so the target asks of the follower
#       more than adversary strength buys at this budget;
#     - PGM-20's or PGM-40's lead 3 points or more: strength has headroom that the default's
#       stronger adversary does not convert, and what it lacks is the next question;
#     - otherwise inconclusive. No default changes here.
"$PY" cli.py bench l2l --grid benchmarks/l2l/stronger-pgm-b64.json --out runs/l2l-budget --jobs 2
#     Read (docs/results.md, step 24): PGM-40 leads PGM-10 by 3.2 points, PGM-20 by 1.3, the
#     default by 1.7: strength has headroom; the default is the most robust under PGD-10 but
#     loses 6.6 points to APGD where PGM-20 and PGM-40 lose about 4.
# 25. A coordinate-wise g_φ (--attacker pointwise: one perceptron at every pixel, 1x1
#     convolutions, no batch norm; the learned inner maximiser of Xiong & Hsieh, ECCV 2020, is
#     coordinate-wise too). On the small CNN the slim attacker costs as much as the classifier and
#     makes the default launch 0.69x PGM-10's operators a step (0.66x by the count corrected on
#     2026-12-05, without allocations); the pointwise one launches 0.48x
#     (`python benchmarks/dispatch_count.py --channels-last --attacker pointwise`). The question:
#     does g_φ's correction need spatial context, or does a per-pixel rule on (x + δ, ∇) keep it?
#     Hidden width 16 (the default's 0.0625 of 256) and 64 (0.25). Declared before training; seeds
#     0-2, validation only (APGD-CE + APGD-T, 500 digits); the default's and PGM-10's runs are step
#     24's, reused. Rule, on the mean of seeds 0-2:
#     - a pointwise entry at or above the default's mean minus 1 point keeps the robustness at
#       fewer operators: it then trains seeds 3 and 4 on validation before any test reading or
#       default change, and its CPU and per-batch costs are measured beside the default's;
#     - one 2 points or more above the default is also a robustness lever;
#     - otherwise the correction needs spatial context, and the slim attacker stays.
"$PY" cli.py bench l2l --grid benchmarks/l2l/pointwise-b64.json --out runs/l2l-budget --jobs 2
#     Read (docs/results.md, step 25): pointwise 0.778 ± 0.014 (width 16) and 0.776 ± 0.016
#     (width 64) against the default's 0.789 ± 0.021: 1.1 points under, outside the rule's 1, so
#     the slim attacker stays; the pointwise option stays, at 0.39x in this study.
# 26. Small steps for the learned follower. Step 24 found that PGM-20 and PGM-40 (steps of
#     2.5ε/20 and 2.5ε/40) lose about 4 points between PGD-10 and APGD-CE + APGD-T on validation,
#     where PGM-10 (0.25ε steps) loses 6.1 and the default (0.625ε sign steps) 6.6. Hypothesis:
#     the fewer and larger a training adversary's steps, the more of its robustness APGD takes
#     back. With the carry, each digit's δ takes two steps a visit and keeps them, so small steps
#     still add up over the epochs. The default's sign step at 0.25ε, with the slim and the
#     pointwise attacker. Declared before training; seeds 0-2, validation only (APGD-CE + APGD-T,
#     500 digits); the 0.625ε runs are steps 24 and 25's, reused. Rules, on the mean of seeds 0-2:
#     - an entry is named a lever if it beats its 0.625ε counterpart by 2 points or more (the
#       default's 0.789, the pointwise one's 0.778); it then trains seeds 3 and 4 on validation
#       before any test reading or default change;
#     - the hypothesis is supported if each entry's PGD-10 − APGD drop is at least 1.5 points
#       under its counterpart's (6.6 slim, 5.5 pointwise), and not supported otherwise.
"$PY" cli.py bench l2l --grid benchmarks/l2l/small-steps-b64.json --out runs/l2l-budget --jobs 2
#     Read (docs/results.md, step 26): slim at 0.25ε 0.767 ± 0.011 (−2.2), pointwise at 0.25ε
#     0.790 ± 0.014 (+1.2 over its 0.625ε): no lever; the PGD-10 − APGD drop grew for both (8.7
#     and 6.5 points against 6.6 and 5.5), so the hypothesis is not supported.
# 27. The pointwise attacker at 0.25ε tied the default on seeds 0-2 (0.790 against 0.789) at
#     fewer operators (0.48x PGM-10's a step against 0.69x; 0.66x by the count corrected on
#     2026-12-05) and less CPU time. Declared before
#     training: seeds 3 and 4 for it and the default (PGM-10 as the reference), validation only.
#     Rule: if its five-seed mean is within 1 point of the default's five-seed mean, it is named
#     a cost lever, a candidate for the GPU's cost target, which would need the test split and
#     nine seeds of standard AutoAttack before any default change; otherwise it is not one.
"$PY" cli.py bench l2l --grid benchmarks/l2l/pointwise-small-steps-seeds-3-4.json --out runs/l2l-budget --jobs 2
#     Read (docs/results.md, step 27): five seeds, the pointwise attacker at 0.25ε 0.786 ± 0.012
#     against the default's 0.795 ± 0.017 (−0.9): within 1 point, named a cost lever; no default
#     change. Its test split, APGD-CE + APGD-T on all 1,000 digits, for the record (the default's
#     and PGM-10's same five models were read in step 10):
"$PY" cli.py bench dro --grid benchmarks/l2l/pointwise-small-steps-test.json --reuse --out runs/l2l-budget --aa apgd-ce-t --jobs 2 --json benchmarks/results/pointwise-small-steps-test.json
# 28. Is the default's PGD-10 − APGD drop the carry's? Step 26 ruled out the step size; what is
#     left of step 24's contrast is that PGM-k starts afresh each batch while the default climbs
#     from the δ of an epoch ago. The default without the carry, seeds 0-2 (step 11 trained it at
#     another commit; its folders are gone), validation only. Declared before training.
#     Rule: if its drop (val PGD-10 of the gap instrument minus val APGD-CE + APGD-T, mean of
#     seeds 0-2) is at least 1.5 points under the default's 6.6, the carry is named the likely
#     source of the leak; otherwise the leak is not the carry's alone. No default changes here.
"$PY" cli.py bench l2l --grid benchmarks/l2l/no-carry-leak-b64.json --out runs/l2l-budget --jobs 2
#     Read (docs/results.md, step 28): without the carry 0.749 ± 0.017 and a drop of 8.5 points
#     against the default's 6.6: the drop is not the carry's (the carry narrows it).
# 29. More ascent steps at the current θ, within the cost budget. Step 28's reading: the runs
#     that lose least between PGD-10 and APGD take the most steps at the current θ a batch. The
#     pointwise attacker is cheap enough (0.32x PGM-10 per batch at K = 2) to afford K = 3 and
#     K = 4, with sign steps of 0.4ε and 0.3ε (the same reach as K = 2's 2 × 0.625ε, about
#     1.2ε). Declared before training; seeds 0-2, validation only; the K = 2 runs are step 24 and
#     25's, reused. Rules, on the mean of seeds 0-2:
#     - an entry is named a lever if it beats the default's 0.789 by 2 points or more (it would
#       then need seeds 3-4 and a cost measured beside PGM-10 before anything else);
#     - step 28's reading is supported if both entries lose at most 4.0 points between PGD-10 and
#       APGD-CE + APGD-T (the pointwise K = 2 lost 5.5), and not supported otherwise.
"$PY" cli.py bench l2l --grid benchmarks/l2l/pointwise-unroll-b64.json --out runs/l2l-budget --jobs 2
#     Read (docs/results.md, step 29): K = 3 0.779 ± 0.022, K = 4 0.799 ± 0.016 (+1.0 over the
#     default, under 2: no lever); drops 6.3 and 5.7 points: the reading is not supported.
# 30. Is the pointwise attacker unrolled 4 times (0.3ε) the most robust within the budget? Step 29
#     put it 1.0 point over the default on seeds 0-2 (0.799 against 0.789; 2.7 over PGM-10 on
#     every seed), which its rule, asking whether more steps close the APGD drop, did not count as
#     a lever. This step asks the question the default was chosen on (step 8: the most robust
#     configuration on validation within 0.5x PGM-10's cost). Declared before training: seeds 3
#     and 4 for it (the default's and PGM-10's are step 10's, reused), validation only; then seed
#     0 of it trained beside seed 0 of PGM-10, for the cost. Rule: it becomes the mnist5k default
#     if, over seeds 0-4, its validation APGD-CE + APGD-T mean is above the default's and ahead
#     on at least 3 of the 5 seeds, its validation clean accuracy is at least PGM-10's, and beside
#     PGM-10 it costs at most 0.5x PGM-10's CPU seconds; then, and only then, the test split is
#     read (APGD-CE + APGD-T, seeds 0-4, no choice made on it). Otherwise the default stays.
"$PY" cli.py bench l2l --grid benchmarks/l2l/pointwise-unroll4-seeds-3-4.json --out runs/l2l-budget --jobs 2
#     Read (docs/results.md, step 30): over seeds 0-4 it leads the default by 0.6 points (0.800
#     against 0.795; ahead on 3 of 5) with clean accuracy above PGM-10's, but beside PGM-10 it
#     costs 0.60x (54.6 against 91.3 CPU s, seed 0): over the budget, so the default stays and the
#     test split is not read. The cost pair:
#       "$PY" cli.py solve adversarial-dro --follower pgm --seed 0 --gap-size 500 --out runs/side/pgm-10 &
#       "$PY" cli.py solve adversarial-dro --follower 2-step --attacker pointwise --unroll 4 \
#         --attacker-sign-step 0.3 --seed 0 --gap-size 500 --out runs/side/pointwise-k4; wait
# 31. For the record, no decision: standard AutoAttack on the test split for the pointwise attacker
#     at 0.25ε, the cost lever of step 27 and the one follower under 0.5x PGM-10 on a GPU (0.49x
#     trained end to end, docs/results.md "The second lease"), seeds 0-2, on copies of its folders
#     (a folder keeps one evaluation). Compared with PGM-10's and the default's same seeds in
#     benchmarks/results/nine-seeds-paired.json.
for seed in 0 1 2; do
  RUNS_FOR_AA=default_pointwise_attacker_sign_step_0.25 copy_for_aa runs/l2l-budget runs/l2l-budget-aa "$seed"
done
"$PY" cli.py bench dro --grid benchmarks/l2l/pointwise-small-steps-test-aa.json --reuse \
  --out runs/l2l-budget-aa --aa standard --jobs 2 --json benchmarks/results/pointwise-small-steps-test-aa.json
#     Read (docs/results.md, step 31): 0.767 ± 0.003 (0.766, 0.770, 0.765), clean 0.969, against
#     PGM-10's 0.743 and the default's 0.768 on the same seeds; AutoAttack takes 0.3 points beyond
#     APGD from it (the default: 0.8 over nine seeds). Then, declared before they were attacked,
#     the two other seeds of its five (step 27's), still for the record:
for seed in 3 4; do
  RUNS_FOR_AA=default_pointwise_attacker_sign_step_0.25 copy_for_aa runs/l2l-budget runs/l2l-budget-aa "$seed"
done
"$PY" cli.py bench dro --grid benchmarks/l2l/pointwise-small-steps-test-aa-seeds-3-4.json --reuse \
  --out runs/l2l-budget-aa --aa standard --jobs 2 --json benchmarks/results/pointwise-small-steps-test-aa-seeds-3-4.json
#     Read (docs/results.md, step 31): seeds 3 and 4 0.754 and 0.761; over five seeds 0.763 ±
#     0.006 against PGM-10's 0.753 and the default's 0.772 (clean 0.971): a point under the default.
# 32. The slim attacker with four details of the authors' released build (--attacker slim-reference: a batch
#     norm before the transposed convolution, the tanh scale from 5, batch-norm ε 1e-3, no bias on
#     the last convolution), seeds 0-4 on validation; the default's and PGM-10's runs are step 27's.
#     A lever only at the default's + 2 points.
"$PY" cli.py bench l2l --grid benchmarks/l2l/slim-reference-b64.json --out runs/l2l-budget --jobs 2
#     Read (docs/results.md, step 32): 0.802 ± 0.012 against the default's 0.795 (ahead on 4 of 5)
#     and PGM-10's 0.777, clean 0.960; the same cost side by side (seed 0: 31.2 against 31.5 CPU
#     s). Not a lever by the rule; the default stays and the test split is not read.
