"""Tokenization and padding: right padding for training, left padding for generation.

The prompt and the completion are tokenized separately and concatenated, then EOS is appended, so the
boundary between them is exact for every tokenizer; the loss mask is 0 on the prompt and on padding.
"""

from __future__ import annotations

import torch


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_pair(tokenizer, prompt_ids: list[int], completion: str, max_length: int) -> tuple[list[int], list[int]]:
    """prompt + completion + EOS, and a loss mask that is 1 only on completion tokens and the EOS.

    When too long, the prompt loses tokens on the left first (its end is what conditions the answer),
    then the completion is cut on the right.
    """
    target = encode(tokenizer, completion) + [tokenizer.eos_token_id]
    target = target[:max_length - 1] if len(target) >= max_length else target
    prompt = prompt_ids[-(max_length - len(target)):] if len(prompt_ids) + len(target) > max_length else prompt_ids
    return prompt + target, [0] * len(prompt) + [1] * len(target)


def pad_right(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def pad_left(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([[value] * (width - len(r)) + r for r in rows], dtype=torch.long)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that count only real tokens, so a left-padded row starts at position 0."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last 1 in each row of a right-padded mask (0 for an empty row): where the reward model reads
    r(x, y) and where PPO adds it to the per-token rewards."""
    positions = torch.arange(mask.shape[-1], device=mask.device)
    return (positions * mask.long()).argmax(-1)


def pad_rankings(groups: list[dict], items: list[list[int]], device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(items [R, K], tiers [R, K]): each ranking's batch rows and their tiers (0 best, `data/pairs.py`) for the
    listwise loss (`losses.plackett_luce_loss`), right-padded with row 0 and tier −1; (None, None) when some group's
    pairs are not one ranking (its `tiers` is None)."""
    if any(g.get("tiers") is None for g in groups):
        return None, None
    return pad_right(items, 0).to(device), pad_right([g["tiers"] for g in groups], -1).to(device)
