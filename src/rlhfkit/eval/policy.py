"""Sample a policy on prompts and score the samples by a gold judge (the toy world's `world:gold`, given by the
caller: evaluation never imports the world)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rlhfkit.engines.core import HFEngine, generate_texts
from rlhfkit.generation import generate
from rlhfkit.models.loading import load_causal_lm, load_tokenizer
from rlhfkit.models.policy import scored_responses

COMPONENTS = ("total", "correctness", "concision", "termination", "harmlessness")


@dataclass
class Scored:
    prompts: list[str]
    texts: list[str]
    finished: list[bool]
    gold: list  # the gold judge's r* with its components, per sample (the world's GoldReward)

    @property
    def totals(self) -> list[float]:
        return [g.total for g in self.gold]

    def summary(self) -> dict:
        out = {f"gold_{c}" if c != "total" else "gold": round(float(np.mean([getattr(g, c) for g in self.gold])), 4)
               for c in COMPONENTS}
        out["eos_rate"] = round(float(np.mean(self.finished)), 4)
        out["length"] = round(float(np.mean([len(t.split()) for t in self.texts])), 2)
        out["n"] = len(self.texts)
        return out

    def by_family(self) -> dict[str, float]:
        fams: dict[str, list[float]] = {}
        for g in self.gold:
            fams.setdefault(g.family, []).append(g.total)
        return {f: round(float(np.mean(v)), 3) for f, v in sorted(fams.items())}


def load_policy(path, device="cpu"):
    tokenizer = load_tokenizer(path)
    model = load_causal_lm(path, tokenizer).to(device).eval()
    return model, tokenizer


def sample_and_score(model, tokenizer, prompts: list[str], *, temperature: float, max_new_tokens: int,
                     seed: int, gold, top_p: float = 1.0, batch_size: int = 128, engine=None) -> Scored:
    """gold: the gold judge's `reward(prompt, text, finished)`; engine: the rollout engine that samples (`engines/`;
    default: hf on `model`)."""
    engine = engine or HFEngine(model, tokenizer)
    texts, finished = generate_texts(engine, prompts, max_new_tokens=max_new_tokens,
                                     temperature=temperature, top_p=top_p, seed=seed, batch_size=batch_size,
                                     greedy=temperature == 0)
    return Scored(prompts, texts, finished, [gold(p, t, f) for p, t, f in zip(prompts, texts, finished)])


@dataclass
class PolicyEval(Scored):
    """Scored samples plus each sample's RM score and its KL estimate Σ_t log π(y_t) − log π_ref(y_t) (k1)."""
    rm: list[float]
    kl: list[float]

    def summary(self) -> dict:
        return super().summary() | {"rm": round(float(np.mean(self.rm)), 4), "kl": round(float(np.mean(self.kl)), 4)}


def evaluate_policy(model, reference, reward_model, tokenizer, prompts: list[str], *, temperature: float,
                    max_new_tokens: int, seed: int, gold, missing_eos_penalty: float | None = -1.0,
                    batch_size: int = 128) -> PolicyEval:
    """Sample `model` once per prompt; score each sample by `gold` (a gold judge's `reward`), by the RM (as PPO
    scores it: the missing-EOS penalty replaces the RM score of a response that never ended; packed when the
    `RewardModel` was built with `packing`) and by its log-ratio to the reference."""
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    texts, finished, rm, kl = [], [], [], []
    for start in range(0, len(prompts), batch_size):
        s = generate(model, tokenizer, prompts[start:start + batch_size], max_new_tokens=max_new_tokens,
                     temperature=temperature, generator=generator)
        width = s.prompt_ids.shape[1]
        with torch.inference_mode():
            logp, _ = scored_responses(model, s.input_ids, s.attention_mask, width, temperature)
            ref, _ = scored_responses(reference, s.input_ids, s.attention_mask, width, temperature)
            score = reward_model.score_samples(s)  # a models.RewardModel
        if missing_eos_penalty is not None:
            score = torch.where(s.finished, score, torch.full_like(score, missing_eos_penalty))
        kl += ((logp - ref) * s.response_mask).sum(-1).tolist()
        rm += score.tolist()
        texts += s.texts
        finished += s.finished.tolist()
    gold = [gold(p, t, f) for p, t, f in zip(prompts, texts, finished)]
    return PolicyEval(list(prompts), texts, finished, gold, rm, kl)


def run_checkpoints(run_dir) -> list[tuple]:
    """(step, directory) of the checkpoints a trainer saved with `--save-every` (RUN/checkpoints/step-N), in order."""
    found = Path(run_dir, "checkpoints").glob("step-*")
    return sorted((int(p.name.split("-", 1)[1]), p) for p in found if p.name.split("-", 1)[1].isdigit())
