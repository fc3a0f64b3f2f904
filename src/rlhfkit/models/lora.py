"""LoRA through `peft`: train a low-rank update BA of chosen weight matrices, W + (α/r)·BA, the rest frozen
(Hu et al. 2021). B starts at 0, so a fresh adapter changes nothing: the first PPO ratio and KL stay exact.

- `add_lora` wraps a causal LM (the policy) or a scalar model's transformer (reward and value models);
  the scalar head stays fully trained.
- `AdaptersOff` is the same weights with the adapters switched off: with LoRA, PPO's frozen reference is the
  policy itself and the frozen reward model is the value model's backbone — no second copy of either.
- `save_model` writes the result merged (an ordinary model directory, the default) or adapter-only (peft's
  adapter_config.json + adapter weights, loaded on top of the base they name: `adapter_base` and
  `apply_adapter` in `models/loading.py`, beside the loading of every model directory).
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import torch

from rlhfkit.errors import UserError
from rlhfkit.storage import save_pretrained_atomic

# Attention and MLP projections (the QLoRA recipe: every linear layer of the blocks, not only q and v).
DEFAULT_TARGETS = {
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
def add_lora(model: torch.nn.Module, cfg, base_path: str | os.PathLike | None = None) -> torch.nn.Module:
    """`model` with LoRA adapters (a peft model; only the adapters train), or `model` itself when lora_r = 0."""
    if not cfg.lora_r:
        return model
    import peft

    model_type = getattr(model.config, "model_type", "")
    targets = list(cfg.lora_targets) or DEFAULT_TARGETS.get(model_type, "all-linear")
    config = peft.LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha or 2 * cfg.lora_r, lora_dropout=0.0,
                             target_modules=targets, fan_in_fan_out=model_type == "gpt2", bias="none")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wrapped = peft.get_peft_model(model, config)
    except ValueError as exc:  # e.g. a target module that does not exist
        raise UserError(f"config key 'lora_targets': {str(exc).splitlines()[0]}") from None
    if base_path is not None:  # an adapter directory names its base by an absolute path
        wrapped.peft_config["default"].base_model_name_or_path = str(Path(base_path).resolve())
    return wrapped


def has_lora(model) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "merge_and_unload")


class AdaptersOff:
    """Calls a peft model with its adapters switched off: the frozen base it started from, same weights."""

    def __init__(self, model):
        self.model = model

    def __call__(self, *args, **kwargs):
        with self.model.disable_adapter():
            return self.model(*args, **kwargs)

    def __getattr__(self, name):  # config, device, ... of the underlying model
        return getattr(self.model, name)


def copy_head(head: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(head).requires_grad_(False)


def merged(model: torch.nn.Module) -> torch.nn.Module:
    """W + (α/r)·BA folded into W, adapters removed (a plain transformers model again)."""
    return model.merge_and_unload() if has_lora(model) else model


def merged_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights of `model` as a plain transformers model's state dict: for a LoRA model, each adapted weight
    is W + ΔW (peft's `get_delta_weight`: (α/r)·BA, transposed where the layer stores W transposed) and the adapter
    tensors are left out. The model itself is not touched (peft's merge_adapter would rewrite W in place, and W
    is the reference policy of a LoRA run)."""
    if not has_lora(model):
        return model.state_dict()
    base = model.get_base_model()
    state = {k.replace(".base_layer", ""): v for k, v in base.state_dict().items() if ".lora_" not in k}
    for name, module in base.named_modules():
        if hasattr(module, "base_layer") and hasattr(module, "get_delta_weight"):
            for adapter in module.active_adapters:
                state[f"{name}.weight"] = state[f"{name}.weight"] + module.get_delta_weight(adapter)
    return state


def save_model(out: str | os.PathLike, model: torch.nn.Module, tokenizer, how: str = "merged",
               dtype: torch.dtype | None = None) -> None:
    """Save a causal LM (atomically, with its tokenizer): merged, or — for a LoRA model and how='adapter' —
    the adapter alone, which `load_causal_lm` puts back on its base. A full disk is one line and leaves the
    previous files of `out` intact (`storage.save_pretrained_atomic`).

    `dtype`: the weights are written in it (the checkpoint's dtype, `loading.save_dtype`; None: as they are).
    Training weights stay float32: the model is cast for the save only, so call this last (it is the end of
    every trainer)."""
    if has_lora(model) and how == "adapter":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            save_pretrained_atomic(out, model, tokenizer)
        return
    model = merged(model)
    before = next(model.parameters()).dtype
    if dtype is None or dtype == before:
        save_pretrained_atomic(out, model, tokenizer)
        return
    model.to(dtype)
    try:
        save_pretrained_atomic(out, model, tokenizer)
    finally:
        model.to(before)


def save_scalar_model(out: str | os.PathLike, model, tokenizer=None, how: str = "merged") -> None:
    """A reward or value model: a sequence classifier with num_labels=1 (`models/scalar.py`; its adapter alone
    + the scalar head with how='adapter'), the tokenizer padding with the model's pad id; atomically, as
    `save_model`."""
    if has_lora(model.backbone) and how != "adapter":
        model.backbone = merged(model.backbone)
    if tokenizer is not None and model.pad_token_id is not None:  # it pads with the id the model never reads
        tokenizer = copy.deepcopy(tokenizer)
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(model.pad_token_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_pretrained_atomic(out, *([model] if tokenizer is None else [model, tokenizer]))
