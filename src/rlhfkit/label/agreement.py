"""Inter-labeler agreement on rankings: pairwise agreement %, Kendall τ-b, Krippendorff α.

Pure functions over rankings written as tie groups best first (`[[2], [0, 3], [1]]`).

- Pairwise agreement: over the output pairs that *both* labelers ordered strictly, the share ordered the
  same way (ties are left out). InstructGPT reports 72.6–77.3% between labelers (Ouyang et al. §3.4).
- Kendall τ-b between two rankings of the same outputs, tie-corrected:
  τ_b = (n_c − n_d) / √((n_0 − n_1)(n_0 − n_2)), n_0 = n(n−1)/2, n_1, n_2 the tied pairs of each side.
- Krippendorff α = 1 − D_o / D_e from the coincidence matrix (Krippendorff 2011, "Computing
  Krippendorff's alpha-reliability"); *ordinal* metric by default (ranks and Likert are ordered
  categories, not equal-interval numbers); `interval` and `nominal` are available.
  Units are (item, output); the value is the output's tier (1 = best) or its Likert rating.
"""

from __future__ import annotations

import math
from collections import defaultdict
from itertools import combinations

from rlhfkit.stats import pair_agreement


def tiers(ranking: list[list[int]]) -> dict[int, int]:
    """Tie groups -> {output: tier}, tier 1 = best."""
    return {i: t for t, group in enumerate(ranking, start=1) for i in group}


def _sign(x: int) -> int:
    return (x > 0) - (x < 0)


def kendall_tau_b(r1: list[list[int]], r2: list[list[int]]) -> float | None:
    """τ-b of two tie-grouped rankings of the same outputs; None where one side is all one tie."""
    t1, t2 = tiers(r1), tiers(r2)
    nc = nd = ties1 = ties2 = n0 = 0
    for i, j in combinations(sorted(set(t1) & set(t2)), 2):
        n0 += 1
        s1, s2 = _sign(t1[i] - t1[j]), _sign(t2[i] - t2[j])
        ties1 += s1 == 0
        ties2 += s2 == 0
        if s1 and s2:
            nc += s1 == s2
            nd += s1 != s2
    denom = math.sqrt((n0 - ties1) * (n0 - ties2))
    return (nc - nd) / denom if denom else None


def _delta2(metric: str, counts: dict[float, float]):
    values = sorted(counts)
    if metric == "nominal":
        return lambda c, k: float(c != k)
    if metric == "interval":
        return lambda c, k: (c - k) ** 2
    if metric == "ordinal":
        rank = {v: i for i, v in enumerate(values)}
        cum = [0.0]
        for v in values:
            cum.append(cum[-1] + counts[v])

        def ordinal(c, k):
            lo, hi = sorted((rank[c], rank[k]))
            # Σ_{g=c..k} n_g − (n_c + n_k)/2
            return (cum[hi + 1] - cum[lo] - (counts[c] + counts[k]) / 2) ** 2

        return ordinal
    raise ValueError(f"unknown metric {metric!r} (nominal, ordinal, interval)")


def krippendorff_alpha(units: list[dict[str, float]], metric: str = "ordinal",
                       focus: str | None = None) -> float | None:
    """α over `units`, each {coder: value} (missing coders simply absent).

    With `focus`, the observed disagreement counts only the value pairs that involve that coder
    (expected disagreement stays the project's): that coder's agreement with everyone else.
    None when it is undefined (fewer than two pairable values, or no variation at all).
    """
    coincidence: dict[tuple[float, float], float] = defaultdict(float)
    focused: dict[tuple[float, float], float] = defaultdict(float)
    for unit in units:
        m = len(unit)
        if m < 2:
            continue  # a unit coded once has nothing to agree with
        for (a, va), (b, vb) in ((x, y) for x in unit.items() for y in unit.items() if x[0] != y[0]):
            coincidence[va, vb] += 1 / (m - 1)
            if focus is not None and focus in (a, b):
                focused[va, vb] += 1 / (m - 1)
    counts: dict[float, float] = defaultdict(float)
    for (c, _), o in coincidence.items():
        counts[c] += o
    n = sum(counts.values())
    if n <= 1:
        return None
    d2 = _delta2(metric, counts)
    d_e = sum(counts[c] * counts[k] * d2(c, k) for c in counts for k in counts) / (n * (n - 1))
    if d_e == 0:
        return None
    observed = focused if focus is not None else coincidence
    weight = sum(observed.values())
    if weight == 0:
        return None
    d_o = sum(o * d2(c, k) for (c, k), o in observed.items()) / weight
    return 1 - d_o / d_e


def summarize(by_item: dict[str, dict[str, list[list[int]]]],
              likert_by_item: dict[str, dict[str, list[int]]] | None = None) -> dict:
    """Agreement of a project: overall and per labeler.

    `by_item` maps item -> labeler -> ranking; `likert_by_item` item -> labeler -> [rating per output].
    """
    labelers = sorted({name for rankings in by_item.values() for name in rankings})
    agree = defaultdict(int)
    total = defaultdict(int)
    taus: dict[str, list[float]] = defaultdict(list)
    units: list[dict[str, float]] = []
    for rankings in by_item.values():
        for (a, ra), (b, rb) in combinations(sorted(rankings.items()), 2):
            ok, n = pair_agreement(ra, rb)
            tau = kendall_tau_b(ra, rb)
            for who in (None, a, b):
                agree[who] += ok
                total[who] += n
                if tau is not None:
                    taus[who].append(tau)
        outputs = sorted({i for r in rankings.values() for g in r for i in g})
        tier_of = {name: tiers(r) for name, r in rankings.items()}
        units += [{name: t[i] for name, t in tier_of.items() if i in t} for i in outputs]
    likert_units = [{name: v[i] for name, v in ratings.items()}
                    for ratings in (likert_by_item or {}).values()
                    for i in range(min(map(len, ratings.values()), default=0))]

    def block(who):
        mean_tau = sum(taus[who]) / len(taus[who]) if taus[who] else None
        return {"pairwise_agreement": agree[who] / total[who] if total[who] else None,
                "pairs_compared": total[who],
                "kendall_tau_b": mean_tau,
                "krippendorff_alpha_rank": krippendorff_alpha(units, "ordinal", focus=who),
                "krippendorff_alpha_likert": krippendorff_alpha(likert_units, "ordinal", focus=who)}

    return {"metric": "ordinal", **block(None), "per_labeler": {name: block(name) for name in labelers}}
