#!/usr/bin/env bash
# PPO on one GPU at a Qwen2.5-0.5B-shaped random model (24 layers, d 896, 14 heads, 2 KV heads, vocab 151,936, tied
# embeddings; random init, the word-level tokenizer built in the run: no downloads), prompt 128, response 256, batch
# 128, bf16 autocast, one timed PPO iteration after one warm-up:
#   1. the bandwidth bound of decoding at that batch (gpu_rollout.py bound)
#   2. `rlhf bench ppo` with the static KV cache compiled into CUDA graphs (--rollout-engine hf-static), synchronous
#      and with --async-rollouts 1 (the batch sampled by a snapshot, in a thread and CUDA stream of its own, while
#      the previous one trains: train/async_rollouts.py)
#   3. TRL 0.29.1's PPOTrainer on the same shape (peer_ppo.py; generation and scoring in chunks of 32 rows)
#   4. step 2 with today's eager decoding (--rollout-engine hf), synchronous and async
#   5. the ratios (gpu_rollout.py summary): fast/eager generation tokens/s, PPO episodes/s vs TRL, fraction of the
#      bound, and per engine the seconds per PPO iteration async ÷ sync and the peak GPU memory of each
# Each run prints one JSON line (iteration_s, episodes_per_s, gen_tokens_per_s, peak_gpu_mb; async runs also
# rollout_wait_s, weight_wait_s). The whole script stays within BUDGET seconds (default 470: one 8-minute run): each
# run may take the time left less RESERVE seconds (default 45) for each run after it, and a run cut there is
# reported as cut (with the order above, the async-vs-sync pair on hf-static comes first). The PPO update uses
# minibatches of 16 and scoring runs in chunks, so no whole fp32 [B, T, V] logits tensor (30 GB here) is held.
# Usage: bench/gpu_rollout.sh PYTHON [PEER_PYTHON]   (PYTHON imports rlhfkit and a CUDA torch, e.g.
#        PYTHONPATH=src bench/gpu_rollout.sh python3; PEER_PYTHON imports trl==0.29.1: default PYTHON; a failed
#        peer run is reported and the others still count)
#        DEVICE=cpu TINY=1 bench/gpu_rollout.sh PYTHON [PEER_PYTHON]: the same runs on the CPU at a tiny shape (a
#        check that the script runs end to end, not a measurement)
set -uo pipefail
PY=${1:-python3}
PEER=${2:-$PY}
DEVICE=${DEVICE:-cuda}
BUDGET=${BUDGET:-470}
RESERVE=${RESERVE:-45}
cd "$(dirname "$0")"
export OMP_WAIT_POLICY=PASSIVE
if [ "${TINY:-0}" = 1 ]; then
  SHAPE=(--arch qwen2 --layers 2 --dim 64 --heads 4 --kv-heads 2 --vocab 512 --prompt 8 --resp 8 --batch 8
         --episodes 8 --warmup 1 --minibatch 4)
else
  SHAPE=(--arch qwen2 --layers 24 --dim 896 --heads 14 --kv-heads 2 --vocab 151936 --prompt 128 --resp 256
         --batch 128 --episodes 128 --warmup 1 --minibatch 16 --bf16)
fi
OUT=$(mktemp)
START=$SECONDS
LEFT_RUNS=5
run() {  # run CMD...: within the time left less what the runs after it are kept; its JSON lines into $OUT
  local share
  LEFT_RUNS=$((LEFT_RUNS - 1))
  share=$((BUDGET - (SECONDS - START) - RESERVE * LEFT_RUNS))
  if [ "$share" -lt 10 ]; then echo "{\"skipped\": \"$*\", \"reason\": \"budget spent\"}" | tee -a "$OUT"; return; fi
  timeout "$share" "$@" | grep '^{"' | tee -a "$OUT"
  local code=${PIPESTATUS[0]}
  if [ "$code" = 124 ]; then echo "{\"cut\": \"$*\", \"after_s\": $share}" | tee -a "$OUT"
  elif [ "$code" != 0 ]; then echo "{\"failed\": \"$*\", \"exit\": $code}" | tee -a "$OUT"; fi
}
ours() { run "$PY" -c 'import sys; from rlhfkit.cli import main; sys.exit(main(sys.argv[1:]))' bench ppo --json \
  --device "$DEVICE" "${SHAPE[@]}" "$@"; }
"$PY" gpu_rollout.py bound --device "$DEVICE" "${SHAPE[@]}" | tee -a "$OUT"
ours --rollout-engine hf-static --async-rollouts 0
ours --rollout-engine hf-static --async-rollouts 1
run "$PEER" peer_ppo.py --device "$DEVICE" "${SHAPE[@]}" --forward-batch 32
ours --rollout-engine hf --async-rollouts 0
ours --rollout-engine hf --async-rollouts 1
grep -q '"impl": "trl' "$OUT" || echo "TRL peer run failed or was cut (PEER_PYTHON needs trl==0.29.1)"
"$PY" gpu_rollout.py summary < "$OUT"
echo "total $((SECONDS - START)) s of a budget of $BUDGET s"
rm -f "$OUT"
