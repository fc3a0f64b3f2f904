"""Token-budget micro-batches (--max-tokens-per-batch): one optimizer step's batch split into micro-batches of at
most N tokens, their gradients accumulated, so that the step is the whole batch's.

Each loss is a mean over units (tokens, rankings, responses); a micro-batch's loss weighs units_j / U, U the units
of the whole global batch (`Parallel.total`), so Σ_j of the weighted losses is the whole batch's loss, normalizers
included, and so is its gradient. Every process takes as many micro-batches (the most any needs; `packing.even_out`,
an empty one reruns a row with weight 0), since DDP and FSDP reduce in every backward pass.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rlhfkit.models.packing import even_out, token_batches
from rlhfkit.train.distributed import Parallel


def micro_parts(parallel: Parallel, lengths: list[int], max_tokens: int | None, packed: bool) -> list[list[int]]:
    """This process's positions split by `max_tokens` (`packing.token_batches`), as many parts as any process has."""
    parts = token_batches(lengths, max_tokens, packed)
    if max_tokens is None:
        return parts
    return even_out(parts, int(parallel.highest({"parts": float(len(parts))})["parts"]))


def accumulate(parallel: Parallel, rows: list, lengths: list[int], max_tokens: int | None, packed: bool,
               make: Callable, loss_of: Callable) -> tuple[torch.Tensor, list]:
    """The backward passes of one optimizer step over this process's `rows` (`lengths`: tokens of each).
    `make(rows)` → (batch, units); `loss_of(batch)` → (loss, anything kept). Returns (the global batch's loss,
    detached, for logging; what `loss_of` kept of each real micro-batch). Without `max_tokens`: one backward pass,
    as `Parallel.backward(loss, units)`."""
    if max_tokens is None:
        batch, units = make(rows)
        loss, kept = loss_of(batch)
        return parallel.backward(loss, units=units), [kept]
    parts = micro_parts(parallel, lengths, max_tokens, packed)
    made = [make([rows[i] for i in part] if part else rows[:1]) for part in parts]
    totals = parallel.total([sum(float(units) for (_, units), part in zip(made, parts) if part)])
    logged, kept = None, []
    for part, (batch, units) in zip(parts, made):
        loss, keep = loss_of(batch)
        if part:
            kept.append(keep)
        contribution = parallel.backward(loss, units if part else 0, totals=totals)
        logged = contribution if logged is None else logged + contribution
    return logged, kept


# ------------------------------------------------------------------------------------------------- PPO's update

MINIMA, MAXIMA, BY_UNITS = ("ratio_min",), ("ratio_max",), ("policy_loss",)


class Part:
    """One micro-batch of a PPO minibatch (`ppo_parts`): how its loss terms are weighed and its stats merged."""

    def __init__(self, whole: list[float] | None, last: bool, dummy: bool = False):
        self.whole, self.last, self.dummy = whole, last, dummy
        self.merged: dict[str, float] = {}
        self.weights: dict[str, float] = {}
        self.carried: Part | None = None  # the minibatch's previous part

    def totals(self, parallel: Parallel, terms: list[tuple]) -> list[float] | None:
        """`Parallel.backward`'s totals for the policy term and `terms`, the ones after it [(value, tokens)?,
        (PPO-ptx, tokens)?]: the whole minibatch's units of each (PPO-ptx: its own batch's, drawn once, in the last
        micro-batch); None without micro-batches. A dummy part (`packing.even_out`) weighs 0."""
        if self.whole is None:
            return None
        own = [float("inf")] * len(self.whole) if self.dummy else list(self.whole)
        if 1 + len(terms) > len(own):  # PPO-ptx
            own.append(parallel.total([float(terms[-1][1])])[0])
        return own

    def record(self, stats: list[dict], stat: dict, parallel: Parallel, units, tokens) -> None:
        """Append the minibatch's stats once its last part is done: means weighted by each part's global units
        (the policy loss's) or tokens (the other means), minima and maxima over parts."""
        if self.whole is None:
            stats.append(stat)
            return
        weight = [0.0, 0.0] if self.dummy else [float(units), float(tokens)]
        w_units, w_tokens = parallel.total(weight)
        merged, weights = (self.carried.merged, self.carried.weights) if self.carried is not None else ({}, {})
        for key, value in stat.items():
            if key in MINIMA or key in MAXIMA:
                pick = min if key in MINIMA else max
                merged[key] = pick(merged[key], value) if key in merged else value
                continue
            w = w_units if key in BY_UNITS else w_tokens if key != "ptx_loss" else 1.0
            merged[key] = merged.get(key, 0.0) + w * value
            weights[key] = weights.get(key, 0.0) + w
        self.merged, self.weights = merged, weights
        if self.last:
            stats.append({k: (v if k in MINIMA or k in MAXIMA else v / max(weights[k], 1e-30))
                          for k, v in merged.items()})


def ppo_parts(minibatches: list[list[int]], parallel: Parallel, mask: torch.Tensor, attention_mask: torch.Tensor,
              max_tokens: int | None, packed: bool, token_mean: bool, has_value: bool):
    """(n, this process's rows of the micro-batch, its `Part`) for each micro-batch of each minibatch (n: the
    minibatch's index): one part per minibatch without `max_tokens`."""
    for n, minibatch in enumerate(minibatches):
        share = parallel.shard(minibatch)
        if max_tokens is None:
            yield n, share, Part(None, True)
            continue
        width = attention_mask.shape[1]
        lengths = attention_mask[share].sum(-1).tolist() if packed else [width] * len(share)
        parts = micro_parts(parallel, lengths, max_tokens, packed)
        tokens = float(mask[share].sum())
        whole = parallel.total([tokens if token_mean else float(len(share)), tokens][:1 + has_value])
        carried = None
        for j, part in enumerate(parts):
            current = Part(whole, j == len(parts) - 1, dummy=not part)
            current.carried = carried
            yield n, [share[i] for i in part] if part else share[:1], current
            carried = current
