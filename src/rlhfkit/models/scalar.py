"""Scalar-head models: the reward model r_θ(x, y) and the value model V_φ(x, y_<t).

Both are a causal LM's transformer (`AutoModel`, the LM head dropped) plus a linear head d → 1:

    h_t = backbone(x, y)_t            r(x, y) = w·h_T + b   (T: the response's last real token, its EOS)
                                      V(x, y_<t) = w·h_{t−1} + b   (every position)

InstructGPT §3.5 trains the RM from the SFT model with the unembedding replaced by a projection to a
scalar; the value function starts from the RM (InstructGPT App. C.3). The head is initialized
N(0, 1/√(d+1)) as in Stiennon et al. 2020 App. B.

On disk a scalar model is an ordinary `save_pretrained` directory of the backbone (any architecture:
GPT-2, Llama, ...) plus `scalar_head.safetensors` and `scalar_head.json`; the tokenizer is saved beside it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel

from rlhfkit.data.chat import Truncation, completion_ids, is_conversation, prompt_ids, stop_ids
from rlhfkit.data.collate import last_token_index, pad_right, position_ids
from rlhfkit.errors import UserError
from rlhfkit.models.loading import (
    LOAD_ERRORS,
    adapter_base,
    align_special_tokens,
    apply_adapter,
    check_model_dir,
    disable_dropout,
    fuse_activations,
)

HEAD_WEIGHTS = "scalar_head.safetensors"
HEAD_META = "scalar_head.json"


class ScalarModel(nn.Module):
    """A transformer backbone with a scalar head. `forward` gives one value per position, `score` one per row."""

    def __init__(self, backbone: nn.Module, head: nn.Linear):
        super().__init__()
        self.backbone = backbone
        self.head = head

    @property
    def config(self):
        return self.backbone.config

    # ---------------------------------------------------------------------------------------- building

    @classmethod
    def from_backbone(cls, path: str | os.PathLike, tokenizer=None, dtype: torch.dtype = torch.float32,
                      seed: int = 0) -> "ScalarModel":
        """A fresh head on the transformer of a causal LM directory (the SFT policy, for a reward model)."""
        backbone = _load_backbone(path, dtype)
        if tokenizer is not None:
            align_special_tokens(backbone, tokenizer)
        d = backbone.config.hidden_size
        head = nn.Linear(d, 1, dtype=dtype)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():  # N(0, 1/√(d+1)): Stiennon et al. 2020, App. B
            head.weight.copy_(torch.randn(head.weight.shape, generator=generator) / math.sqrt(d + 1))
            head.bias.zero_()
        return cls(disable_dropout(backbone), head)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> "ScalarModel":
        """A scalar model saved by `save_pretrained` (a reward model from `rlhf rm`, or a PPO value model)."""
        path = check_model_dir(path, "reward model")
        if not (path / HEAD_WEIGHTS).exists():
            raise UserError(f"{path}: not a reward/value model directory (no {HEAD_WEIGHTS}; train one with `rlhf rm`)")
        backbone = _load_backbone(path, dtype)
        state = load_file(path / HEAD_WEIGHTS)
        head = nn.Linear(state["weight"].shape[1], 1, dtype=dtype)
        head.load_state_dict({k: v.to(dtype) for k, v in state.items()})
        return cls(disable_dropout(backbone), head)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(path)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.head.state_dict().items()}, path / HEAD_WEIGHTS)
        meta = {"kind": "rlhfkit scalar head", "hidden_size": self.head.in_features,
                "read_at": "last real token (attention_mask)"}
        (path / HEAD_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    # ----------------------------------------------------------------------------------------- calling

    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               positions: torch.Tensor | None = None) -> torch.Tensor:
        if positions is None:
            positions = position_ids(attention_mask)
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                            use_cache=False)
        return out.last_hidden_state

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        """One scalar per position [B, T] (the value model reads V(x, y_<t) from these)."""
        return self.head(self.hidden(input_ids, attention_mask, positions)).squeeze(-1).float()

    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """r(x, y) [B]: the head read at each row's last real token (its EOS), whatever padding surrounds it."""
        hidden = self.hidden(input_ids, attention_mask)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return self.head(hidden[rows, last_token_index(attention_mask)]).squeeze(-1).float()

    # ------------------------------------------------------------ what train/distributed.py asks of a model

    def parallel_roots(self) -> dict[str, nn.Module]:
        """The parts that must each be a DDP/FSDP root: `score()` reaches the backbone and the head without
        passing through `forward()`, so a wrapper around the whole model would miss those calls."""
        return {"backbone": self.backbone, "head": self.head}

    def with_roots(self, roots: dict[str, nn.Module]) -> "ScalarModel":
        """The same model with its parts replaced (by their DDP wrappers)."""
        return type(self)(roots["backbone"], roots["head"])

    def autocast_root(self) -> nn.Module:
        """The part that runs under --bf16 autocast: the transformer (the head reads float32)."""
        return self.backbone

    def empty_copy(self) -> "ScalarModel":
        """A model of the same architecture with ordinary (unsharded) parameters, on the CPU, to load gathered
        weights into."""
        return ScalarModel(AutoModel.from_config(self.config), nn.Linear(self.head.in_features, 1))

    @torch.no_grad()
    def shift_bias(self, amount: float) -> None:
        """r ← r − amount: InstructGPT normalizes the RM so that demonstrations score 0 on average."""
        self.head.bias -= amount


def _load_backbone(path, dtype):
    path = check_model_dir(path)
    base = adapter_base(path)
    if base is not None:  # saved with --lora-save adapter: the base transformer, with the adapter merged in
        return apply_adapter(_load_backbone(base, dtype), path)
    try:
        return fuse_activations(AutoModel.from_pretrained(path, dtype=dtype))
    except LOAD_ERRORS as exc:
        raise UserError(f"{path}: cannot load a transformer backbone: {str(exc).splitlines()[0]}") from None


def response_sequences(tokenizer, prompts: list, texts: list, finished: list[bool] | None = None,
                       max_length: int = 256, truncation: Truncation | None = None,
                       where: str = "a response") -> list[list[int]]:
    """prompt + response token ids as the policy generates them (`data/chat.py`): the stop token (EOS, or a
    template's end-of-turn) kept when the response ended — as PPO's rollouts hold it. The RM reads the last one.

    Too long: the prompt loses tokens on the left, the response on the right (`truncation` counts or refuses)."""
    finished = finished if finished is not None else [True] * len(texts)
    truncation = truncation or Truncation(max_length)
    stops = stop_ids(tokenizer, None, True) if any(is_conversation(p) for p in prompts) else None
    rows, cache = [], {}
    for prompt, text, done in zip(prompts, texts, finished):
        key = id(prompt)
        if key not in cache:
            cache[key] = prompt_ids(tokenizer, prompt)
        head = cache[key]
        target = completion_ids(tokenizer, prompt, text, done, head, stops)
        head, target = truncation.pair(head, target, tokenizer.bos_token_id, where)
        rows.append(head + target)
    return rows


@torch.no_grad()
def score_sequences(model: ScalarModel, rows: list[list[int]], pad_id: int, batch_size: int = 128) -> list[float]:
    """r(x, y) of token-id rows, right-padded in batches of similar length (order preserved)."""
    device = next(model.parameters()).device
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    out = [0.0] * len(rows)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        ids = pad_right([rows[i] for i in idx], pad_id).to(device)
        mask = pad_right([[1] * len(rows[i]) for i in idx], 0).to(device)
        for i, value in zip(idx, model.score(ids, mask).tolist()):
            out[i] = value
    return out


def score_texts(model: ScalarModel, tokenizer, prompts: list, texts: list,
                finished: list[bool] | None = None, batch_size: int = 128) -> list[float]:
    """r(x, y) of (prompt, response) texts."""
    return score_sequences(model, response_sequences(tokenizer, prompts, texts, finished), tokenizer.pad_token_id,
                           batch_size)
