"""Measuring a reward model against held-out labels and, in the toy world, against the hidden gold reward.

- held-out accuracy: share of held-out comparisons the RM orders as the labeler did;
- noise ceiling: the same share for the gold reward itself. Labelers are noisy (two agree on ~73% of pairs),
  so even a perfect model of r* cannot beat this figure on these labels;
- Spearman correlation of RM score and gold reward over the held-out outputs;
- labeler agreement: on items ranked by two labelers, the share of pairs both order strictly and alike.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations

import numpy as np

from rlhfkit.eval.stats import spearman
from rlhfkit.models.scalar import score_texts


def noise_ceiling(groups: list[dict], gold) -> float:
    """Accuracy of the gold ordering on the labelers' pairs (a gold tie counts ½). `gold(group, i)` → r*."""
    hits, total = 0.0, 0
    for g in groups:
        for w, l in g["pairs"]:
            gw, gl = gold(g, w), gold(g, l)
            hits += 1.0 if gw > gl else 0.5 if gw == gl else 0.0
            total += 1
    return hits / max(1, total)


def labeler_agreement(groups: list[dict]) -> dict:
    """Pairwise agreement between two labelers on the same item: over output pairs both ordered strictly."""
    by_item: dict[str, list[dict]] = defaultdict(list)
    for g in groups:
        by_item[g["id"]].append(g)
    agree = total = items = 0
    for ranked in by_item.values():
        for a, b in combinations(ranked, 2):
            if a["completions"] != b["completions"]:
                continue
            items += 1
            order_a, order_b = set(a["pairs"]), set(b["pairs"])
            for w, l in order_a:
                if (w, l) in order_b or (l, w) in order_b:
                    total += 1
                    agree += (w, l) in order_b
    return {"labeler_agreement": round(agree / total, 4) if total else None, "agreement_pairs": total,
            "agreement_items": items}


def gold_measurements(model, tokenizer, groups: list[dict], world) -> dict:
    """Noise ceiling and RM–gold Spearman on held-out groups (toy world only: r* is hidden elsewhere)."""
    cache: dict[tuple[str, str, bool], float] = {}

    def gold(g, i):
        key = (g["prompt"], g["completions"][i], g["finished"][i])
        if key not in cache:
            cache[key] = world.gold(*key).total
        return cache[key]

    ceiling = noise_ceiling(groups, gold)
    samples = sorted({(g["prompt"], c, f) for g in groups for c, f in zip(g["completions"], g["finished"])})
    rm = score_texts(model, tokenizer, [s[0] for s in samples], [s[1] for s in samples], [s[2] for s in samples])
    golds = [gold({"prompt": p, "completions": [c], "finished": [f]}, 0) for p, c, f in samples]
    return {"noise_ceiling": round(ceiling, 4), "spearman_gold": round(spearman(rm, golds), 4),
            "spearman_samples": len(samples), "rm_score_mean": round(float(np.mean(rm)), 4)}
