"""The reward a policy is trained on: a weighted sum of reward sources,

    r(x, y) = w_RM · r_RM(x, y) + Σ_j w_j · f_j(x, y)

a reward model (`models.reward_model.RewardModel`, or any object with `score_samples`) and reward functions
(`functions.py`). A function that returns None for a completion adds nothing to its sum (TRL's nansum). Each
source's column is kept for the logs, and the time spent in the user's functions is counted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from rlhfkit.data.chat import is_conversation
from rlhfkit.rewards.functions import RewardFunction, call_reward_function


@dataclass
class RewardBatch:
    """What the reward sources of one batch of sampled responses read."""
    samples: object            # generation.Samples: token ids (the RM), prompts, texts, finished
    rows: list[dict]           # each response's dataset row: its fields besides the prompt
    where: list[str]           # each response's row, named for an error message ("prompts.jsonl prompt 17")


def completions_of(prompts: list, texts: list[str]) -> list:
    """Completions as reward functions receive them (TRL): the text, or for a conversational prompt one assistant
    message [{"role": "assistant", "content": text}]."""
    return [[{"role": "assistant", "content": t}] if is_conversation(p) else t for p, t in zip(prompts, texts)]


def row_fields(rows: list[dict], finished: list[bool]) -> dict[str, list]:
    """The rows' fields as keyword arguments (one list per field, None where a row lacks it), plus `finished`."""
    keys = sorted({k for r in rows for k in r})
    return {**{k: [r.get(k) for r in rows] for k in keys}, "finished": list(finished)}


class Rewards:
    """r(x, y) of a batch: the RM's score and the functions' values, weighted and summed."""

    def __init__(self, model=None, model_weight: float = 1.0, functions: tuple[RewardFunction, ...] = (),
                 weights: tuple[float, ...] = ()):
        self.model, self.model_weight = model, model_weight
        self.functions, self.weights = list(functions), list(weights) or [1.0] * len(functions)
        self.function_s = 0.0  # seconds spent in reward functions since the last `take_time`

    def score(self, batch: RewardBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(r(x, y) [B], each source's unweighted column [B] by name: "rm", then each function's name)."""
        s = batch.samples
        device = s.response_ids.device
        total = torch.zeros(len(s.texts), device=device)
        columns = {}
        if self.model is not None:
            columns["rm"] = self.model.score_samples(s).float()
            total = total + self.model_weight * columns["rm"]
        if self.functions:
            prompts, finished = list(s.prompts), s.finished.tolist()
            completions, fields = completions_of(prompts, s.texts), row_fields(batch.rows, finished)
            for f, weight in zip(self.functions, self.weights):
                t0 = time.time()
                values = call_reward_function(f, prompts, completions, fields, batch.where)
                self.function_s += time.time() - t0
                column = torch.tensor([float("nan") if v is None else v for v in values], device=device)
                columns[f.name] = column
                total = total + weight * torch.nan_to_num(column, nan=0.0)
        return total, columns

    def score_texts(self, prompts: list, texts: list[str], finished: list[bool], rows: list[dict],
                    where: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The same sum for (prompt, response) texts (best-of-n): the RM's `score_texts`, the functions' values."""
        total, columns = torch.zeros(len(texts)), {}
        if self.model is not None:
            columns["rm"] = self.model.score_texts(prompts, texts, finished).float()
            total = total + self.model_weight * columns["rm"]
        completions, fields = completions_of(prompts, texts), row_fields(rows, finished)
        for f, weight in zip(self.functions, self.weights):
            t0 = time.time()
            values = call_reward_function(f, list(prompts), completions, fields, where)
            self.function_s += time.time() - t0
            columns[f.name] = torch.tensor([float("nan") if v is None else v for v in values])
            total = total + weight * torch.nan_to_num(columns[f.name], nan=0.0)
        return total, columns

    def take_time(self) -> float:
        """Seconds spent in reward functions since the last call."""
        seconds, self.function_s = self.function_s, 0.0
        return seconds
