"""`rlhf label simulate`: the toy world's labelers rank, rate and flag candidates (docs/design.md §3).

Each item goes to `per_item` distinct labelers drawn from a pool of `labelers` (as the labeling app assigns
items with overlap); each writes one rankings record (ties allowed, Likert 1–7, the eight flags). Items
ranked by two labelers measure the labelers' agreement, which the world calibrated to ~73%.
"""

from __future__ import annotations

import random

from rlhfkit.data.jsonl import check_writable, read_jsonl, write_jsonl
from rlhfkit.data.pairs import preference_groups
from rlhfkit.data.schemas import candidate_record
from rlhfkit.rewards.accuracy import labeler_agreement
from rlhfkit.world.build import World
from rlhfkit.world.configs import SimulateConfig
from rlhfkit.world.tasks import parse_prompt


def simulate_rankings(world: World, candidates: list[dict], n_labelers: int, per_item: int, seed: int) -> list[dict]:
    pool = world.labelers(n_labelers, seed)
    rng = random.Random(seed)
    out = []
    for item in candidates:
        texts = [c["text"] for c in item["completions"]]
        finished = [c["finished"] for c in item["completions"]]
        for labeler in rng.sample(pool, per_item):
            out.append(labeler.label(item["id"], item["prompt"], texts, finished) | {"finished": finished})
    return out


def world_candidate(obj: dict, error) -> dict:
    """A candidates record whose prompt the toy world made (its labelers judge by the world's gold reward)."""
    item = candidate_record(obj, error)
    if parse_prompt(item["prompt"]) is None:
        raise error("prompt is not one of the toy world's prompts (simulated labelers judge by the world's hidden "
                    "gold reward)")
    return item


def simulate_labels(cfg: SimulateConfig) -> list[dict]:
    cfg.check()
    check_writable(cfg.out)
    world = World(cfg.world)
    candidates = read_jsonl(cfg.candidates, world_candidate)
    rankings = simulate_rankings(world, candidates, cfg.labelers, cfg.per_item, cfg.seed)
    write_jsonl(cfg.out, rankings)
    agreement = labeler_agreement(preference_groups("rankings", rankings))
    line = f"label simulate: {len(rankings)} rankings of {len(candidates)} items by {cfg.labelers} labelers"
    if agreement["labeler_agreement"] is not None:
        line += (f"; pairwise agreement {agreement['labeler_agreement']:.3f} on {agreement['agreement_pairs']} "
                 "pairs ranked twice")
    print(line + f" -> {cfg.out}")
    return rankings
