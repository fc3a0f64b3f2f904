"""Calling models on `[left-padded prompt | response | right padding]` sequences.

The prompt block has width P, so the logits at positions P−1 … P+R−2 predict the R response tokens, and
the value of the state in which response token t is chosen is read at position P−1+t.
"""

from __future__ import annotations

import torch

from rlhfkit.data.collate import position_ids
from rlhfkit.losses import token_entropy, token_logprobs
from rlhfkit.models import packing as pk

# Logits held at once by `scored_responses`, in elements: 2^28 float32 values, 1 GiB. A whole batch's can be far
# more: 128 rows × 256 response tokens × 151,936 (Qwen2.5's vocabulary) = 5·10^9 values, 20 GB.
LOGITS_BUDGET = 2**28


def response_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_width: int,
                    packing: bool = False) -> torch.Tensor:
    """Logits [B, R, V] that predict each response token (the LM head runs on those positions only). `packing`: the
    rows packed without padding (`models/packing.py`; zeros where the padded batch has padding)."""
    response_width = input_ids.shape[1] - prompt_width
    if packing and pk.supports_packing(model):
        return packed_response_logits(model, input_ids, attention_mask, prompt_width)
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask),
                use_cache=False, logits_to_keep=response_width + 1)
    return out.logits[:, :-1]


def packed_response_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                           prompt_width: int, temperature: float | None = None):
    """`response_logits` of the packed rows: the LM head runs on the packed columns that hold a position predicting
    a response token (with one row, exactly those positions), then each is read back to its place in [B, R, V].
    With a `temperature`: (log π(y_t | x, y_<t) [B, R], computed on the packed positions — the gradient flows
    through these —, the logits [B, R, V] detached, for statistics)."""
    p = pk.pack_for(model, input_ids, attention_mask)
    width = p.input_ids.shape[1]
    wanted = p.real.clone()
    wanted[:, :prompt_width - 1] = False
    wanted[:, -1] = False  # the last position predicts nothing
    keep = torch.zeros(width, dtype=torch.bool, device=wanted.device)
    keep[p.index[wanted] % width] = True
    columns = keep.nonzero().squeeze(-1)
    logits = pk.forward(model, p, logits_to_keep=columns).logits  # [N, K, V]
    slot = torch.full((width,), 0, dtype=torch.long, device=columns.device)
    slot[columns] = torch.arange(len(columns), device=columns.device)
    at = p.index[:, prompt_width - 1:-1]  # [B, R]: where each predicting position sits
    flat = (at // width) * len(columns) + slot[at % width]
    real = p.real[:, prompt_width - 1:-1]
    if temperature is None:
        out = logits.reshape(-1, logits.shape[-1])[flat]
        return torch.where(real[..., None], out, torch.zeros((), dtype=out.dtype, device=out.device))
    targets = p.input_ids[:, (columns + 1).clamp(max=width - 1)]  # the packed token after each kept position
    logp = token_logprobs(logits, targets, temperature).reshape(-1)[flat] * real
    with torch.no_grad():
        out = logits.detach().reshape(-1, logits.shape[-1])[flat]
        out = torch.where(real[..., None], out, torch.zeros((), dtype=out.dtype, device=out.device))
    return logp, out


def response_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_width: int,
                      temperature: float = 1.0, packing: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(log π(y_t | x, y_<t) under softmax(logits / T) [B, R], the logits [B, R, V]; packed: detached, the
    log-probs computed on the packed positions alone)."""
    if packing and pk.supports_packing(model):
        return packed_response_logits(model, input_ids, attention_mask, prompt_width, temperature)
    logits = response_logits(model, input_ids, attention_mask, prompt_width)
    return token_logprobs(logits, input_ids[:, prompt_width:], temperature), logits


def scored_responses(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_width: int,
                     temperature: float = 1.0, packing: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(log π(y_t | x, y_<t), the entropy of π(· | x, y_<t)) [B, R] each, under softmax(logits / T), for scoring
    without gradients: the rows go through the model in chunks whose logits fit LOGITS_BUDGET, so no [B, R, V]
    tensor of the whole batch is ever held."""
    response_width = input_ids.shape[1] - prompt_width
    vocab = getattr(model, "module", model).config.vocab_size  # (DDP wraps the model in .module)
    rows = max(1, LOGITS_BUDGET // max(1, (response_width + 1) * vocab))
    logp, entropy = [], []
    for start in range(0, len(input_ids), rows):
        chunk = slice(start, start + rows)
        logits = response_logits(model, input_ids[chunk], attention_mask[chunk], prompt_width, packing)
        logp.append(token_logprobs(logits, input_ids[chunk, prompt_width:], temperature))
        entropy.append(token_entropy(logits, temperature))
        del logits
    return torch.cat(logp), torch.cat(entropy)


def response_values(value_model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    prompt_width: int, packing: bool = False) -> torch.Tensor:
    """V(x, y_<t) [B, R]: the scalar head read where each response token is chosen (`packing`: of the packed rows,
    read back to their places; 0 where the padded batch has padding)."""
    if packing and pk.supports_packing(value_model):
        p = pk.pack_for(value_model, input_ids, attention_mask)
        with pk.packed_rows():
            values = value_model(p.input_ids, None, p.position_ids)
        return pk.unpack(values, p)[:, prompt_width - 1:-1]
    values = value_model(input_ids, attention_mask, position_ids(attention_mask))
    return values[:, prompt_width - 1:-1]
