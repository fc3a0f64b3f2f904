#!/usr/bin/env bash
# `rlhf bench ppo` against TRL 0.29.1's PPOTrainer on one CUDA GPU, fp32 and bf16 autocast, at the default shape
# and at a GPT-2-small-sized one (12 layers, d=768); ours also with --async-rollouts 1 (the next batch sampled by a
# snapshot of the policy while this one trains: compare its iteration_s with the synchronous run's). Prints one JSON
# line per run.
# Usage: bench/gpu_ppo.sh [PYTHON [FLAG ...]]   (PYTHON must import rlhfkit, trl==0.29.1 and a CUDA torch,
#        e.g. PYTHONPATH=src:$PYTHONPATH bench/gpu_ppo.sh python3 --episodes 1024; FLAGs go to both sides)
set -euo pipefail
PY=${1:-python3}
shift || true
EXTRA=("$@")
cd "$(dirname "$0")"
export OMP_WAIT_POLICY=PASSIVE
ours() { "$PY" -c 'import sys; from rlhfkit.cli import main; sys.exit(main(sys.argv[1:]))' bench ppo --json --device cuda \
  "$@" "${EXTRA[@]}"; }
trl() { "$PY" peer_ppo.py --device cuda "$@" "${EXTRA[@]}"; }
for shape in "" "--layers 12 --dim 768 --heads 12"; do
  for precision in "" "--bf16"; do
    # shellcheck disable=SC2086  # the shape and precision flags are word lists
    ours $shape $precision
    ours $shape $precision --async-rollouts 1
    trl $shape $precision
  done
done
