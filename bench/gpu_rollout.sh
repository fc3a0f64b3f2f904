#!/usr/bin/env bash
# Fast GPU decoding at a Qwen2.5-0.5B-shaped random model (24 layers, d 896, 14 heads, 2 KV heads, vocab 151,936,
# tied embeddings), prompt 128, response 256, batch 128, bf16 autocast, one timed PPO iteration after one warm-up:
#   1. the bandwidth bound of decoding at that batch (gpu_rollout.py bound)
#   2. `rlhf bench ppo` with today's eager decoding (--rollout-engine hf)
#   3. `rlhf bench ppo` with the static KV cache compiled into CUDA graphs (--rollout-engine hf-static)
#   4. TRL 0.29.1's PPOTrainer on the same shape (peer_ppo.py; generation and scoring in chunks of 32 rows)
#   5. the ratios (gpu_rollout.py summary): fast/eager generation tokens/s, PPO episodes/s vs TRL, fraction of
#      the bound
# Each run prints one JSON line (episodes_per_s, gen_tokens_per_s, peak_gpu_mb). Meant to fit one 8-minute run
# on one GPU; the PPO update uses minibatches of 16 and scoring runs in chunks, so no whole fp32 [B, T, V] logits
# tensor (30 GB here) is held.
# Usage: bench/gpu_rollout.sh PYTHON [PEER_PYTHON]   (PYTHON imports rlhfkit and a CUDA torch, e.g.
#        PYTHONPATH=src bench/gpu_rollout.sh python3; PEER_PYTHON imports trl==0.29.1: default PYTHON; a failed
#        peer run is reported and the others still count)
set -uo pipefail
PY=${1:-python3}
PEER=${2:-$PY}
cd "$(dirname "$0")"
export OMP_WAIT_POLICY=PASSIVE
SHAPE=(--layers 24 --dim 896 --heads 14 --kv-heads 2 --vocab 151936 --prompt 128 --resp 256 --batch 128
       --episodes 128 --warmup 1 --minibatch 16 --bf16)
OUT=$(mktemp)
"$PY" gpu_rollout.py bound "${SHAPE[@]}" | tee -a "$OUT"
for engine in hf hf-static; do
  "$PY" -c 'import sys; from rlhfkit.cli import main; sys.exit(main(sys.argv[1:]))' bench ppo --json --device cuda \
    --arch qwen2 "${SHAPE[@]}" --rollout-engine "$engine" | grep '^{' | tee -a "$OUT"
done
"$PEER" peer_ppo.py --device cuda --arch qwen2 "${SHAPE[@]}" --forward-batch 32 | grep '^{' | tee -a "$OUT" \
  || echo "TRL peer run failed (PEER_PYTHON needs trl==0.29.1)"
"$PY" gpu_rollout.py summary < "$OUT"
rm -f "$OUT"
