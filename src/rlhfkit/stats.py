"""Statistics for honest comparisons: win rates with bootstrap or Wilson intervals, rank correlation, pairwise
agreement of two rankings."""

from __future__ import annotations

import math

import numpy as np

Z_95 = 1.959963984540054  # the 97.5% quantile of the standard normal: a two-sided 95% interval


def win_rate(a: list[float], b: list[float], n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Share of prompts where A's score beats B's (ties count ½), with a percentile bootstrap interval.

    `a[i]` and `b[i]` score one sample of each policy for the same prompt i (docs/design.md §5).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("win_rate needs two equally long, non-empty score lists")
    outcome = (a > b).astype(float) + 0.5 * (a == b)
    rng = np.random.default_rng(seed)
    boots = outcome[rng.integers(0, len(outcome), size=(n_boot, len(outcome)))].mean(axis=1)
    low, high = np.quantile(boots, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {"rate": round(float(outcome.mean()), 4), "ci_low": round(float(low), 4),
            "ci_high": round(float(high), 4), "n": int(len(outcome))}


def mean_and_se(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


def spearman(x, y) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    def ranks(v):
        v = np.asarray(v, dtype=float)
        order = v.argsort(kind="mergesort")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for value in np.unique(v):  # average the ranks of ties
            tie = v == value
            r[tie] = r[tie].mean()
        return r
    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


def mean_std(values) -> dict:
    """Mean and sample standard deviation (ddof = 1; 0 for a single value) of per-seed figures, beside them."""
    v = [float(x) for x in values]
    std = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
    return {"mean": round(float(np.mean(v)), 4), "std": round(std, 4), "values": [round(x, 4) for x in v]}


def wilson_interval(wins: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a proportion p̂ = wins / n (Wilson 1927; Brown, Cai & DasGupta 2001, eq. 4):
    (p̂ + z²/2n ± z·√(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n). Unlike p̂ ± z·SE it stays inside [0, 1] and is
    not zero-width at 0 or n wins. A tie counts half a win, so `wins` may be fractional."""
    if n <= 0:
        raise ValueError("wilson_interval needs at least one comparison")
    p = wins / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def pair_agreement(r1: list[list[int]], r2: list[list[int]]) -> tuple[int, int]:
    """(agreeing pairs, pairs both rankings order strictly) of two rankings (tie groups of indices, best first),
    over the indices both rank."""
    t1 = {i: t for t, group in enumerate(r1) for i in group}
    t2 = {i: t for t, group in enumerate(r2) for i in group}
    agree = total = 0
    common = sorted(set(t1) & set(t2))
    for x, i in enumerate(common):
        for j in common[x + 1:]:
            d1, d2 = t1[i] - t1[j], t2[i] - t2[j]
            if d1 and d2:
                total += 1
                agree += (d1 > 0) == (d2 > 0)
    return agree, total
