"""Seeding, threads, the optimizer and its schedule, and the progress bar: what every training loop (and the toy
world's pretraining) sets up the same way."""

from __future__ import annotations

import math
import random
import sys

import numpy as np
import torch
from tqdm.auto import tqdm

from rlhfkit.runtime.processes import is_main_process


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def set_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)


def make_optimizer(params, lr: float, weight_decay: float = 0.0, eps: float = 1e-8) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, eps=eps, betas=(0.9, 0.95))


def optimizer_step(optimizer, schedule, parameters, grad_clip: float) -> None:
    """After the backward pass: clip the gradient norm, step the optimizer and the schedule (None: a constant
    learning rate, as PPO's), clear the gradients."""
    torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
    optimizer.step()
    if schedule is not None:
        schedule.step()
    optimizer.zero_grad(set_to_none=True)


def warmup_cosine(optimizer, total_steps: int, warmup_steps: int, final_fraction: float = 0.1):
    """Linear warm-up, then cosine decay to `final_fraction` of the peak learning rate."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def progress(total: int, desc: str):
    """A tqdm bar on stderr (hidden when stderr is not a terminal, and in processes other than process 0)."""
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, disable=None if is_main_process() else True,
                file=sys.stderr)
