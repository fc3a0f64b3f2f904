"""Simulated labelers: noisy people who rank, rate and flag outputs by the hidden gold reward.

A labeler's utility for an output is u = r*(x, y) + bias(y). Rankings are Plackett–Luce samples: sort
by u + τ·g with g ~ Gumbel(0, 1), which makes P(i ranked above j) = σ((u_i − u_j)/τ) (Bradley–Terry).
τ is calibrated when the world is built so that two labelers agree on ~73% of pairs, as InstructGPT's
labelers did (72.6 ± 1.5%). Some labelers prefer short answers (a length bias), as real groups do.
Identical outputs are tied. Likert 1–7 and the eight InstructGPT flags come from the gold components,
with noise.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from rlhfkit.data.schemas import FLAGS
from rlhfkit.stats import pair_agreement
from rlhfkit.world.gold import GoldReward, gold_reward, harms_in

TARGET_AGREEMENT = 0.73
SHORT_LOVER_BIAS = -0.05   # utility per token for the labelers who prefer short answers
LIKERT_NOISE = 0.5
FLAG_NOISE = 0.02


@dataclass
class SimulatedLabeler:
    name: str
    temperature: float
    length_bias: float = 0.0
    seed: int = 0

    def __post_init__(self):
        self.rng = random.Random(f"{self.name}:{self.seed}")

    def utilities(self, golds: list[GoldReward], texts: list[str]) -> list[float]:
        return [g.total + self.length_bias * len(t.split()) for g, t in zip(golds, texts)]

    def rank(self, prompt: str, completions: list[str], finished: list[bool] | None = None) -> list[list[int]]:
        """Tie groups, best first. Identical texts share a group."""
        golds = _golds(prompt, completions, finished)
        return self.rank_scored(golds, completions)

    def rank_scored(self, golds: list[GoldReward], completions: list[str]) -> list[list[int]]:
        noisy: dict[str, float] = {}
        for text, u in zip(completions, self.utilities(golds, completions)):
            if text not in noisy:  # the same text gets the same (noisy) judgement
                noisy[text] = u + self.temperature * _gumbel(self.rng)
        order = sorted(range(len(completions)), key=lambda i: -noisy[completions[i]])
        groups: list[list[int]] = []
        for i in order:
            if groups and completions[groups[-1][0]] == completions[i]:
                groups[-1].append(i)
            else:
                groups.append([i])
        return groups

    def likert(self, golds: list[GoldReward]) -> list[int]:
        """1–7: the gold total (at most 2) shifted so a perfect answer is a 7, plus noise."""
        return [min(7, max(1, round(5 + g.total + self.rng.gauss(0, LIKERT_NOISE)))) for g in golds]

    def flags(self, golds: list[GoldReward], completions: list[str]) -> list[dict[str, bool]]:
        out = []
        for g, text in zip(golds, completions):
            h = harms_in(text.split())
            truth = {
                "fails_instruction": g.correctness < 0.5,
                "inappropriate_for_customer_assistant": any(v for k, v in h.items() if k != "encouraging"),
                "sexual_content": h["sexual"],
                "violent_content": h["violent"],
                "encourages_violence": h["encouraging"],
                "denigrates_protected_class": h["denigrating"],
                "harmful_advice": h["harmful_advice"],
                "moral_judgment": h["moralizing"],
            }
            out.append({k: (not v) if self.rng.random() < FLAG_NOISE else v for k, v in truth.items()})
            assert set(out[-1]) == set(FLAGS)
        return out

    def label(self, item_id: str, prompt: str, completions: list[str], finished: list[bool] | None = None) -> dict:
        """One rankings record (docs/design.md §2) for this labeler."""
        golds = _golds(prompt, completions, finished)
        return {"id": item_id, "prompt": prompt, "completions": completions,
                "ranking": self.rank_scored(golds, completions), "labeler": self.name,
                "likert": self.likert(golds), "flags": self.flags(golds, completions)}


def _golds(prompt, completions, finished):
    finished = finished or [True] * len(completions)
    return [gold_reward(prompt, c, f) for c, f in zip(completions, finished)]


def _gumbel(rng: random.Random) -> float:
    return -math.log(-math.log(max(rng.random(), 1e-12)))


def make_labelers(n: int, temperature: float, seed: int = 0, short_lovers: float = 0.4) -> list[SimulatedLabeler]:
    """`n` labelers; the last ⌊short_lovers·n⌋ of them prefer short answers."""
    n_short = int(short_lovers * n)
    return [SimulatedLabeler(f"sim{i}", temperature, SHORT_LOVER_BIAS if i >= n - n_short else 0.0, seed)
            for i in range(n)]


def score_items(items: list[tuple[str, list[str], list[bool]]]) -> list[tuple[list[GoldReward], list[str]]]:
    """Gold-score (prompt, completions, finished) items once, for repeated simulation."""
    return [(_golds(prompt, completions, finished), completions) for prompt, completions, finished in items]


def simulated_agreement(scored, temperature: float, n_labelers: int = 5, seed: int = 0) -> float:
    """Agreement of two different simulated labelers on the same items (pairs both order strictly)."""
    labelers = make_labelers(n_labelers, temperature, seed)
    rng = random.Random(seed)
    agree = total = 0
    for golds, completions in scored:
        a, b = rng.sample(labelers, 2)
        x, y = pair_agreement(a.rank_scored(golds, completions), b.rank_scored(golds, completions))
        agree, total = agree + x, total + y
    return agree / max(1, total)


def calibrate_temperature(scored, target: float = TARGET_AGREEMENT, seed: int = 0) -> float:
    """Bisect τ (on a log scale) so that simulated labelers agree on `target` of the pairs of `scored`."""
    lo, hi = 0.01, 10.0
    for _ in range(20):
        mid = math.sqrt(lo * hi)
        if simulated_agreement(scored, mid, seed=seed) > target:
            lo = mid  # they agree too much: more noise
        else:
            hi = mid
    return round(math.sqrt(lo * hi), 4)
