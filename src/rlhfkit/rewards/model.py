"""A reward model as a reward source: today's rlhfkit scalar-head model behind the two calls every reward model
answers — `score_samples(samples)` on token ids the policy sampled, `score_texts(prompts, completions)` on text.
(`models/reward_model.py`'s RewardModel, for any sequence-classification RM, answers the same two.)"""

from __future__ import annotations

import torch

from rlhfkit.models.scalar import ScalarModel, score_texts


class ScalarRewardModel:
    """r(x, y) from a `ScalarModel` that shares the policy's tokenizer (read at the last real token: the EOS of a
    finished response)."""

    def __init__(self, model: ScalarModel, tokenizer):
        self.model, self.tokenizer = model, tokenizer

    def score_samples(self, samples) -> torch.Tensor:
        """[B] scores of a batch of `generation.Samples`."""
        return self.model.score(samples.input_ids, samples.attention_mask)

    def score_texts(self, prompts: list, completions: list, finished: list[bool] | None = None) -> torch.Tensor:
        return torch.tensor(score_texts(self.model, self.tokenizer, prompts, completions, finished))
