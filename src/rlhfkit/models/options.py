"""The model flags the configs share and their checks (light: no torch, no transformers, no peft, so a command's
config loads for `rlhf CMD --help` without them): precision (`precision.py`), the saved dtype (`loading.py`) and
LoRA (`lora.py`)."""

from __future__ import annotations

from dataclasses import dataclass

from rlhfkit.config import option
from rlhfkit.errors import UserError


@dataclass
class PrecisionOptions:
    """--bf16 of the commands that only run models (`rlhf sample`, `rlhf eval ...`); the trainers have their own."""
    bf16: bool = option(False, "bfloat16 autocast for the models' forward passes: sampling and scoring (GPUs, and "
                        "CPUs with AVX512-BF16, AMX or Arm BF16); --rollout-engine vllm then serves bf16 weights")


DTYPE_NAMES = ("float32", "bfloat16", "float16")  # --dtype's values besides auto (loading.DTYPES maps them)


def check_dtype_option(value: str) -> None:
    if value != "auto" and value not in DTYPE_NAMES:
        raise UserError(f"config key 'dtype' must be auto, {', '.join(DTYPE_NAMES)} (got {value!r})")


SAVE_MODES = ("merged", "adapter")


def check_lora_options(cfg) -> None:
    if cfg.lora_r < 0:
        raise UserError("config key 'lora_r' must be >= 0 (0: full fine-tuning)")
    if cfg.lora_save not in SAVE_MODES:
        raise UserError(f"config key 'lora_save': expected merged or adapter, got {cfg.lora_save!r}")
    if cfg.lora_r and cfg.lora_alpha is not None and cfg.lora_alpha <= 0:
        raise UserError("config key 'lora_alpha' must be > 0")
    if cfg.lora_r:
        try:
            import peft  # noqa: F401
        except ImportError:
            raise UserError("config key 'lora_r': LoRA needs peft (pip install 'rlhfkit[lora]')") from None
