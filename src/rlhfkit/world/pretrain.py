"""Pretraining the toy world's base LM on its raw-web corpus (cached by a hash of everything it depends on)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

from rlhfkit.data.collate import pad_right
from rlhfkit.losses import lm_loss
from rlhfkit.runtime.optim import make_optimizer, progress, seed_everything, warmup_cosine
from rlhfkit.storage import save_pretrained_atomic

CACHE_VERSION = "base-v1"


def base_config(arch: str, tokenizer, d_model: int, n_layers: int, n_heads: int, n_positions: int):
    """A tiny GPT-2 (default) or Llama config with the world's special tokens and no dropout."""
    ids = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.eos_token_id,
               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    if arch == "gpt2":
        return GPT2Config(n_positions=n_positions, n_embd=d_model, n_layer=n_layers, n_head=n_heads,
                          resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True, **ids)
    if arch == "llama":
        return LlamaConfig(hidden_size=d_model, intermediate_size=(8 * d_model // 3 + 63) // 64 * 64,
                           num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=n_heads,
                           max_position_embeddings=n_positions, tie_word_embeddings=True, **ids)
    raise ValueError(f"unknown architecture {arch!r} (gpt2 or llama)")


def cache_root() -> Path:
    return Path(os.environ.get("RLHFKIT_CACHE", Path.home() / ".cache" / "rlhfkit"))


def cache_key(**parts) -> str:
    blob = json.dumps({"version": CACHE_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pretrain(config, documents: list[list[int]], *, steps: int, batch_size: int, lr: float, seed: int,
             log=None):
    """Train a fresh causal LM on token-id documents with the next-token loss on every real token."""
    generator = seed_everything(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.train()
    optimizer = make_optimizer(model.parameters(), lr, weight_decay=0.01)
    schedule = warmup_cosine(optimizer, steps, warmup_steps=max(1, steps // 20))
    bar = progress(steps, "pretraining base LM")
    batches: list[list[int]] = []
    for step in range(steps):
        if not batches:  # 8 batches at a time, each of similar lengths: little compute spent on padding
            pool = torch.randint(len(documents), (8 * batch_size,), generator=generator).tolist()
            pool.sort(key=lambda i: len(documents[i]))
            batches = [pool[i:i + batch_size] for i in range(0, len(pool), batch_size)]
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        rows = [documents[i] for i in batches.pop()]
        input_ids = pad_right(rows, config.pad_token_id)
        mask = pad_right([[1] * len(r) for r in rows], 0)
        loss = lm_loss(model(input_ids=input_ids, attention_mask=mask).logits, input_ids, mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        bar.update(1)
        if log is not None and (step % 25 == 0 or step == steps - 1):
            log(step, pretrain_loss=loss.item(), lr=schedule.get_last_lr()[0])
    bar.close()
    model.eval()
    return model


def cached_pretrain(key: str, tokenizer, out: Path, build, log=None) -> bool:
    """Copy the cached base model for `key` into `out`, or build it with `build()` and cache it.

    Returns True when the cache was used.
    """
    cached = cache_root() / f"base-{key}"
    if (cached / "model.safetensors").exists():
        shutil.copytree(cached, out, dirs_exist_ok=True)
        return True
    model = build()
    save_pretrained_atomic(out, model, tokenizer)
    try:
        tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
        shutil.copytree(out, tmp, dirs_exist_ok=True)
        os.replace(tmp, cached) if not cached.exists() else shutil.rmtree(tmp)
    except OSError:
        pass  # a read-only or full cache only costs time next run
    return False
