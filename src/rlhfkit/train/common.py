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
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from rlhfkit.config import check_at_least, option, required, to_toml
from rlhfkit.data.jsonl import append_jsonl
from rlhfkit.errors import UserError
from rlhfkit.models.loading import check_dtype_option
from rlhfkit.models.lora import check_lora_options
from rlhfkit.storage import write_text_atomic
from rlhfkit.train.checkpoint import DEFAULT_KEEP, check_keep
from rlhfkit.train.distributed import is_main_process
from rlhfkit.train.trackers import Trackers, check_report_to


@dataclass
class RunOptions:
    """Fields every training command has (mixed into each command's config)."""
    out: str | None = required("run directory (config.toml, metrics.jsonl, the saved model)")
    seed: int = option(0, "random seed; the same seed gives the same run on CPU")
    overwrite: bool = option(False, "replace an existing, non-empty run directory")
    tensorboard: bool = option(False, "also log metrics to TensorBoard (in OUT/tensorboard); the same as "
                               "--report-to tensorboard")
    report_to: list[str] = option([], "also log metrics to these trackers: tensorboard, wandb, trackio "
                                  "(comma-separated; none: OUT/metrics.jsonl only), under TRL's names "
                                  "(train/trackers/__init__.py)")
    device: str = option("auto", "cpu, cuda, cuda:N or auto")
    threads: int = option(0, "torch CPU threads (0: leave torch's default)")
    # crash safety (train/checkpoint.py)
    checkpoint_every: int = option(0, "write a resumable checkpoint (models, optimizer, data position, RNG states) "
                                   "into OUT/resume every N steps (0: none)")
    resume: bool = option(False, "continue the run in OUT from its last checkpoint (same command and flags; "
                          "a run with no checkpoint yet starts over)")
    keep_checkpoints: int = option(DEFAULT_KEEP, "checkpoints kept in OUT/resume, the oldest removed first "
                                   "(default 1: the newest is always whole, since it is renamed into place once "
                                   "written; each holds the weights and AdamW's moments, ~3x the model)")
    # scale (train/distributed.py, models/lora.py)
    num_processes: int = option(1, "data-parallel processes on this machine through accelerate (DDP; gloo on CPU)")
    fsdp: bool = option(False, "with several processes: shard the models with FSDP2 instead of DDP")
    bf16: bool = option(False, "bfloat16 autocast for forward passes (GPUs, and CPUs with AVX512-BF16, AMX or Arm "
                        "BF16; weights, optimizer and losses stay float32)")
    lora_r: int = option(0, "LoRA rank for the trained model(s) (0: full fine-tuning)")
    lora_alpha: float | None = option(None, "LoRA scale α (the update is α/r·BA; default 2·r)")
    lora_targets: list[str] = option([], "module names LoRA adapts (default: attention and MLP projections of "
                                     "GPT-2 and Llama; all linear layers otherwise)")
    lora_save: str = option("merged", "with LoRA, save the model 'merged' (a plain model directory) or as an "
                            "'adapter' (peft adapter beside its base)")
    # tokens (data/chat.py, models/loading.py)
    dtype: str = option("auto", "dtype of the saved model: auto (the checkpoint's, from its config.json), float32, "
                        "bfloat16 or float16 (training weights stay float32)")
    truncation: str = option("truncate", "rows longer than the length limits: 'truncate' (prompts from the left, "
                             "the rest from the right; the count is logged) or 'error' (refused, naming the row)")
    chat_template: str | None = option(None, "a Jinja chat template file that sets or replaces the tokenizer's "
                                       "(saved with the model)")

    def check(self) -> None:
        """The shared fields' values (a subclass's `check` calls this first); nothing is read from disk."""
        check_at_least(self, 0, "threads", "checkpoint_every")
        check_report_to(self.report_to)
        check_at_least(self, 1, "num_processes")
        if self.fsdp and self.num_processes < 2 and int(os.environ.get("WORLD_SIZE", "1")) < 2:
            raise UserError("config key 'fsdp' shards models across processes: it needs --num-processes 2 or more")
        if self.fsdp and self.lora_r:
            raise UserError("config key 'fsdp' with LoRA: the adapters are small; use DDP (the default)")
        check_keep(self.keep_checkpoints)
        check_dtype_option(self.dtype)
        if self.truncation not in ("truncate", "error"):
            raise UserError(f"config key 'truncation' must be truncate or error (got {self.truncation!r})")
        check_lora_options(self)


def prepare_out_dir(out: str | os.PathLike, overwrite: bool, resume: bool = False) -> Path:
    """Check the output directory can be (re)used; does not create it (see RunDir).

    With `resume` a non-empty directory must be a run directory (it has a config.toml). Only the main process
    checks: in a multi-process run the others may find the directory that process 0 has just made.
    """
    out = Path(out)
    if not is_main_process():
        return out
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    if resume and out.exists() and any(out.iterdir()):
        if not (out / "config.toml").is_file():
            raise UserError(f"{out}: cannot resume: not a run directory (no config.toml)")
        return out
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out}: directory exists and is not empty (pass --overwrite to replace it, or --resume "
                        "to continue its run)")
    return out


class RunDir:
    """config.toml + metrics.jsonl (+ the trackers of --report-to) of one run."""

    def __init__(self, out: str | os.PathLike, config, overwrite: bool = False, report_to: list[str] = (), *,
                 resume: bool = False, main: bool = True):
        """`report_to`: trackers also fed each record (train/trackers); `resume`: keep the directory of an
        interrupted run (its config must match, see `check_same_config`); `main`: False in processes other than
        process 0 of a multi-process run, which write nothing."""
        self.path, self.main = Path(out), main
        self.metrics_path = self.path / "metrics.jsonl"
        self.keep_checkpoints = getattr(config, "keep_checkpoints", DEFAULT_KEEP)  # checked by RunOptions.check()
        self.start = time.time()
        self._trackers = None
        if not main:
            return
        self.path = prepare_out_dir(out, overwrite, resume)
        if resume and (self.path / "config.toml").exists():
            check_same_config(self.path / "config.toml", config)
        elif self.path.exists() and overwrite:
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path / "config.toml", to_toml(config))  # a full disk keeps the previous one
        if report_to:
            self._trackers = Trackers(report_to, self.path, config, resume)

    def log(self, step: int, **metrics) -> dict:
        record = {"step": step, "time_s": round(time.time() - self.start, 3)}
        record.update({k: _plain(v) for k, v in metrics.items()})
        if not self.main:
            return record
        append_jsonl(self.metrics_path, record)
        if self._trackers is not None:
            self._trackers.log(record)
        return record

    def close(self) -> None:
        if self._trackers is not None:
            self._trackers.close()


# Keys that may change between an interrupted run and its --resume (they change no number of the run).
RESUMABLE_CHANGES = ("out", "overwrite", "resume", "tensorboard", "report_to", "device", "threads", "checkpoint_every",
                     "keep_checkpoints")


def check_same_config(saved_path: Path, config) -> None:
    """--resume continues the same run: a changed key (other than bookkeeping) is a user error."""
    try:
        saved = tomllib.loads(saved_path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
        raise UserError(f"{saved_path}: cannot resume: unreadable config ({exc})") from None
    now = tomllib.loads(to_toml(config))
    changed = sorted(k for k in set(saved) | set(now) if k not in RESUMABLE_CHANGES and saved.get(k) != now.get(k))
    if changed:
        shown = ", ".join(f"{k} ({saved.get(k)!r} -> {now.get(k)!r})" for k in changed[:3])
        raise UserError(f"{saved_path.parent}: cannot resume with a different config: {shown} "
                        "(resume with the flags of the interrupted run)")


def _plain(value):
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else str(value)
    return value


def split_by_prompt(records: list[dict], fraction: float, seed: int, salt: str, command: str = "train"
                    ) -> tuple[list[dict], list[dict]]:
    """(train, held out): whole prompts are held out (all their records), never single samples or pairs.

    A prompt is held out when its hash (of `salt`, `seed` and the prompt) falls in the first `fraction` of its
    range, whatever the file's order or length. Where that holds out none of a small file's prompts (5% of 48
    conversations can give none), the prompt whose hash is lowest is held out; where it would hold out all of
    them, the highest stays in training: with two distinct prompts or more, each side gets at least one. When
    several records share one prompt nothing can be held out, and one line on stderr says so."""
    def position(prompt) -> int:
        digest = hashlib.md5(f"{salt}|{seed}|{prompt}".encode()).hexdigest()
        return int(digest[:8], 16) % 10_000
    key = lambda r: str(r["prompt"] if "prompt" in r else r.get("text", r.get("messages")))  # noqa: E731 - SFT text/messages
    positions = {key(r): 0 for r in records}
    positions = {k: position(k) for k in positions}
    held = {k for k, v in positions.items() if v < fraction * 10_000}
    if fraction > 0 and len(positions) < 2:
        if len(records) > 1:
            print(f"{command}: all {len(records)} records have the same prompt: none held out for evaluation "
                  "(give --eval-data)", file=sys.stderr)
        return records, []
    if fraction > 0 and not held:
        held = {min(positions, key=positions.get)}
    elif held and len(held) == len(positions):
        held.remove(max(positions, key=positions.get))
    return [r for r in records if key(r) not in held], [r for r in records if key(r) in held]


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


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator, drop_last: bool = False):
    """Index lists covering range(n) in a random order (seeded)."""
    order = torch.randperm(n, generator=generator).tolist()
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    return [order[i:i + batch_size] for i in range(0, stop, batch_size)]


class EpochBatches:
    """`shuffled_batches` epoch after epoch, yielding (epoch, indices), with a position a checkpoint can save.

    The order of an epoch is drawn from `generator` when the epoch starts, as a loop over `shuffled_batches`
    would; `state_dict` holds the epoch, the index in it and its order, so a resumed run sees the same batches.
    """

    def __init__(self, n: int, batch_size: int, epochs: int, generator: torch.Generator):
        self.n, self.batch_size, self.epochs, self.generator = n, batch_size, epochs, generator
        self.epoch, self.index, self.order = 0, 0, None

    def __iter__(self):
        while self.epoch < self.epochs:
            if self.order is None:
                self.order = shuffled_batches(self.n, self.batch_size, self.generator)
            while self.index < len(self.order):
                self.index += 1
                yield self.epoch, self.order[self.index - 1]
            self.epoch, self.index, self.order = self.epoch + 1, 0, None

    @property
    def end_of_epoch(self) -> bool:
        """True after the last batch of an epoch was handed out."""
        return self.order is not None and self.index == len(self.order)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "order": self.order}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.index, self.order = state["epoch"], state["index"], state["order"]


def progress(total: int, desc: str):
    """A tqdm bar on stderr (hidden when stderr is not a terminal, and in processes other than process 0)."""
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, disable=None if is_main_process() else True,
                file=sys.stderr)


def check_finite(loss: torch.Tensor, step: int, what: str = "loss", where: str | None = None,
                 inputs: dict[str, torch.Tensor] | None = None, mask: torch.Tensor | None = None) -> None:
    """Stop with one line when `loss` is not finite, saying what and where (`where`, default "step N") and which
    of its `inputs` (named tensors, read where `mask` is 1) are not finite. `step`: the updates taken so far; at
    0 no weight has moved yet, so the data or the model give the loss, not the learning rate, and the advice
    says so."""
    if torch.isfinite(loss).all():
        return
    keep = mask.bool() if mask is not None else True
    bad = [name for name, tensor in (inputs or {}).items() if (~torch.isfinite(tensor) & keep).any()]
    detail = f"; not finite among its inputs: {', '.join(bad)}" if bad else "; its inputs are finite" if inputs else ""
    advice = ("before any update: the data or the model give it, not the training" if step == 0 else
              "lower the learning rate; the last saved checkpoint in OUT/resume is intact")
    raise UserError(f"{where or f'step {step}'}: {what} is not finite ({loss.item()}){detail}; stopping ({advice})")
