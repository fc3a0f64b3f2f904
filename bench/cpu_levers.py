"""What else could shorten a bf16 PPO update on a CPU: three measurements behind README "bf16 on CPUs".

1. `square`  torch's fp32 and bf16 matmul rates on square n × n matrices, the shapes the issue on bf16 first
             measured (there: bf16 3.2–4.8× fp32). A whole run cannot gain more than its matmuls do (Amdahl), so
             this ratio bounds bf16 ÷ fp32 of any run on the machine; `make bench`'s bounds line does it at the
             models' own shapes.
2. `gelu`    GPT-2's tanh GELU, 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))), forward + backward on a minibatch's
             MLP activations [5120, 1024]: torch's kernel vs the same function written as x·σ(2√(2/π)(x + 0.044715x³))
             from in-place ops with its own backward (the sigmoid is a faster kernel than tanh here).
3. `compile` one forward + backward of `rlhf bench ppo`'s policy as the update runs it (`response_logprobs` under
             `--bf16`'s autocast, or fp32), eager vs `torch.compile` (Inductor fuses the norms, GELU, softmax and
             casts into C++ loops); the compile itself is timed apart.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/cpu_levers.py [square gelu compile]
"""

from __future__ import annotations

import math
import sys
import time

import torch
from transformers import AutoModelForCausalLM

from rlhfkit.models.loading import fuse_activations
from rlhfkit.models.policy import response_logprobs
from rlhfkit.models.precision import autocast_model
from rlhfkit.recipes.bench import bench_tokenizer, dtype_matmul_gflops, gpt2_config
from rlhfkit.recipes.configs import ModelShape

K = 2 * math.sqrt(2 / math.pi)  # 2·√(2/π): tanh(u) = 2σ(2u) − 1, so the GELU is x·σ(K·(x + C·x³))
C = 0.044715


def best_seconds(calls: list, repeats: int = 7) -> list[float]:
    """The best wall-clock seconds of each (fn, *args) in `calls`, run in turn `repeats` times (interleaved, so a
    noisy neighbour slows them alike) after one warm-up each (oneDNN picks its kernels, Inductor compiles)."""
    for fn, *args in calls:
        fn(*args)
    best = [float("inf")] * len(calls)
    for _ in range(repeats):
        for i, (fn, *args) in enumerate(calls):
            start = time.perf_counter()
            fn(*args)
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def square(sizes=(256, 512, 1024, 2048)) -> None:
    print(f"square matmuls, {torch.get_num_threads()} thread(s): GFLOP/s fp32, bf16, bf16 ÷ fp32")
    for n in sizes:
        fp32, bf16 = (dtype_matmul_gflops([(n, n, n)], dtype, 0.4)["gflops"]
                      for dtype in (torch.float32, torch.bfloat16))  # `rlhf bench matmul`'s timing
        print(f"  n = {n:<5}{fp32:8.1f}{bf16:8.1f}{bf16 / fp32:8.2f}")


class SigmoidGELU(torch.autograd.Function):
    """The tanh GELU as x·σ(u), u = K·(x + C·x³); d/dx = σ(u) + x·σ(u)·(1 − σ(u))·K·(1 + 3C·x²)."""

    @staticmethod
    def forward(ctx, x):
        s = (x * x).mul_(C * K).add_(K).mul_(x).sigmoid_()
        ctx.save_for_backward(x, s)
        return x * s

    @staticmethod
    def backward(ctx, grad):
        x, s = ctx.saved_tensors
        slope = (x * x).mul_(3 * C * K).add_(K).mul_(x).mul_(s).mul_(1 - s).add_(s)
        return grad * slope


def torch_gelu(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.gelu(x, approximate="tanh")


def forward_backward(f, x: torch.Tensor, grad: torch.Tensor) -> None:
    f(x).backward(grad)


def gelu(shape=(5120, 1024)) -> None:
    print(f"tanh GELU on {list(shape)}: ms forward + backward, torch's kernel vs x·σ(u) in place")
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(shape, dtype=dtype, requires_grad=True)
        grad = torch.randn(shape, dtype=dtype)
        calls = [(forward_backward, f, x, grad) for f in (torch_gelu, SigmoidGELU.apply)]
        times = [s * 1e3 for s in best_seconds(calls)]
        print(f"  {str(dtype).removeprefix('torch.'):<10}torch {times[0]:6.2f}   x·σ(u) {times[1]:6.2f}")


def policy_step(model, ids: torch.Tensor, mask: torch.Tensor, prompt: int) -> None:
    logp, _ = response_logprobs(model, ids, mask, prompt)
    logp.mean().backward()


def compile_update(batch: int = 64, prompt: int = 16, resp: int = 64) -> None:
    tokenizer = bench_tokenizer(512)
    ids = torch.randint(3, 512, (batch, prompt + resp))
    mask = torch.ones_like(ids)
    print(f"policy forward + backward as the PPO update runs it (GPT-2, 4 layers, d = 256, {batch} × "
          f"{prompt + resp} tokens): s eager, compiled, the compile")
    for bf16 in (False, True):
        torch.manual_seed(0)
        config = gpt2_config(ModelShape(dim=256), tokenizer, prompt + resp)
        model = fuse_activations(AutoModelForCausalLM.from_config(config))  # as models/loading.py loads it
        if bf16:
            autocast_model(model, "cpu")
        compiled = torch.compile(model)

        start = time.perf_counter()
        policy_step(compiled, ids, mask, prompt)
        compile_s = time.perf_counter() - start
        eager_s, compiled_s = best_seconds([(policy_step, m, ids, mask, prompt) for m in (model, compiled)])
        print(f"  {'bf16' if bf16 else 'fp32':<10}eager {eager_s:6.3f}   compiled {compiled_s:6.3f}   "
              f"compile {compile_s:5.1f}")


def main() -> None:
    parts = {"square": square, "gelu": gelu, "compile": compile_update}
    asked = sys.argv[1:] or list(parts)
    unknown = [a for a in asked if a not in parts]
    if unknown:
        sys.exit(f"bench/cpu_levers.py: unknown part {unknown[0]!r} (square, gelu, compile)")
    for name in asked:
        parts[name]()


if __name__ == "__main__":
    main()
