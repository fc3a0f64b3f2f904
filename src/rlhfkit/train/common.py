"""What every training loop shares: the run directory, seeding, the optimizer and schedule, batching.

A run directory holds the resolved `config.toml`, a `metrics.jsonl` (one JSON object per logged step)
and the run's outputs. Inputs are validated before the directory is created, so a bad input leaves
nothing behind.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rlhfkit.config import option, to_toml
from rlhfkit.data.jsonl import append_jsonl
from rlhfkit.errors import UserError


@dataclass
class RunOptions:
    """Fields every training command has (mixed into each command's config)."""
    out: str = option(None, "run directory (config.toml, metrics.jsonl, the saved model)", required=True)
    seed: int = option(0, "random seed; the same seed gives the same run on CPU")
    overwrite: bool = option(False, "replace an existing, non-empty run directory")
    tensorboard: bool = option(False, "also log metrics to TensorBoard (in OUT/tensorboard)")
    device: str = option("auto", "cpu, cuda, cuda:N or auto")
    threads: int = option(0, "torch CPU threads (0: leave torch's default)")


def prepare_out_dir(out: str | os.PathLike, overwrite: bool) -> Path:
    """Check the output directory can be (re)used; does not create it (see RunDir)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out}: directory exists and is not empty (pass --overwrite to replace it)")
    return out


class RunDir:
    """config.toml + metrics.jsonl (+ TensorBoard) of one run."""

    def __init__(self, out: str | os.PathLike, config, overwrite: bool = False, tensorboard: bool = False):
        self.path = prepare_out_dir(out, overwrite)
        if self.path.exists() and overwrite:
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "config.toml").write_text(to_toml(config), encoding="utf-8")
        self.metrics_path = self.path / "metrics.jsonl"
        self.start = time.time()
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self._tb = SummaryWriter(str(self.path / "tensorboard"))

    def log(self, step: int, **metrics) -> dict:
        record = {"step": step, "time_s": round(time.time() - self.start, 3)}
        record.update({k: _plain(v) for k, v in metrics.items()})
        append_jsonl(self.metrics_path, record)
        if self._tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step",):
                    self._tb.add_scalar(key, value, step)
        return record

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _plain(value):
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else str(value)
    return value


def split_by_prompt(records: list[dict], fraction: float, seed: int, salt: str) -> tuple[list[dict], list[dict]]:
    """(train, held out): whole prompts are held out (all their records), never single samples or pairs."""
    def held(prompt: str) -> bool:
        digest = hashlib.md5(f"{salt}|{seed}|{prompt}".encode()).hexdigest()
        return int(digest[:8], 16) % 10_000 < fraction * 10_000
    train = [r for r in records if not held(r["prompt"])]
    held_out = [r for r in records if held(r["prompt"])]
    return (train, held_out) if train else (records, [])


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


def warmup_cosine(optimizer, total_steps: int, warmup_steps: int, final_fraction: float = 0.1):
    """Linear warm-up, then cosine decay to `final_fraction` of the peak learning rate."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator, drop_last: bool = False):
    """Index lists covering range(n) in a random order (seeded)."""
    order = torch.randperm(n, generator=generator).tolist()
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    return [order[i:i + batch_size] for i in range(0, stop, batch_size)]


def progress(total: int, desc: str):
    """A tqdm bar on stderr (hidden when stderr is not a terminal)."""
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, disable=None, file=sys.stderr)


def check_finite(loss: torch.Tensor, step: int, what: str = "loss") -> None:
    if not torch.isfinite(loss).all():
        raise UserError(f"step {step}: {what} is not finite ({loss.item()}); stopping "
                        "(lower the learning rate; the last saved checkpoint is intact)")
