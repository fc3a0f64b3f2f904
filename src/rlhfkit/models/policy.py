"""Calling models on `[left-padded prompt | response | right padding]` sequences.

The prompt block has width P, so the logits at positions P−1 … P+R−2 predict the R response tokens, and
the value of the state in which response token t is chosen is read at position P−1+t.
"""

from __future__ import annotations

import torch

from rlhfkit.data.collate import position_ids
from rlhfkit.losses import token_logprobs


def response_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_width: int) -> torch.Tensor:
    """Logits [B, R, V] that predict each response token (the LM head runs on those positions only)."""
    response_width = input_ids.shape[1] - prompt_width
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask),
                use_cache=False, logits_to_keep=response_width + 1)
    return out.logits[:, :-1]


def response_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_width: int,
                      temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(log π(y_t | x, y_<t) under softmax(logits / T) [B, R], the logits [B, R, V])."""
    logits = response_logits(model, input_ids, attention_mask, prompt_width)
    return token_logprobs(logits, input_ids[:, prompt_width:], temperature), logits


def response_values(value_model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    prompt_width: int) -> torch.Tensor:
    """V(x, y_<t) [B, R]: the scalar head read where each response token is chosen."""
    values = value_model(input_ids, attention_mask, position_ids(attention_mask))
    return values[:, prompt_width - 1:-1]
