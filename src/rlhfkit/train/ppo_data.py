"""What PPO reads besides its rollouts: the prompt stream, and PPO-ptx's pretraining minibatches.

PPO-ptx (InstructGPT eq. 2) adds γ·E_{x~D_pretrain}[log π_θ(x)] to the objective: `PtxBatches.loss` is the
negative of that expectation on one random minibatch of text (or demonstrations, loss on the response). With N
processes every one draws the same global minibatch and takes its share (train/ppo.py).
"""

from __future__ import annotations

import torch

from rlhfkit import losses as L
from rlhfkit.data.chat import Truncation, example_ids, stop_ids
from rlhfkit.data.collate import pad_right
from rlhfkit.data.formats import read_sft
from rlhfkit.data.schemas import demo_record
from rlhfkit.errors import UserError
from rlhfkit.train.distributed import Parallel


class PtxBatches:
    """PPO-ptx: minibatches of pretraining text (or demonstrations) for the mixed-in LM loss."""

    def __init__(self, records: list[dict], tokenizer, batch_size: int, generator: torch.Generator | None,
                 max_length: int = 256, truncation: Truncation | None = None):
        """`records`: from `read_ptx` (text, or SFT's records: `data/chat.example_ids`); `generator` draws the
        minibatches; `truncation` counts (or refuses) the rows longer than `max_length`."""
        truncation = truncation or Truncation(max_length)
        stops = stop_ids(tokenizer, None, True)
        rows = [example_ids(tokenizer, r, truncation, f"ptx data: record {i + 1}", stops)
                for i, r in enumerate(records)]
        self.rows, self.batch_size, self.generator, self.pad = rows, batch_size, generator, tokenizer.pad_token_id

    def loss(self, policy, parallel: Parallel | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(the LM loss on this process's share of a random global minibatch, its number of target tokens)."""
        idx = torch.randint(len(self.rows), (self.batch_size,), generator=self.generator).tolist()
        idx = parallel.shard(idx) if parallel is not None else idx
        ids = pad_right([self.rows[i][0] for i in idx], self.pad)
        loss_mask = pad_right([self.rows[i][1] for i in idx], 0)
        attn = pad_right([[1] * len(self.rows[i][0]) for i in idx], 0)
        device = next(policy.parameters()).device
        logits = policy(input_ids=ids.to(device), attention_mask=attn.to(device)).logits
        return L.lm_loss(logits, ids.to(device), loss_mask.to(device)), loss_mask[:, 1:].sum()


def read_ptx(path: str) -> list[dict]:
    """PPO-ptx's records (`text`, or prompt-completion), every row checked."""
    records = read_sft(path)
    if records and "messages" in records[0]:
        raise UserError(f"{path}: PPO-ptx takes text or prompt-completion rows, not messages")
    return records


def ptx_record(obj: dict, error) -> dict:
    if "text" in obj:
        if not isinstance(obj["text"], str) or not obj["text"].strip():
            raise error("field 'text' must be a non-empty string")
        return {"text": obj["text"]}
    return demo_record(obj, error)


class PromptStream:
    """Prompts in a shuffled order, reshuffled after every pass."""

    def __init__(self, prompts: list[str], generator: torch.Generator):
        self.prompts, self.generator, self.order = prompts, generator, []

    def next(self, n: int) -> list[str]:
        out = []
        while len(out) < n:
            if not self.order:
                self.order = torch.randperm(len(self.prompts), generator=self.generator).tolist()
            out.append(self.prompts[self.order.pop()])
        return out

    def state_dict(self) -> dict:
        return {"order": list(self.order)}

    def load_state_dict(self, state: dict) -> None:
        self.order = list(state["order"])
