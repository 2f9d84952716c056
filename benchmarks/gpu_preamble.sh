# Sourced by the GPU lease scripts (gpu_check.sh, gpu_cost_audit.sh) after they set $out: makes the
# output folder, puts .devsite/ (pure-Python packages missing on the GPU image, as gpu_check.sh
# says) on PYTHONPATH, prints the GPU and torch the measurements ran on, and sets $levers, the
# mnist5k default's levers of a bench speed step as JSON (from problems/adversarial/speed.py).
mkdir -p "$out"
export PYTHONPATH="$PWD/.devsite${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY="${PY:-python3}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
levers="$("$PY" -c 'import json; from problems.adversarial.speed import mnist5k_step_levers as l; print(json.dumps(l()))')"
