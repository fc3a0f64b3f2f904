"""Why `--bf16` on a CPU runs attention as eager matmuls (train/distributed.py): CPU-milliseconds of one forward
and backward pass of causal attention at `rlhf bench ppo --dim 256 --resp 64`'s shape, fp32 and bf16, through
torch's fused `scaled_dot_product_attention` and through the eager form (QKᵀ, softmax, AV) transformers' "eager"
runs.

    OMP_NUM_THREADS=1 .venv/bin/python bench/attention_bf16.py [--batch 64 --heads 4 --seq 80 --head-dim 64]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F


def fused(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def eager(q, k, v):
    """As transformers' eager_attention_forward: softmax's output cast back to V's dtype for AV."""
    seq = q.shape[-2]
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    scores = scores.masked_fill(~torch.ones(seq, seq, dtype=torch.bool).tril(), float("-inf"))
    return torch.softmax(scores, dim=-1).to(v.dtype) @ v


def cpu_ms(attention, dtype, shape, repeats: int = 5) -> tuple[float, float]:
    """Best (forward, forward + backward) CPU-milliseconds over `repeats` runs."""
    q, k, v = (torch.randn(shape, dtype=dtype, requires_grad=True) for _ in range(3))
    attention(q, k, v).float().sum().backward()  # warm-up
    forward = both = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        out = attention(q, k, v)
        forward = min(forward, time.process_time() - start)
        out.float().sum().backward()
        both = min(both, time.process_time() - start)
    return round(forward * 1e3, 1), round(both * 1e3, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in (("batch", 64), ("heads", 4), ("seq", 80), ("head-dim", 64)):
        parser.add_argument(f"--{name}", type=int, default=default)
    args = parser.parse_args()
    shape = (args.batch, args.heads, args.seq, args.head_dim)
    print(f"causal attention {shape}, {torch.get_num_threads()} thread(s): CPU-ms forward, forward + backward")
    for name, attention in (("fused SDPA", fused), ("eager", eager)):
        for dtype in (torch.float32, torch.bfloat16):
            print(f"  {name:<11}{str(dtype).removeprefix('torch.'):<10}{cpu_ms(attention, dtype, shape)}")


if __name__ == "__main__":
    main()
