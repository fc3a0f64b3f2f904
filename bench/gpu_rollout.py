"""bench/gpu_rollout.sh's helper: the bandwidth bound of decoding, and the summary of the runs.

    python gpu_rollout.py bound ARGS     one JSON line: the GPU's measured copy bandwidth and, for the shape in
                                         ARGS (`rlhf bench ppo` flags), the bound on generation tokens/s
    python gpu_rollout.py summary < LINES   the ratios the issue asks for, from the JSON lines of the runs: fast vs
                                         eager decoding, ours vs TRL, the fraction of the bound, and per engine
                                         async (--async-rollouts 1) vs sync: seconds per PPO iteration, peak memory

The bound: one decoding step of a batch of B rows reads every weight once and the whole KV cache once; no step can
be faster than (weight bytes + KV-cache bytes) / copy bandwidth, so generation is at most B tokens per that time.
Weight bytes: the parameters as stored (float32: `rlhf ppo` keeps float32 weights under --bf16 autocast); KV cache:
2 · layers · kv_heads · head_dim · B · (prompt + resp/2) values in the compute dtype (bfloat16 under --bf16) — the
mean over a response's steps. The copy bandwidth is measured: a 2 GiB device-to-device copy reads and writes each
byte once. `--device cpu` measures a CPU copy instead (bench/gpu_rollout.sh's CPU check at a tiny shape).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch


def copy_bandwidth(n_bytes: int = 2**31, repeats: int = 10, device: str = "cuda") -> float:
    """Bytes moved per second (read + written) by a device-to-device copy."""
    src = torch.empty(n_bytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        dst.copy_(src)
    sync()
    return 2 * n_bytes * repeats / (time.perf_counter() - start)


def bound(argv: list[str]) -> dict:
    p = argparse.ArgumentParser()
    for name, default in (("layers", 24), ("dim", 896), ("heads", 14), ("kv_heads", 2), ("vocab", 151936),
                          ("prompt", 128), ("resp", 256), ("batch", 128)):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=default)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--device", default="cuda")
    args, _ = p.parse_known_args(argv)
    d, layers, head_dim = args.dim, args.layers, args.dim // args.heads
    ffn = d * 4864 // 896
    kv = args.kv_heads * head_dim
    per_layer = d * d + d + 2 * (d * kv + kv) + d * d + 3 * d * ffn + 2 * d  # q, k, v (+ biases), o, MLP, norms
    params = layers * per_layer + args.vocab * d + d  # + the tied embedding / head and the final norm
    weight_bytes = 4 * params
    kv_bytes = 2 * layers * kv * args.batch * (args.prompt + args.resp / 2) * (2 if args.bf16 else 4)
    bandwidth = copy_bandwidth(**({} if args.device == "cuda" else {"n_bytes": 2**26, "device": args.device}))
    step_s = (weight_bytes + kv_bytes) / bandwidth
    return {"bench": "bound", "params": params, "weight_gb": round(weight_bytes / 1e9, 3),
            "kv_cache_gb_mean": round(kv_bytes / 1e9, 3), "copy_gb_per_s": round(bandwidth / 1e9, 1),
            "step_ms_bound": round(1e3 * step_s, 3), "gen_tokens_per_s_bound": round(args.batch / step_s, 1)}


def summary(lines: list[dict]) -> dict:
    runs = {(r.get("impl"), r.get("rollout_engine"), r.get("async_rollouts", 0)): r for r in lines
            if r.get("bench") == "ppo"}
    bound_line = next((r for r in lines if r.get("bench") == "bound"), {})
    eager, fast = runs.get(("rlhfkit", "hf", 0)), runs.get(("rlhfkit", "hf-static", 0))
    trl = next((r for (impl, _, _), r in runs.items() if impl and impl.startswith("trl")), None)
    out = {"bench": "summary"}
    for engine in ("hf-static", "hf"):  # async K=1 vs sync: seconds per PPO iteration and peak GPU memory
        sync, overlap = runs.get(("rlhfkit", engine, 0)), runs.get(("rlhfkit", engine, 1))
        if sync and overlap:
            out[f"{engine}_iteration_s_sync_async"] = [sync["iteration_s"], overlap["iteration_s"]]
            out[f"{engine}_async_speedup"] = round(sync["iteration_s"] / overlap["iteration_s"], 2)
            out[f"{engine}_async_waits_s"] = {k: overlap.get(k) for k in ("rollout_wait_s", "weight_wait_s")}
            if "peak_gpu_mb" in sync:
                out[f"{engine}_peak_gpu_mb_sync_async"] = [sync["peak_gpu_mb"], overlap.get("peak_gpu_mb")]
    if trl:
        out["trl_iteration_s"] = round(trl["total_s"] / (trl["episodes"] / trl["batch"]), 3)
        out["trl_peak_gpu_mb"] = trl.get("peak_gpu_mb")
    if eager and fast:
        out["fast_vs_eager_gen_tokens_per_s"] = round(fast["gen_tokens_per_s"] / eager["gen_tokens_per_s"], 2)
    if fast and trl:
        out["ppo_vs_trl_episodes_per_s"] = round(fast["episodes_per_s"] / trl["episodes_per_s"], 2)
    if fast and bound_line:
        out["gen_fraction_of_bound"] = round(fast["gen_tokens_per_s"] / bound_line["gen_tokens_per_s_bound"], 3)
    out["targets"] = "fast/eager >= 3, PPO/TRL >= 3, generation >= 0.5 of the bound (issue 18)"
    return out


if __name__ == "__main__":
    if sys.argv[1:2] == ["bound"]:
        print(json.dumps(bound(sys.argv[2:])), flush=True)
    else:
        print(json.dumps(summary([json.loads(line) for line in sys.stdin if line.startswith('{"')])))
