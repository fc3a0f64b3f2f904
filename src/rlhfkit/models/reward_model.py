"""A reward model in its role: r(x, y) of a policy's samples, whoever trained the model and whatever its tokenizer.

Any reward-model directory loads (`ScalarModel.from_pretrained`: a sequence classifier with num_labels=1 from
`rlhf rm`, TRL's RewardTrainer, OpenRLHF, ...; or rlhfkit's older layout). The RM reads text as its own tokenizer
writes it:

- the same tokenizer as the policy's (`same_tokenizer`: the same vocabulary, BOS/EOS/unk, chat template and
  encoding; the pad token does not count — it never reaches the model), the sampled ids are scored as they are;
- a different one: each response is decoded (`Samples.texts`, without its stop token) and prompt + response are
  encoded again with the RM's tokenizer and chat template, the RM's stop token appended when the response ended
  (`scalar.response_sequences`, as `rlhf rm` encoded its training rows).

Comparing sizes is not enough: two tokenizers of 2,001 tokens can give EOS different ids (issue 17).

`packing` (a run's --packing): each batch is scored packed, its sequences concatenated without padding
(`ScalarModel.score(..., packing=True)`, `models/packing.py`) — PPO's rollouts are left-padded prompts and
right-padded responses, much of a padded batch. Each row is read at the token the padded batch reads
(`scalar.read_index`: the last real token that is not the pad id, the EOS of a finished response), at its packed
place; the scores are the padded ones to float rounding (tests/models/test_reward_model.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from rlhfkit.data.chat import Truncation, is_conversation, require_template
from rlhfkit.errors import UserError
from rlhfkit.models.loading import TOKENIZER_FILES, load_tokenizer, position_limit
from rlhfkit.models.scalar import ScalarModel, response_sequences, score_sequences

# Texts encoded by both tokenizers in `same_tokenizer`: ASCII, accents, emoji, digits, whitespace runs.
PROBE = "Hello world! Ünïcödé 🙂 123 4567  spaced\n\tlines — «quotes»"
DEFAULT_MAX_LENGTH = 1024  # tokens of a re-encoded row when the RM's config sets no position limit


def same_tokenizer(a, b) -> bool:
    """Whether two tokenizers encode text identically: vocabulary (added tokens included), BOS/EOS/unk, chat
    template, and the ids of a probe text with special tokens added. The pad token is not compared."""
    if a is b:
        return True
    keys = ("bos_token_id", "eos_token_id", "unk_token_id", "chat_template")
    if any(getattr(a, k, None) != getattr(b, k, None) for k in keys):
        return False
    if a.get_vocab() != b.get_vocab():
        return False
    return a(PROBE)["input_ids"] == b(PROBE)["input_ids"]


class RewardModel:
    """r(x, y) [B] float32 of samples or texts; `model` is the ScalarModel (the part PPO shards/autocasts);
    `packing`: every batch scored packed (module docstring)."""

    def __init__(self, model: ScalarModel, tokenizer, same: bool, max_length: int = DEFAULT_MAX_LENGTH,
                 packing: bool = False):
        self.model, self.tokenizer, self.same, self.max_length = model, tokenizer, same, max_length
        self.packing = packing

    @classmethod
    def load(cls, path: str | os.PathLike, policy_tokenizer, device="cpu",
             dtype: torch.dtype = torch.float32, packing: bool = False) -> "RewardModel":
        """The reward model in `path` and its tokenizer (saved beside it; none there: the policy's)."""
        model = ScalarModel.from_pretrained(path, dtype).to(device).eval().requires_grad_(False)
        return cls.around(model, path, policy_tokenizer, packing)

    @classmethod
    def around(cls, model: ScalarModel, path: str | os.PathLike, policy_tokenizer,
               packing: bool = False) -> "RewardModel":
        """A loaded model (e.g. PPO's RM under the value model's adapters) in its role."""
        has_tokenizer = any((Path(path) / name).is_file() for name in TOKENIZER_FILES)
        tokenizer = load_tokenizer(path) if has_tokenizer else policy_tokenizer
        same = same_tokenizer(tokenizer, policy_tokenizer)
        if same and model.config.vocab_size < len(policy_tokenizer):
            raise UserError(f"{path}: vocabulary of {model.config.vocab_size} tokens is smaller than the policy's "
                            f"tokenizer ({len(policy_tokenizer)} tokens)")
        limit = position_limit(model.config)
        return cls(model, tokenizer, same, min(limit, DEFAULT_MAX_LENGTH) if limit else DEFAULT_MAX_LENGTH,
                   packing)

    def check_prompts(self, prompts: list, where: str) -> None:
        """Conversations re-encoded for a reward model with its own tokenizer need its chat template."""
        if not self.same and any(is_conversation(p) for p in prompts):
            try:
                require_template(self.tokenizer)
            except UserError as exc:
                raise UserError(f"{where}: the reward model's own tokenizer re-encodes conversations: {exc}") from None

    @torch.no_grad()
    def score_samples(self, samples) -> torch.Tensor:
        """r(x, y) of a batch of sampled responses (`generation.Samples`, PPO's rollouts: prompt and response
        ids, prompts, texts, finished): their ids as they are with the same tokenizer, else their texts encoded
        again with the RM's (`packing`: either way packed)."""
        if self.same:
            return self.model.score(samples.input_ids, samples.attention_mask, packing=self.packing).float()
        scores = self.score_texts(samples.prompts, samples.texts, samples.finished.tolist())
        return scores.to(samples.response_ids.device)

    @torch.no_grad()
    def score_texts(self, prompts: list, completions: list[str], finished: list[bool] | None = None
                    ) -> torch.Tensor:
        """r(x, y) of (prompt, completion) texts, encoded with the RM's tokenizer (a finished completion gets its
        stop token)."""
        truncation = Truncation(self.max_length)
        rows = response_sequences(self.tokenizer, prompts, completions, finished, self.max_length, truncation)
        scores = score_sequences(self.model, rows, self.tokenizer.pad_token_id, packing=self.packing)
        return torch.tensor(scores, dtype=torch.float32)
