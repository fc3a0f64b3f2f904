"""Padded vs packed (--packing): seconds and FLOPs per PPO update and per SFT epoch, beside the padding fraction.

    .venv/bin/python bench/packing.py [--quick] [--repeats N] [--out FILE]

Two length distributions, on the toy world's model shape (`world.configs.PRESETS["tiny"]`: GPT-2, d 128, 4
layers) and its word vocabulary:

- toy:  the toy world's own — SFT demonstrations are the expert's answers to sampled tasks (prompt + completion +
        EOS), PPO responses the raw-web answers an SFT policy starts from (`world.corpus.web_response`, ≤ 32 tokens);
- long-tailed: log-normal lengths (median 24 tokens, σ 0.5) with 3% outliers 8× as long.

SFT: one epoch of 256 demonstrations in batches of 32 (`train.sft`'s `collate` + `sft_loss`, backward, AdamW step).
RM and DPO: one epoch of the same sequences as 64 rankings of 4 outputs, 8 rankings (32 sequences) a step.
PPO: one `train.ppo.ppo_update` (the real one) of a batch of 64 responses, minibatches of 32, 4 epochs, with a value
model (GAE), on a rollout scored padded. The padding fraction is 1 − real tokens / padded tokens of those batches:
the share of the padded run's token positions packing removes, so packed time ≈ padded × (1 − fraction) at best
(the acceptance bound of issue 37 adds 10%). FLOPs are counted from the shapes each run's forward passes take
(`flops`): 2·(non-embedding weights)·positions + the LM head on the positions it runs on + attention 4·layers·d·Σ
rows' width², ×3 for forward + backward. Seconds: CPU seconds of the process (one torch thread, `--threads`:
on a machine shared with other jobs CPU time moves far less than wall-clock time), the best of `--repeats` runs
after one untimed warm-up.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModel, AutoModelForCausalLM

from rlhfkit.generation import Samples
from rlhfkit.models import packing as pk
from rlhfkit.models.policy import response_values, scored_responses
from rlhfkit.models.scalar import ScalarModel
from rlhfkit.rewards import accuracy
from rlhfkit.runtime.optim import make_optimizer, optimizer_step
from rlhfkit.train import dpo
from rlhfkit.train.configs import PPOConfig
from rlhfkit.train.ppo import advantages, ppo_update
from rlhfkit.train.rollout import Rollout
from rlhfkit.train.sft import collate, sft_loss
from rlhfkit.world.build import RESPONSE_LIMIT, world_words
from rlhfkit.world.configs import PRESETS
from rlhfkit.world.corpus import expert_response, web_response
from rlhfkit.world.pretrain import base_config
from rlhfkit.world.tasks import sample_task
from rlhfkit.world.tokenizer import build_tokenizer

SFT_ROWS, SFT_BATCH = 256, 32
PPO_ROWS, PPO_MINIBATCH, PPO_EPOCHS = 64, 32, 4


# ------------------------------------------------------------------------------------------- lengths

def toy_sft(tokenizer, rng: random.Random, n: int) -> list[list[int]]:
    rows = []
    for _ in range(n):
        task = sample_task(rng)
        text = f"{task.prompt} {expert_response(task, rng)}"
        rows.append(tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])
    return rows


def toy_ppo(tokenizer, rng: random.Random, n: int) -> list[tuple[int, int]]:
    """(prompt tokens, response tokens) of n toy-world rollouts."""
    out = []
    for _ in range(n):
        task = sample_task(rng)
        words, ended = web_response(task, rng, RESPONSE_LIMIT)
        response = len(tokenizer(" ".join(words[:RESPONSE_LIMIT]), add_special_tokens=False)["input_ids"]) + ended
        out.append((len(tokenizer(task.prompt, add_special_tokens=False)["input_ids"]),
                    max(1, min(RESPONSE_LIMIT, response))))
    return out


def long_tailed(rng: random.Random, n: int, median: int = 24, sigma: float = 0.5, outliers: float = 0.03) -> list[int]:
    lengths = [max(2, round(median * math.exp(rng.gauss(0, sigma)))) for _ in range(n)]
    for i in rng.sample(range(n), max(1, round(outliers * n))):
        lengths[i] = 8 * median
    return lengths


def random_rows(rng: random.Random, lengths: list[int], vocab: int, eos: int) -> list[list[int]]:
    return [[rng.randrange(3, vocab) for _ in range(n - 1)] + [eos] for n in lengths]


# --------------------------------------------------------------------------------------------- FLOPs

def flops(model, rows: int, width: int, head_positions: int) -> float:
    """Forward + backward FLOPs of one forward pass over `rows` × `width` positions (module docstring)."""
    config = model.config
    d, layers = config.hidden_size, config.num_hidden_layers
    embedding = sum(p.numel() for n, p in model.named_parameters() if "wte" in n or "wpe" in n)
    body = sum(p.numel() for p in model.parameters()) - embedding
    forward = 2 * body * rows * width + 4 * layers * d * rows * width ** 2 + 2 * d * config.vocab_size * head_positions
    return 3.0 * forward


def shapes(ids: torch.Tensor, mask: torch.Tensor, packing: bool) -> tuple[int, int]:
    if not packing:
        return ids.shape[0], ids.shape[1]
    p = pk.pack(ids, mask)
    return p.input_ids.shape[0], p.input_ids.shape[1]


# ------------------------------------------------------------------------------------------------ SFT

def sft_epoch(model, rows: list[list[int]], packing: bool, pad: int) -> tuple[float, float]:
    """(seconds, FLOPs) of one epoch of `rows` in batches of SFT_BATCH (on a copy of `model`)."""
    model = copy.deepcopy(model)
    optimizer = make_optimizer(model.parameters(), 1e-4, 0.0)
    total = 0.0
    start = time.process_time()
    for i in range(0, len(rows), SFT_BATCH):
        part = [(r, [0] * 3 + [1] * (len(r) - 3)) for r in rows[i:i + SFT_BATCH]]
        batch = collate(part, pad, "cpu")
        sft_loss(model, batch, packing).backward()
        optimizer_step(optimizer, None, model.parameters(), 1.0)
        n, w = shapes(batch["input_ids"], batch["attention_mask"], packing)
        total += flops(model, n, w, n * w)
    return time.process_time() - start, total


def preference_epoch(kind: str, policy, value, rows: list[list[int]], packing: bool, pad: int) -> tuple[float, float]:
    """(seconds, FLOPs) of one epoch of `rows` as rankings of K = 4 outputs (all 6 pairs, batches of 8 rankings):
    the reward model's step (`rewards.accuracy.batch_loss` on a scalar model) or DPO's (`train.dpo.batch_loss`,
    π_ref's log-probs 0)."""
    model = copy.deepcopy(value if kind == "rm" else policy)
    optimizer = make_optimizer(model.parameters(), 1e-5, 0.0)
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    groups = [{"rows": rows[i:i + 4] if kind == "rm" else [(r, [0] * 3 + [1] * (len(r) - 3)) for r in rows[i:i + 4]],
               "pairs": pairs, "weight": 1 / 6, "tiers": None, "ref_logp": torch.zeros(4)}
              for i in range(0, len(rows) - 3, 4)]
    total = 0.0
    start = time.process_time()
    for i in range(0, len(groups), 8):
        if kind == "rm":
            batch = accuracy.make_batch(groups[i:i + 8], pad, "cpu")
            loss, _ = accuracy.batch_loss(model, batch, "pairwise", packing)
        else:
            batch = dpo.make_batch(groups[i:i + 8], pad, "cpu")
            loss, _ = dpo.batch_loss(model, batch, 0.1, "pairwise", packing)
        loss.backward()
        optimizer_step(optimizer, None, model.parameters(), 1.0)
        n, w = shapes(batch.input_ids, batch.attention_mask, packing)
        total += flops(policy, n, w, n * w if kind == "dpo" else 0)
    return time.process_time() - start, total


def padding_fraction(masks: list[torch.Tensor]) -> float:
    real = sum(int(m.sum()) for m in masks)
    return 1 - real / sum(m.numel() for m in masks)


# ------------------------------------------------------------------------------------------------ PPO

def ppo_rollout(policy, value, pairs: list[tuple[int, int]], vocab: int, rng: random.Random) -> Rollout:
    width_p, width_r = max(p for p, _ in pairs), max(r for _, r in pairs)
    g = torch.Generator().manual_seed(rng.randrange(2 ** 31))
    ids = torch.randint(3, vocab, (len(pairs), width_p + width_r), generator=g)
    cols = torch.arange(width_p + width_r)
    p_len, r_len = torch.tensor([p for p, _ in pairs]), torch.tensor([r for _, r in pairs])
    mask = ((cols >= width_p - p_len[:, None]) & (cols < width_p + r_len[:, None])).long()
    ids = ids * mask
    samples = Samples(ids[:, :width_p], mask[:, :width_p], ids[:, width_p:], mask[:, width_p:],
                      torch.ones(len(pairs), dtype=torch.bool), [""] * len(pairs), [""] * len(pairs))
    with torch.no_grad():
        logp, _ = scored_responses(policy, ids, mask, width_p)
        values = response_values(value, ids, mask, width_p)
    m = samples.response_mask
    score = torch.randn(len(pairs), generator=g)
    return Rollout(samples, logp * m, (logp + 0.1 * torch.randn(logp.shape, generator=g)) * m, values * m, score,
                   score, 0.0)


def ppo_time(policy, value, rollout: Rollout, packing: bool) -> tuple[float, float]:
    """(seconds, FLOPs) of one `ppo_update` (policy and value forward + backward per minibatch), on copies."""
    policy, value = copy.deepcopy(policy), copy.deepcopy(value)
    cfg = PPOConfig(policy="p", prompts="p", reward="r", batch_size=PPO_ROWS, minibatch_size=PPO_MINIBATCH,
                    ppo_epochs=PPO_EPOCHS, packing=packing)
    optimizer = make_optimizer(list(policy.parameters()) + list(value.parameters()), 1e-5, 0.0)
    _, adv, returns = advantages(rollout, cfg.kl_coef, cfg)
    start = time.process_time()
    ppo_update(policy, value, optimizer, rollout, adv, returns, cfg, cfg.kl_coef, torch.Generator().manual_seed(0))
    seconds = time.process_time() - start
    ids, mask, width = rollout.samples.input_ids, rollout.samples.attention_mask, rollout.prompt_width
    total = 0.0
    for epoch in range(PPO_EPOCHS):
        for i in range(0, PPO_ROWS, PPO_MINIBATCH):  # every minibatch's shapes (their order does not change the sum)
            order = torch.randperm(PPO_ROWS, generator=torch.Generator().manual_seed(epoch))[i:i + PPO_MINIBATCH]
            n, w = shapes(ids[order], mask[order], packing)
            heads = len(order) * (ids.shape[1] - width + 1) if not packing else n * w
            total += flops(policy, n, w, heads) + flops(value.backbone, n, w, 0)
    return seconds, total


# ------------------------------------------------------------------------------------------------ run

def best(fn, repeats: int):
    fn()  # warm-up
    runs = [fn() for _ in range(repeats)]
    return min(runs, key=lambda r: r[0])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat, half the rows")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = 1 if args.quick else args.repeats
    torch.manual_seed(0)
    rng = random.Random(0)
    tokenizer = build_tokenizer(world_words())
    preset = PRESETS["tiny"]
    config = base_config("gpt2", tokenizer, preset.d_model, preset.n_layers, preset.n_heads, n_positions=512)
    vocab, eos, pad = len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id
    policy = AutoModelForCausalLM.from_config(config).train()
    value = ScalarModel(AutoModel.from_config(config), torch.nn.Linear(config.n_embd, 1), None).train()
    n_sft = SFT_ROWS // (2 if args.quick else 1)
    sft_sets = {"toy": toy_sft(tokenizer, rng, n_sft),
                "long-tailed": random_rows(rng, long_tailed(rng, n_sft), vocab, eos)}
    ppo_sets = {"toy": toy_ppo(tokenizer, rng, PPO_ROWS),
                "long-tailed": [(rng.randint(4, 16), r) for r in long_tailed(rng, PPO_ROWS)]}
    results = {"threads": torch.get_num_threads(), "repeats": repeats, "sft": {}, "ppo": {}}
    for name, rows in sft_sets.items():
        masks = [collate([(r, r) for r in rows[i:i + SFT_BATCH]], 0, "cpu")["attention_mask"]
                 for i in range(0, len(rows), SFT_BATCH)]
        entry = {"padding_fraction": round(padding_fraction(masks), 4), "rows": len(rows)}
        for packing in (False, True):
            seconds, work = best(lambda packing=packing, rows=rows: sft_epoch(policy, rows, packing, pad), repeats)
            entry["packed" if packing else "padded"] = {"seconds": round(seconds, 3), "gflops": round(work / 1e9, 2)}
        results["sft"][name] = entry
        report("sft epoch", name, entry)
    for kind in ("rm", "dpo"):
        results[kind] = {}
        for name, rows in sft_sets.items():
            masks = [collate([(r, r) for r in rows[i:i + 32]], 0, "cpu")["attention_mask"]
                     for i in range(0, len(rows), 32)]
            entry = {"padding_fraction": round(padding_fraction(masks), 4), "rows": len(rows)}
            for packing in (False, True):
                seconds, work = best(lambda packing=packing, rows=rows, kind=kind: preference_epoch(
                    kind, policy, value, rows, packing, pad), repeats)
                entry["packed" if packing else "padded"] = {"seconds": round(seconds, 3),
                                                            "gflops": round(work / 1e9, 2)}
            results[kind][name] = entry
            report(f"{kind} epoch", name, entry)
    for name, pairs in ppo_sets.items():
        rollout = ppo_rollout(policy, value, pairs, vocab, rng)
        entry = {"padding_fraction": round(padding_fraction([rollout.samples.attention_mask]), 4),
                 "rows": len(pairs)}
        for packing in (False, True):
            seconds, work = best(lambda packing=packing, rollout=rollout: ppo_time(policy, value, rollout, packing),
                                 repeats)
            entry["packed" if packing else "padded"] = {"seconds": round(seconds, 3), "gflops": round(work / 1e9, 2)}
        results["ppo"][name] = entry
        report("ppo update", name, entry)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return results


def report(what: str, name: str, entry: dict) -> None:
    pad, packed, fraction = entry["padded"], entry["packed"], entry["padding_fraction"]
    bound = pad["seconds"] * (1 - fraction) * 1.1
    entry["bound_seconds"] = round(bound, 3)
    entry["within_bound"] = packed["seconds"] <= bound
    print(f"{what:11s} {name:12s} padding {fraction:6.1%}  padded {pad['seconds']:7.2f} s {pad['gflops']:8.1f} GFLOP"
          f"  packed {packed['seconds']:7.2f} s {packed['gflops']:8.1f} GFLOP  speed-up "
          f"{pad['seconds'] / packed['seconds']:4.2f}x  bound (padded x (1 - fraction) + 10%) {bound:6.2f} s "
          f"{'ok' if entry['within_bound'] else 'MISSED'}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
