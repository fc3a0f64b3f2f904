"""Measuring a reward model against held-out labels and, in the toy world, against the hidden gold reward (`rlhf rm`
reports them after training, `rlhf eval rm` on any file; both read them from here).

- held-out accuracy: share of held-out comparisons the RM orders as the labeler did;
- noise ceiling: the same share for the gold reward itself. Labelers are noisy (two agree on ~73% of pairs),
  so even a perfect model of r* cannot beat this figure on these labels;
- Spearman correlation of RM score and gold reward over the held-out outputs;
- labeler agreement: on items ranked by two labelers, the share of pairs both order strictly and alike;
- where the RM fails: both accuracies again, per gold component that decides each pair (the one whose
  weighted difference is largest: correctness, concision, termination, harmlessness) and per task family.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import torch

from rlhfkit.data.chat import Truncation
from rlhfkit.data.collate import pad_rankings, pad_right
from rlhfkit.data.pairs import ordered_groups, pair_weight
from rlhfkit.losses import plackett_luce_loss, preference_loss
from rlhfkit.models.scalar import ScalarModel, response_sequences, score_texts
from rlhfkit.stats import spearman


def ordered_as_labeled(score_w: float, score_l: float) -> float:
    """1 when a score orders a labeled pair (w preferred to l) as the labeler did, ½ for a tie, else 0."""
    return 1.0 if score_w > score_l else 0.5 if score_w == score_l else 0.0


def noise_ceiling(groups: list[dict], gold) -> float:
    """Accuracy of the gold ordering on the labelers' pairs (a gold tie counts ½). `gold(group, i)` → r*."""
    hits = [ordered_as_labeled(gold(g, w), gold(g, l)) for g in groups for w, l in g["pairs"]]
    return sum(hits) / max(1, len(hits))


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


COMPONENTS = ("correctness", "concision", "termination", "harmlessness")


def deciding_component(winner, loser) -> str:
    """The gold component (weighted as in r*) that separates two outputs most; 'none' when all are equal."""
    gaps = {c: abs(winner.weighted(c) - loser.weighted(c)) for c in COMPONENTS}
    name = max(gaps, key=gaps.get)
    return name if gaps[name] > 1e-9 else "none"


def accuracy_breakdown(groups: list[dict], rm, gold) -> dict:
    """RM accuracy and noise ceiling on the labelers' pairs, grouped by the deciding gold component and by
    family. `rm(group, i)` → RM score, `gold(group, i)` → the world's GoldReward; ties count ½."""
    tallies: dict[str, dict[str, list[float]]] = {"by_component": defaultdict(list), "by_family": defaultdict(list)}
    for g in groups:
        for w, l in g["pairs"]:
            gw, gl, rw, rl = gold(g, w), gold(g, l), rm(g, w), rm(g, l)
            hit = (ordered_as_labeled(rw, rl), ordered_as_labeled(gw.total, gl.total))
            tallies["by_component"][deciding_component(gw, gl)].append(hit)
            tallies["by_family"][gw.family].append(hit)
    return {kind: {name: {"n_pairs": len(hits), "rm_accuracy": round(float(np.mean([h[0] for h in hits])), 4),
                          "noise_ceiling": round(float(np.mean([h[1] for h in hits])), 4)}
                   for name, hits in sorted(table.items())}
            for kind, table in tallies.items()}


def gold_measurements(model, tokenizer, groups: list[dict], gold, packing: bool = False) -> dict:
    """Noise ceiling, RM–gold Spearman and the accuracy breakdown on held-out groups (toy world only: r* is
    hidden elsewhere). `gold(prompt, completion, finished)` → r* with its components (the world's
    `GoldReward`: `World.gold`, or the registered judge's `reward`). `packing`: the outputs scored packed."""
    samples = sorted({(g["prompt"], c, f) for g in groups for c, f in zip(g["completions"], g["finished"])})
    scores = score_texts(model, tokenizer, [s[0] for s in samples], [s[1] for s in samples], [s[2] for s in samples],
                         packing=packing)
    rm_of = dict(zip(samples, scores))
    gold_of = {s: gold(*s) for s in samples}

    def key(g, i):
        return g["prompt"], g["completions"][i], g["finished"][i]

    ceiling = noise_ceiling(groups, lambda g, i: gold_of[key(g, i)].total)
    breakdown = accuracy_breakdown(groups, lambda g, i: rm_of[key(g, i)], lambda g, i: gold_of[key(g, i)])
    return {"noise_ceiling": round(ceiling, 4),
            "spearman_gold": round(spearman(scores, [gold_of[s].total for s in samples]), 4),
            "spearman_samples": len(samples), "rm_score_mean": round(float(np.mean(scores)), 4), **breakdown}


HELDOUT_FILE = "heldout.jsonl"


@dataclass
class RankingBatch:
    """The distinct sequences of some rankings, and their pairs as indices into those sequences."""
    input_ids: torch.Tensor     # [S, T] right-padded prompt + response (+ EOS when it ended)
    attention_mask: torch.Tensor
    chosen: torch.Tensor        # [P] sequence index of y_w
    rejected: torch.Tensor      # [P] sequence index of y_l
    weight: torch.Tensor        # [P] 1/C(K,2) of the pair's ranking
    n_rankings: int
    items: torch.Tensor | None = None  # [R, K] sequence index of each output of each ranking (0 on padding)
    tiers: torch.Tensor | None = None  # [R, K] each output's tier, 0 best, −1 on padding; None: not all rankings


def tokenize_groups(tokenizer, groups: list[dict], max_length: int, truncation: Truncation | None = None,
                    source: str = "rankings") -> list[dict]:
    """Each group's outputs as token ids (tokenized once, `response_sequences`), beside its pairs and weight."""
    out = []
    truncation = truncation or Truncation(max_length)
    for i, g in enumerate(groups):
        prompts = [g["prompt"]] * len(g["completions"])
        where = f"{source}: {'id ' + g['id'] if isinstance(g.get('id'), str) else f'ranking {i + 1}'}"
        rows = response_sequences(tokenizer, prompts, g["completions"], g["finished"], max_length, truncation,
                                  where)
        out.append({"rows": rows, "pairs": g["pairs"], "weight": pair_weight(len(g["completions"])),
                    "tiers": g.get("tiers")})
    return out


def make_batch(groups: list[dict], pad_id: int, device) -> RankingBatch:
    index: dict[tuple[int, ...], int] = {}  # an output ranked by two labelers is scored once
    chosen, rejected, weight, items = [], [], [], []
    for g in groups:
        at = [index.setdefault(tuple(row), len(index)) for row in g["rows"]]
        for w, l in g["pairs"]:
            chosen.append(at[w]), rejected.append(at[l]), weight.append(g["weight"])
        items.append(at)
    rows = [list(row) for row in index]
    return RankingBatch(pad_right(rows, pad_id).to(device), pad_right([[1] * len(r) for r in rows], 0).to(device),
                        torch.tensor(chosen, device=device), torch.tensor(rejected, device=device),
                        torch.tensor(weight, device=device), len(ordered_groups(groups)),
                        *pad_rankings(groups, items, device))


def batch_loss(model: ScalarModel, batch: RankingBatch, loss: str = "pairwise",
               packing: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(the weighted pairwise loss — or with `loss="plackett-luce"` the listwise one —, r_w − r_l per pair);
    `packing`: the sequences scored packed (`ScalarModel.score`)."""
    rewards = model.score(batch.input_ids, batch.attention_mask, packing=packing)
    r_w, r_l = rewards[batch.chosen], rewards[batch.rejected]
    if loss == "plackett-luce":
        return plackett_luce_loss(rewards[batch.items], batch.tiers, batch.n_rankings), (r_w - r_l).detach()
    return preference_loss(r_w, r_l, batch.weight, batch.n_rankings), (r_w - r_l).detach()


@torch.no_grad()
def pairwise_accuracy(model: ScalarModel, groups: list[dict], pad_id: int, batch_size: int = 32,
                      loss: str = "pairwise", packing: bool = False) -> dict:
    """Share of held-out pairs the RM orders as the labeler did (a tie counts ½), and the mean `loss`; `packing`:
    the sequences scored packed, as in training (`batch_loss`)."""
    device = next(model.parameters()).device
    correct, pairs, total, rankings = 0.0, 0, 0.0, 0
    for start in range(0, len(groups), batch_size):
        batch = make_batch(groups[start:start + batch_size], pad_id, device)
        value, margin = batch_loss(model, batch, loss, packing)
        correct += float((margin > 0).sum() + 0.5 * (margin == 0).sum())
        pairs += len(margin)
        total += value.item() * batch.n_rankings
        rankings += batch.n_rankings
    return {"accuracy": correct / max(1, pairs), "loss": total / max(1, rankings), "n_pairs": pairs,
            "n_rankings": rankings}
