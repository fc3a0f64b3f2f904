"""Best-of-n: sample n responses from a policy, keep the one the reward model scores highest.

The baseline that any RL method must beat at equal KL. Its KL to the sampling policy is analytic:
KL_BoN(n) = log n − (n − 1)/n (Stiennon et al. 2020, App. G.3; Gao et al. 2022).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from rlhfkit.engines.core import HFEngine, generate_texts
from rlhfkit.rewards.combine import Rewards
from rlhfkit.rewards.sources import judge_metrics


def bon_kl(n: int) -> float:
    return math.log(n) - (n - 1) / n


@dataclass
class BestOfN:
    prompts: list[str]
    texts: list[list[str]]      # [prompt][sample]
    rm: np.ndarray              # [prompt, sample] RM score (missing-EOS penalty applied)
    gold: np.ndarray | None     # [prompt, sample] gold reward (None: no gold judge, outside the toy world)
    finished: np.ndarray = field(default=None)  # [prompt, sample] the response ended with EOS

    def chosen(self, n: int) -> np.ndarray:
        """Index of the RM's favourite among the first n samples of each prompt."""
        return self.rm[:, :n].argmax(axis=1)

    def gold_of(self, n: int) -> np.ndarray:
        return self.gold[np.arange(len(self.prompts)), self.chosen(n)]

    def curve(self, ns=(1, 2, 4, 8, 16)) -> list[dict]:
        rows = []
        for n in ns:
            if n <= self.rm.shape[1]:
                pick = self.chosen(n)
                idx = np.arange(len(self.prompts))
                row = {"n": n, "kl": round(bon_kl(n), 4)}
                if self.gold is not None:
                    row["gold"] = round(float(self.gold[idx, pick].mean()), 4)
                rows.append(row | {"rm": round(float(self.rm[idx, pick].mean()), 4)})
        return rows


def best_of_n(policy, tokenizer, reward_model, prompts: list[str], *, n: int = 16, temperature: float = 1.0,
              max_new_tokens: int = 32, seed: int = 0, missing_eos_penalty: float | None = -1.0,
              engine=None, gold=None) -> BestOfN:
    """n samples per prompt, each scored by the reward model (as PPO scores them) and by `gold` when given (a gold
    judge's `reward(prompt, text, finished)`, e.g. the toy world's `world:gold`). `reward_model`: a reward model, or
    `Rewards` (an RM and/or reward functions, weighted: `rlhf eval bon --reward-fn`); sampled by `engine`
    (`engines/`; default: hf on `policy`)."""
    flat_prompts = [p for p in prompts for _ in range(n)]
    texts, finished = generate_texts(engine or HFEngine(policy, tokenizer), flat_prompts, max_new_tokens=max_new_tokens,
                                     temperature=temperature, seed=seed)
    if isinstance(reward_model, Rewards):
        where = [f"held-out prompt {i // n + 1}" for i in range(len(flat_prompts))]
        total, _ = reward_model.score_texts(flat_prompts, texts, finished, [{}] * len(texts), where)
        rm = total.double().numpy()
    else:
        rm = reward_model.score_texts(flat_prompts, texts, finished).double().numpy()  # a models.RewardModel
    if missing_eos_penalty is not None:
        rm = np.where(np.array(finished), rm, missing_eos_penalty)
    shape = (len(prompts), n)
    if gold is not None:
        gold = np.array([gold(p, t, f).total for p, t, f in zip(flat_prompts, texts, finished)]).reshape(shape)
    grouped = [texts[i * n:(i + 1) * n] for i in range(len(prompts))]
    return BestOfN(list(prompts), grouped, rm.reshape(shape), gold, np.array(finished).reshape(shape))


def judge_chosen(bon: BestOfN, n: int, judge) -> dict[str, float]:
    """A judge's metrics (rewards/sources.py) of the samples best-of-n keeps: logged, never used to pick."""
    pick = bon.chosen(n)
    idx = range(len(bon.prompts))
    texts = [bon.texts[i][pick[i]] for i in idx]
    finished = [bool(bon.finished[i, pick[i]]) for i in idx]
    where = [f"held-out prompt {i + 1}" for i in idx]
    return judge_metrics(judge, list(bon.prompts), texts, finished, [{} for _ in idx], where)
