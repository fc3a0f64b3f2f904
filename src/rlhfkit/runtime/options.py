"""The options every training command has (light: no torch, so a trainer's config loads for `rlhf CMD --help`
without it)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from rlhfkit.config import check_at_least, option, required
from rlhfkit.errors import UserError
from rlhfkit.models.options import check_dtype_option, check_lora_options
from rlhfkit.runtime.trackers import check_report_to

# Checkpoints kept (--keep-checkpoints). One, as before the flag existed: the newest is whole by construction
# (fsynced, then renamed), and each costs the trained weights plus AdamW's two moments, ~3x the model; writing
# the next one needs room for it beside those kept.
DEFAULT_KEEP = 1


def check_keep(keep: int) -> int:
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise UserError("config key 'keep_checkpoints' must be at least 1")
    return keep


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
                                  "(runtime/trackers/__init__.py)")
    device: str = option("auto", "cpu, cuda, cuda:N or auto")
    threads: int = option(0, "torch CPU threads (0: leave torch's default)")
    grad_clip: float = option(1.0, "gradient norm clipping")
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
