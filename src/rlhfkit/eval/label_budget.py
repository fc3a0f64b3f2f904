"""The label-efficiency experiment's arithmetic and its plot (`rlhf compare --label-budget`): per arm and round,
the mean over seeds of each figure with a 95% Student-t interval, and how many human labels an arm's mean curve
needs to reach a target gold reward.

    interval:  x̄ ± t_{0.975, n−1} · s/√n,   s² = Σ(xᵢ − x̄)²/(n − 1)        (n seeds; none for n = 1)
    reach:     the first segment (x₀, y₀)–(x₁, y₁) of the mean curve with y₁ ≥ target gives
               x = x₀ + (target − y₀)/(y₁ − y₀) · (x₁ − x₀)                   (linear interpolation)

With 3 seeds t_{0.975, 2} = 4.303: the interval is wide, and honest about it (a bootstrap over 3 values would
pretend otherwise).
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib import colormaps
from matplotlib.figure import Figure

# t_{0.975, df}, the two-sided 95% quantile of Student's t, df = 1 … 30 (any statistics table); beyond, 1.96.
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
Z_975 = 1.96


def t_quantile(df: int) -> float:
    return T_975[df - 1] if df <= len(T_975) else Z_975


def mean_interval(values: list[float]) -> dict:
    """{mean, low, high, n} of per-seed values: x̄ ± t·s/√n (module docstring); low = high = mean for one value."""
    v = [float(x) for x in values]
    n = len(v)
    mean = sum(v) / n
    if n == 1:
        return {"mean": mean, "low": mean, "high": mean, "n": 1}
    s = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1))
    half = t_quantile(n - 1) * s / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


CURVE_KEYS = ("human_labels", "judge_labels", "gold", "rm_accuracy", "rm_test_accuracy", "win_vs_sft")


def mean_curves(points: list[dict], keys=CURVE_KEYS) -> dict[str, list[dict]]:
    """arm -> one row per round: each key's mean_interval over the seeds of that arm and round (a key whose values
    are missing (None) in every seed is None). `points`: {arm, seed, round, key: value, ...}."""
    by: dict[tuple[str, int], list[dict]] = {}
    for p in points:
        by.setdefault((p["arm"], p["round"]), []).append(p)
    out: dict[str, list[dict]] = {}
    for (arm, r), rows in sorted(by.items(), key=lambda kv: kv[0][1]):
        row = {"round": r, "seeds": len(rows)}
        for k in keys:
            values = [p[k] for p in rows if p.get(k) is not None]
            row[k] = mean_interval(values) if values else None
        out.setdefault(arm, []).append(row)
    return out


def labels_to_reach(xs: list[float], ys: list[float], target: float) -> float | None:
    """Human labels at which the curve (xs ascending, ys) first reaches `target`, by linear interpolation between
    its points; xs[0] when it starts at or above it; None when it never does."""
    if ys[0] >= target:
        return float(xs[0])
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if y1 >= target:
            return x0 + (target - y0) / (y1 - y0) * (x1 - x0)
    return None


def efficiency(curves: dict[str, list[dict]], sft_gold: float, baseline: str = "random") -> dict[str, dict]:
    """Per arm other than `baseline`: the human labels its mean gold curve, starting at (0 labels, SFT's gold),
    needs to reach the baseline's final mean gold, their ratio to the baseline's final label count, and whether
    that is at most half."""
    last = curves[baseline][-1]
    target, spent = last["gold"]["mean"], last["human_labels"]["mean"]
    out = {}
    for arm, rows in curves.items():
        if arm == baseline:
            continue
        xs = [0.0] + [r["human_labels"]["mean"] for r in rows]
        ys = [sft_gold] + [r["gold"]["mean"] for r in rows]
        need = labels_to_reach(xs, ys, target)
        ratio = None if need is None else need / spent
        out[arm] = {"target_gold": target, "baseline_labels": spent, "labels_needed": need, "ratio": ratio,
                    "at_most_half": ratio is not None and ratio <= 0.5}  # issue 34's acceptance line
    return out


def plot_label_budget(curves: dict[str, list[dict]], sft_gold: dict, path: Path) -> Path:
    """Gold of the final policy and the RM's accuracy against human labels: one line per arm (the mean over seeds)
    with its 95% band; gold starts at SFT's (0 labels; `sft_gold` a mean_interval), and SFT's mean is the dashed
    line; the RM's accuracy on the seed's common test set (solid, banded) and on the loop's own held-out random
    share (dotted)."""
    fig = Figure(figsize=(11, 4.2))
    ax_gold, ax_acc = fig.subplots(1, 2)
    colors = colormaps["tab10"]
    for i, (arm, rows) in enumerate(curves.items()):
        xs = [r["human_labels"]["mean"] for r in rows]
        for ax, key, start, style in ((ax_gold, "gold", [(0.0, sft_gold)], "o-"),
                                      (ax_acc, "rm_test_accuracy", [], "o-"), (ax_acc, "rm_accuracy", [], ":")):
            pts = start + [(x, r[key]) for x, r in zip(xs, rows) if r.get(key) is not None]
            if len(pts) == len(start):
                continue
            x = [p[0] for p in pts]
            mean, low, high = ([p[1][k] for p in pts] for k in ("mean", "low", "high"))
            ax.plot(x, mean, style, color=colors(i), label=arm if style == "o-" else None)
            if style == "o-":
                ax.fill_between(x, low, high, color=colors(i), alpha=0.15)
    ax_gold.axhline(sft_gold["mean"], color="grey", linestyle="--", linewidth=1, label="SFT")
    ax_gold.set_title("gold reward of the round's policy (held-out prompts)")
    ax_acc.set_title("RM accuracy: test set (dotted: loop's held-out)")
    for ax in (ax_gold, ax_acc):
        ax.set_xlabel("human labels (rankings by people; judge rankings not counted)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path
