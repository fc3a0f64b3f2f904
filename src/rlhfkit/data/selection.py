"""Active selection: which prompts, and which K of each prompt's candidates, go to labelers (docs/design.md §10,
"Label budget is an input"). Pure functions over candidate sets and their scores; `rlhf sample --select` and each
round of `rlhf loop --select` call `select`, and so can an experiment that varies the label budget.

A pool holds P prompts, each with M ≥ K sampled candidates (`CandidateSet`: texts, sources, and optionally the
scores of E reward heads on each candidate, `scores[e][m]`). `select(pool, n, k, strategy, random_share, seed)`
returns n `Pick`s (a prompt and K of its candidates):

- the random share: ⌊random_share·n + ½⌋ prompts drawn uniformly from the pool, each with K candidates drawn
  uniformly (`by="random"`). They are drawn first, from the whole pool, with their own seeded stream, so they are
  exactly what `--select random` would have drawn: a uniform sample, on which held-out estimates (the reward
  model's held-out accuracy, a judge's agreement with people) stay unbiased. Only these items are held out.
- the rest by the strategy, from the prompts not drawn, best first:
  - `uncertain`: the pair score is the entropy of the ensemble's mean preference probability,
        p̄_ij = (1/E) Σ_e σ(r_e(y_i) − r_e(y_j)),      u_ij = H(p̄_ij) = −p̄ log p̄ − (1−p̄) log(1−p̄)   (nats, ≤ log 2)
    high when the predicted margin is near zero or when the heads disagree (with E = 1: margins near zero);
  - `disagree`: d_ij = 1 when y_i and y_j come from different sources (policies, temperatures) and differ, else
    0: prompts where the policies answer differently (one source alone: any two different answers count);
  - `mixed`: half the active picks by `uncertain`, the other half by `disagree` (a prompt is picked once).
  Two identical texts score 0 in every strategy: labelers can only tie them, which teaches nothing.
  Each prompt's K candidates are chosen greedily by the sum of their pair scores (`choose_candidates`); the
  prompt's score is the mean pair score of its chosen K; ties are broken by a seeded random order.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field

from rlhfkit.errors import UserError

STRATEGIES = ("random", "uncertain", "disagree", "mixed")


@dataclass(frozen=True)
class CandidateSet:
    """One prompt's M candidates: their texts, sources and (for `uncertain`) E heads' scores `scores[e][m]`."""
    texts: tuple[str, ...]
    sources: tuple[str, ...] = ()
    scores: tuple[tuple[float, ...], ...] = field(default=())


@dataclass(frozen=True)
class Pick:
    """Prompt `index` of the pool with its chosen candidates (pool order), how it was chosen and its score."""
    index: int
    candidates: tuple[int, ...]
    by: str
    score: float


def check_strategy(strategy: str, random_share: float) -> None:
    if strategy not in STRATEGIES:
        raise UserError(f"config key 'select': expected one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if not 0 <= random_share <= 1:
        raise UserError(f"config key 'random_share' must be from 0 to 1, got {random_share}")


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def entropy(p: float) -> float:
    """Binary entropy in nats (0 at p = 0 or 1, log 2 at p = ½)."""
    return -sum(q * math.log(q) for q in (p, 1 - p) if q > 0)


def pair_uncertainty(c: CandidateSet) -> list[list[float]]:
    """u_ij = H(p̄_ij), p̄_ij the ensemble's mean σ(r_e(y_i) − r_e(y_j)); 0 for identical texts."""
    if not c.scores:
        raise ValueError("uncertain selection needs scores")
    m, heads = len(c.texts), c.scores
    out = [[0.0] * m for _ in range(m)]
    for i in range(m):
        for j in range(i + 1, m):
            if c.texts[i] != c.texts[j]:
                p = sum(sigmoid(h[i] - h[j]) for h in heads) / len(heads)
                out[i][j] = out[j][i] = entropy(p)
    return out


def pair_disagreement(c: CandidateSet) -> list[list[float]]:
    """d_ij = 1 when the texts differ and come from different sources (every source alike: texts differ)."""
    m = len(c.texts)
    sources = c.sources or ("",) * m
    one_source = len(set(sources)) == 1
    return [[float(i != j and c.texts[i] != c.texts[j] and (one_source or sources[i] != sources[j]))
             for j in range(m)] for i in range(m)]


def choose_candidates(pairs: list[list[float]], k: int, order: list[int] | None = None
                      ) -> tuple[tuple[int, ...], float]:
    """K of M candidates, greedily: the best pair, then each time the candidate whose pair scores with the chosen
    ones sum highest (first in `order` on ties). Returns the chosen (ascending) and their mean pair score."""
    m = len(pairs)
    order = list(range(m)) if order is None else order
    if k >= m:
        chosen = list(range(m))
    else:
        best = max(((i, j) for x, i in enumerate(order) for j in order[x + 1:]), key=lambda ij: pairs[ij[0]][ij[1]])
        chosen = list(best)
        while len(chosen) < k:
            rest = [i for i in order if i not in chosen]
            chosen.append(max(rest, key=lambda i: sum(pairs[i][j] for j in chosen)))
    n_pairs = len(chosen) * (len(chosen) - 1) / 2
    total = sum(pairs[i][j] for x, i in enumerate(chosen) for j in chosen[x + 1:])
    return tuple(sorted(chosen)), total / n_pairs if n_pairs else 0.0


def pair_scores(c: CandidateSet, strategy: str) -> list[list[float]]:
    return pair_uncertainty(c) if strategy == "uncertain" else pair_disagreement(c)


def random_count(n: int, random_share: float, strategy: str) -> int:
    """How many of n picks are the random share: all of them for `random`, else ⌊share·n + ½⌋."""
    return n if strategy == "random" else min(n, math.floor(random_share * n + 0.5))


def select(pool: list[CandidateSet], n: int, k: int, strategy: str, random_share: float, seed: int) -> list[Pick]:
    """n picks from the pool (module docstring): the random share first, then the strategy's best; in that order."""
    check_strategy(strategy, random_share)
    n = min(n, len(pool))
    rng = random.Random(f"select-random:{seed}")
    n_random = random_count(n, random_share, strategy)
    drawn = rng.sample(range(len(pool)), n_random)
    picks = [Pick(i, tuple(sorted(rng.sample(range(len(pool[i].texts)), min(k, len(pool[i].texts))))), "random",
                  0.0) for i in drawn]
    if n_random == n:
        return picks
    tie = random.Random(f"select-active:{seed}")
    rest = [i for i in range(len(pool)) if i not in set(drawn)]
    tie.shuffle(rest)  # ties between prompts (and candidates) fall in a seeded random order
    wanted = n - n_random
    plans = [("uncertain", wanted - wanted // 2), ("disagree", wanted // 2)] if strategy == "mixed" \
        else [(strategy, wanted)]
    taken: set[int] = set()
    for by, count in plans:
        scored = []
        for i in rest:
            if i in taken:
                continue
            order = list(range(len(pool[i].texts)))
            tie.shuffle(order)
            chosen, score = choose_candidates(pair_scores(pool[i], by), k, order)
            scored.append((score, i, chosen))
        scored.sort(key=lambda s: -s[0])  # stable: equal scores keep the shuffled order
        for score, i, chosen in scored[:count]:
            picks.append(Pick(i, chosen, by, round(score, 6)))
            taken.add(i)
    return picks


def heldout_ids(records: list[dict], fraction: float, seed: int) -> set[str]:
    """The items held out for evaluation: of the random share's item ids (records with `by == "random"`), those
    whose seeded hash falls in the first `fraction` — never an actively selected or judge-labeled item."""
    ids = {r["id"] for r in records if r.get("by") == "random"}
    return {i for i in ids if int(hashlib.md5(f"heldout|{seed}|{i}".encode()).hexdigest()[:8], 16) % 10_000
            < fraction * 10_000}
