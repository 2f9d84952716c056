# Sourced by the GPU lease scripts (gpu_check.sh, gpu_cost_audit.sh) after they set $out: makes the
# output folder, puts .devsite/ (pure-Python packages missing on the GPU image, as gpu_check.sh
# says) on PYTHONPATH, prints the GPU and torch the measurements ran on, and sets $levers, the
# mnist5k default's levers of a bench speed step as JSON (from problems/adversarial/speed.py).
# Stops (exit 2) where CUDA is not available or the levers cannot be read: every step would then
# measure the CPU or fail. A step that fails is counted (``failed``) and the script goes on to
# the next, so one failure does not cost the lease the others; ``finish`` exits 1 if any failed.
mkdir -p "$out"
export PYTHONPATH="$PWD/.devsite${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY="${PY:-python3}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fails=0
failed() { echo "$1 failed: $2"; fails=$((fails + 1)); }
finish() { [ "$fails" -eq 0 ] || { echo "$fails step(s) failed"; exit 1; }; }
"$PY" -c 'import sys, torch; cuda = torch.cuda.is_available(); print("torch", torch.__version__, "cuda", cuda); sys.exit(0 if cuda else 1)' ||
  { echo "CUDA is not available to $PY, so every step would measure the CPU; stopping."; exit 2; }
levers="$("$PY" -c 'import json; from problems.adversarial.speed import mnist5k_step_levers as l; print(json.dumps(l()))')" ||
  { echo "The default's levers could not be read (problems/adversarial/speed.py); stopping."; exit 2; }
