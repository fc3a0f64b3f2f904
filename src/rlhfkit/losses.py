"""The equations of RLHF as pure tensor functions.

Every function takes tensors and masks and returns a tensor; nothing here logs, saves or knows about
models. Shapes: B = batch, T = tokens. Masks are 1 on the tokens that count and 0 on padding.
Sources: Ouyang et al. 2022 (InstructGPT), Stiennon et al. 2020 (summarize from feedback),
Schulman et al. 2017 (PPO), Ziegler et al. 2019 (KL control), Rafailov et al. 2023 (DPO).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim=None) -> torch.Tensor:
    return (x * mask).sum() if dim is None else (x * mask).sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim=None) -> torch.Tensor:
    """Σ m·x / Σ m over `dim` (all elements when None); padding contributes nothing."""
    mask = mask.to(x.dtype)
    return masked_sum(x, mask, dim) / mask.sum(dim).clamp(min=1.0)


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log π(x_t | x_<t) of each target under softmax(logits / T); logits[:, t] predicts targets[:, t]."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    return -F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")


def lm_loss(logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy on the masked targets: −(1/N) Σ_t m_t log π(x_t | x_<t).

    SFT passes a mask that is 1 only on completion tokens (and EOS); pretraining passes the attention mask.
    """
    logp = token_logprobs(logits[:, :-1], input_ids[:, 1:])
    return -masked_mean(logp, loss_mask[:, 1:])
