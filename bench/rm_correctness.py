"""Why the demo's reward model misses correctness: reward models and diagnostics on one large held-out set.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python bench/rm_correctness.py \
        --world runs/demo/world --run runs/demo/seed-0 [--out runs/bench/rm_correctness.json]

RUN is a seed directory as `rlhf demo` writes it (RUN/sft, RUN/rankings.jsonl); WORLD its toy world. Nothing in
either is written: samples, rankings and models go under `--work` (default: beside `--out`).

1. The evaluation set: the SFT policy samples K=4 outputs (T=0.7/1.0, the world's response limit) for every one of
   the world's held-out prompts with each of `--eval-seeds`, and the world's simulated labelers rank each item
   (2 of 5 per item), through the library functions `rlhf sample` and `rlhf label simulate` run
   (`recipes.pipeline.sample` / `simulate`). These prompts are never trained on.
2. The variants, all from RUN/sft and RUN/rankings.jsonl:
   a. `demo`: `rlhf rm` as the demo runs it (the preset's plan: lr, epochs; `train_reward_model`);
   b. `3 epochs`: the same with three epochs;
   c. `half`: the same on the rankings of a random half of the items (both labelers' rankings of each);
   d. `gold-ranked`: the same candidates ranked by the hidden gold reward r* itself, noise-free. A DIAGNOSTIC ONLY
      (it asks whether label noise is what limits the RM): training on r* is never a recipe, the world hides it;
   e. `flags classifier` (bench-only loop, a diagnostic): the scalar model trained pointwise, binary cross-entropy,
      on the labelers' `fails_instruction` flag of each output (gold correctness < 0.5, flipped 2% of the time);
   f. `hybrid` (bench-only loop, a diagnostic): r(x, y) = w·h_EOS + a·(1/|y|)·Σ_t log p_θ(y_t | x, y_<t), the
      fine-tuned policy θ with its own (tied) LM head kept beside the scalar head, a learned (init 1), trained
      with InstructGPT's pairwise loss (`losses.preference_loss`) on the same rankings, 1 epoch (`--hybrid-epochs`);
   g. `SFT mean/sum/min log p` (untrained): the SFT policy's mean, sum or minimum token log-probability of the
      response, the hybrid's second term alone with a = 1;
   h. `mean-pooled head` (bench-only, a diagnostic): the scalar head read at every response token and averaged,
      r = (1/|y|)·Σ_t (w·h_t + b), no log p term, the same pairwise loss, 1 epoch;
   i. `frozen log pi_SFT` (bench-only, a diagnostic): r = w·h_EOS + a·mean_t log π_SFT(y_t | x, y_<t), the
      likelihood taken from a frozen copy of the SFT policy, so training moves only the head's side and a;
   j. `twice the prompts, 1 label`: `rlhf rm` on the demo's number of rankings spread over twice the prompts
      (2 × 1,500 training prompts, K outputs of the SFT policy each, one simulated labeler per item);
   k. `ensemble of 3 RMs`: the mean score of three `rlhf rm` models trained as in a with seeds SEED, SEED+1, SEED+2
      (the head's start, the order of the batches and the held-out split differ);
   and `gold r*`, the reference row: the gold reward as a score (its labeler accuracy is the noise ceiling).
3. One table: accuracy against the labelers' pairs of the held-out set (a tie counts ½), against the gold order on
   every pair of each item's outputs whose gold total differs and whose gold correctness differs, and the
   labelers' pairs split by the gold component that decides them (`rewards.accuracy.accuracy_breakdown`, what
   `rlhf eval rm` prints), with each variant's wall time (training + scoring). The JSON holds the same, the noise
   ceiling of each component, and the split by task family.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import sys
import time
from itertools import combinations
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from rlhfkit.data.chat import completion_ids, prompt_ids
from rlhfkit.data.collate import pad_right
from rlhfkit.data.jsonl import read_jsonl, write_jsonl
from rlhfkit.data.pairs import ordered_groups, pair_weight, preference_groups
from rlhfkit.eval.policy import load_policy
from rlhfkit.losses import preference_loss
from rlhfkit.models.loading import load_tokenizer
from rlhfkit.models.scalar import ScalarModel, response_sequences, score_texts
from rlhfkit.recipes import pipeline
from rlhfkit.recipes.configs import PLANS
from rlhfkit.rewards.accuracy import COMPONENTS, accuracy_breakdown, ordered_as_labeled
from rlhfkit.runtime.optim import make_optimizer, optimizer_step, warmup_cosine
from rlhfkit.train.common import split_by_prompt
from rlhfkit.train.configs import RewardConfig
from rlhfkit.world.build import World
from rlhfkit.world.gold import gold_reward

GOLD_NOTE = ("gold-ranked is a diagnostic: the hidden gold reward ranks the training candidates without noise to "
             "ask whether label noise limits the RM; never a training recipe")
LOOP_NOTE = "flags classifier and hybrid are bench-only diagnostic training loops, not rlhfkit recipes"


# ------------------------------------------------------------------------------------- pure measures

def gold_pair_accuracy(sets: list[list], score: dict, gold: dict) -> dict:
    """Accuracy of `score` against the gold order on every pair of outputs of each candidate set (a score tie
    counts ½), over the pairs whose gold total differs and over those whose gold correctness differs (these also
    by task family).
    `sets`: each item's output keys; `score[key]` → float; `gold[key]` → a GoldReward."""
    hits: dict[str, list[float]] = {"gold_total": [], "correctness": []}
    by_family: dict[str, list[float]] = {}
    for keys in sets:
        for a, b in combinations(keys, 2):
            for field, name in (("total", "gold_total"), ("correctness", "correctness")):
                ga, gb = getattr(gold[a], field), getattr(gold[b], field)
                if ga != gb:
                    w, l = (a, b) if ga > gb else (b, a)
                    hits[name].append(ordered_as_labeled(score[w], score[l]))
                    if name == "correctness":
                        by_family.setdefault(gold[a].family, []).append(hits[name][-1])
    return {**{name: share(h) for name, h in hits.items()},
            "correctness_by_family": {f: share(h) for f, h in sorted(by_family.items())}}


def share(hits: list[float]) -> dict:
    return {"accuracy": round(sum(hits) / len(hits), 4) if hits else None, "n_pairs": len(hits)}


def labeler_pair_accuracy(groups: list[dict], score: dict) -> dict:
    """Share of the labelers' pairs `score` orders as they did (a tie ½). `score[(prompt, text, finished)]`."""
    return share([ordered_as_labeled(score[key(g, w)], score[key(g, l)]) for g in groups for w, l in g["pairs"]])


def key(group: dict, i: int) -> tuple:
    return group["prompt"], group["completions"][i], bool(group["finished"][i])


def gold_ranking(prompt: str, texts: list[str], finished: list[bool]) -> list[list[int]]:
    """Tie groups of the outputs by gold total, best first (equal totals tie)."""
    totals = [gold_reward(prompt, t, f).total for t, f in zip(texts, finished)]
    return [[i for i in range(len(texts)) if totals[i] == v] for v in sorted(set(totals), reverse=True)]


# ------------------------------------------------------------------------------------- evaluation set

def eval_set(world: World, sft: Path, work: Path, seeds: list[int], k: int, temperatures) -> tuple[list, list]:
    """(candidate records, rankings records) for the held-out prompts, one sampling + labeling per seed."""
    candidates, rankings = [], []
    prompts = world.prompts("heldout")
    for seed in seeds:
        cand, ranks = work / f"eval-candidates-{seed}.jsonl", work / f"eval-rankings-{seed}.jsonl"
        pipeline.sample([sft], world.heldout_prompts_path, cand, k=k, temperatures=temperatures, limit=len(prompts),
                        max_new_tokens=world.response_limit, seed=seed, id_prefix=f"s{seed}-")
        pipeline.simulate(world.path, cand, ranks, labelers=5, per_item=2, seed=seed)
        candidates += read_jsonl(cand)
        rankings += read_jsonl(ranks)
    return candidates, rankings


# ----------------------------------------------------------------------- variants trained by rlhf rm

def train_rm(sft: Path, data: Path, out: Path, world: World, *, lr: float, epochs: int, seed: int) -> Path:
    """`train_reward_model` with the demo's settings (`pipeline.reward_model`: demos normalize, the world judges)."""
    pipeline.reward_model(sft, data, out, world, lr=lr, epochs=epochs, seed=seed)
    return out


def scalar_scores(model: ScalarModel, tokenizer, samples: list[tuple]) -> dict:
    """r(x, y) of each (prompt, text, finished) sample."""
    scores = score_texts(model, tokenizer, [s[0] for s in samples], [s[1] for s in samples], [s[2] for s in samples])
    return dict(zip(samples, scores))


def spread_rankings(world: World, sft: Path, work: Path, plan, seed: int) -> Path:
    """The demo's number of rankings spread over twice the prompts: K outputs of the SFT policy for
    2 × `label_prompts` training prompts, each item ranked by one simulated labeler instead of `per_item`."""
    work.mkdir(parents=True, exist_ok=True)
    pipeline.sample([sft], world.train_prompts_path, work / "candidates.jsonl", k=plan.k,
                    temperatures=plan.temperatures, limit=plan.per_item * plan.label_prompts,
                    max_new_tokens=world.response_limit, seed=seed)
    pipeline.simulate(world.path, work / "candidates.jsonl", work / "rankings.jsonl", labelers=plan.labelers,
                      per_item=1, seed=seed)
    return work / "rankings.jsonl"


def half_rankings(records: list[dict], seed: int) -> list[dict]:
    """The rankings of a random half of the items (every ranking of each chosen item)."""
    ids = sorted({r["id"] for r in records})
    chosen = set(random.Random(seed).sample(ids, len(ids) // 2))
    return [r for r in records if r["id"] in chosen]


def gold_ranked(records: list[dict]) -> list[dict]:
    """Each ranking record with its ranking replaced by the gold reward's (DIAGNOSTIC: module docstring, d)."""
    return [{**r, "ranking": gold_ranking(r["prompt"], r["completions"], r["finished"]),
             "labeler": "gold"} for r in records]


# ---------------------------------------------------------------------- bench-only diagnostic loops

def encode(tokenizer, prompt: str, text: str, finished: bool) -> tuple[list[int], int]:
    """(prompt + response ids, where the response starts), as `response_sequences` builds them."""
    head = prompt_ids(tokenizer, prompt)
    return head + completion_ids(tokenizer, prompt, text, finished, head, whole=True), len(head)


class HybridReward(nn.Module):
    """r(x, y) = pool_w(h) + b + a·stat_t log p(y_t | x, y_<t): a scalar head read on the last hidden states plus a
    learned multiple of a statistic of the response's token log-probabilities (the tied LM head kept).

    `pool`: where the head reads — "eos", w·h at the response's last token (the standard reward model); "mean",
    the mean of w·h_t over the response's tokens. `likelihood`: whose log p — "trained", the fine-tuned model's
    own (variant f); "frozen", a frozen copy of the policy the model starts from, log π_SFT (variant i); None: no
    such term (variant h). `statistic`: "mean", "sum" or "min" over the response's tokens (EOS included).
    With w = 0, b = 0, a = 1 it is the SFT policy's statistic of log p (variants g)."""

    def __init__(self, lm, seed: int = 0, head: bool = True, pool: str = "eos", likelihood: str | None = "trained",
                 statistic: str = "mean"):
        super().__init__()
        self.lm, self.pool, self.likelihood, self.statistic = lm, pool, likelihood, statistic
        self.reference = copy.deepcopy(lm).eval().requires_grad_(False) if likelihood == "frozen" else None
        d = lm.config.hidden_size
        self.head = nn.Linear(d, 1)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():  # N(0, 1/√(d+1)) as the scalar model's head (models/scalar.py)
            self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=generator) / math.sqrt(d + 1)
                                   if head else torch.zeros_like(self.head.weight))
            self.head.bias.zero_()
        self.a = nn.Parameter(torch.tensor(1.0 if likelihood else 0.0), requires_grad=likelihood is not None)

    def forward(self, rows: list[list[int]], starts: list[int], pad_id: int) -> torch.Tensor:
        ids = pad_right(rows, pad_id)
        mask = pad_right([[1] * len(r) for r in rows], 0)
        out = self.lm(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
        lengths = torch.tensor([len(r) for r in rows])
        positions = torch.arange(ids.shape[1])
        response = (positions[None] >= torch.tensor(starts)[:, None]) & (positions[None] < lengths[:, None])
        hidden = out.hidden_states[-1]
        if self.pool == "eos":
            r = self.head(hidden[torch.arange(len(rows)), lengths - 1]).squeeze(-1)
        else:  # the mean of w·h_t + b over the response's tokens
            r = (self.head(hidden).squeeze(-1) * response).sum(-1) / response.sum(-1)
        if self.likelihood is None:
            return r
        logits = out.logits
        if self.reference is not None:
            with torch.no_grad():
                logits = self.reference(input_ids=ids, attention_mask=mask, use_cache=False).logits
        logp = logits[:, :-1].float().log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]  # log p(ids[t+1])
        scored = response[:, 1:]  # token t+1 of the response, predicted at t
        return r + self.a * token_statistic(logp, scored, self.statistic)


def token_statistic(logp: torch.Tensor, mask: torch.Tensor, statistic: str) -> torch.Tensor:
    """The mean, sum or min of each row's log-probabilities where `mask` holds [B]."""
    if statistic == "min":
        return logp.masked_fill(~mask, math.inf).min(-1).values
    total = (logp * mask).sum(-1)
    return total if statistic == "sum" else total / mask.sum(-1).clamp(min=1)


def tokenized_groups(tokenizer, records: list[dict]) -> list[dict]:
    out = []
    for g in ordered_groups(preference_groups("rankings", records)):
        enc = [encode(tokenizer, g["prompt"], t, f) for t, f in zip(g["completions"], g["finished"])]
        out.append({"rows": [e[0] for e in enc], "starts": [e[1] for e in enc], "pairs": g["pairs"],
                    "weight": pair_weight(len(g["completions"]))})
    return out


def fit(model: torch.nn.Module, n: int, loss_of, *, lr: float, epochs: int, seed: int, batch_size: int,
        warmup_ratio: float, grad_clip: float) -> None:
    """`rlhf rm`'s optimizer and schedule (AdamW, warm-up + cosine, clipping) over `epochs` shuffled passes of
    `n` examples: one step per batch of indices, on `loss_of(indices)`."""
    total = -(-n // batch_size) * epochs
    optimizer = make_optimizer(model.parameters(), lr)
    schedule = warmup_cosine(optimizer, total, max(1, int(warmup_ratio * total)))
    rng = random.Random(seed)
    for _ in range(epochs):
        order = list(range(n))
        rng.shuffle(order)
        for start in range(0, n, batch_size):
            loss_of(order[start:start + batch_size]).backward()
            optimizer_step(optimizer, schedule, model.parameters(), grad_clip)


def train_hybrid(sft: Path, records: list[dict], *, lr: float, epochs: int, seed: int, batch_size: int = 16,
                 warmup_ratio: float = 0.05, grad_clip: float = 1.0, **form) -> tuple[HybridReward, object]:
    """Pairwise loss (InstructGPT eq. 1, `losses.preference_loss`) on a `HybridReward(**form)` started from the
    SFT policy, rlhf rm's optimizer and schedule (AdamW, warm-up + cosine, clipping); all outputs of a ranking in
    one batch."""
    torch.manual_seed(seed)
    lm, tokenizer = load_policy(sft)
    model = HybridReward(lm.train(), seed, **form)
    groups = tokenized_groups(tokenizer, records)

    def loss_of(idx: list[int]) -> torch.Tensor:
        rows, starts, chosen, rejected, weight = [], [], [], [], []
        for g in (groups[i] for i in idx):
            base = len(rows)
            rows += g["rows"]
            starts += g["starts"]
            for w, l in g["pairs"]:
                chosen.append(base + w), rejected.append(base + l), weight.append(g["weight"])
        r = model(rows, starts, tokenizer.pad_token_id)
        return preference_loss(r[chosen], r[rejected], torch.tensor(weight), len(idx))

    fit(model, len(groups), loss_of, lr=lr, epochs=epochs, seed=seed, batch_size=batch_size,
        warmup_ratio=warmup_ratio, grad_clip=grad_clip)
    return model.eval(), tokenizer


@torch.no_grad()
def hybrid_scores(model: HybridReward, tokenizer, samples: list[tuple], batch_size: int = 128) -> dict:
    encoded = [encode(tokenizer, *s) for s in samples]
    out = {}
    order = sorted(range(len(samples)), key=lambda i: len(encoded[i][0]))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        r = model([encoded[i][0] for i in idx], [encoded[i][1] for i in idx], tokenizer.pad_token_id)
        out.update({samples[i]: v for i, v in zip(idx, r.tolist())})
    return out


def train_flags(sft: Path, records: list[dict], *, lr: float, epochs: int, seed: int, batch_size: int = 32,
                warmup_ratio: float = 0.05, grad_clip: float = 1.0) -> tuple[ScalarModel, object]:
    """The scalar model trained pointwise: logit σ⁻¹ P(follows the instruction), target 1 − the share of the
    labelers who flagged the output `fails_instruction` (binary cross-entropy)."""
    tokenizer = load_tokenizer(sft)
    model = ScalarModel.from_backbone(sft, tokenizer, seed=seed).train()
    flags: dict[tuple, list[float]] = {}
    for r in records:
        for text, done, f in zip(r["completions"], r["finished"], r["flags"]):
            flags.setdefault((r["prompt"], text, bool(done)), []).append(float(f["fails_instruction"]))
    items = sorted(flags)
    rows = response_sequences(tokenizer, [i[0] for i in items], [i[1] for i in items], [i[2] for i in items])
    target = torch.tensor([1 - sum(flags[i]) / len(flags[i]) for i in items])

    def loss_of(idx: list[int]) -> torch.Tensor:
        ids = pad_right([rows[i] for i in idx], tokenizer.pad_token_id)
        mask = pad_right([[1] * len(rows[i]) for i in idx], 0)
        return F.binary_cross_entropy_with_logits(model.score(ids, mask), target[idx])

    fit(model, len(items), loss_of, lr=lr, epochs=epochs, seed=seed, batch_size=batch_size,
        warmup_ratio=warmup_ratio, grad_clip=grad_clip)
    return model.eval(), tokenizer


# ------------------------------------------------------------------------------------------ table

def measure(name: str, scores: dict, sets: list[list], groups: list[dict], gold: dict, seconds: float) -> dict:
    pairs = gold_pair_accuracy(sets, scores, gold)
    by = accuracy_breakdown(groups, lambda g, i: scores[key(g, i)], lambda g, i: gold[key(g, i)])
    return {"variant": name, "labelers": labeler_pair_accuracy(groups, scores), **pairs, **by,
            "wall_s": round(seconds, 1)}


def print_table(rows: list[dict]) -> None:
    shown = [c for c in COMPONENTS if any(c in r["by_component"] for r in rows)]
    families = sorted({f for r in rows for f in r["correctness_by_family"]})
    print(f"  {'':<30} {'labelers':>8} {'gold':>8} {'gold':>8}  labelers' pairs decided by")
    print(f"  {'variant':<30} {'pairs':>8} {'total':>8} {'correct':>8} "
          + " ".join(f"{c:>12}" for c in shown) + f" {'wall s':>7}")
    for r in rows:
        cells = [r["labelers"]["accuracy"], r["gold_total"]["accuracy"], r["correctness"]["accuracy"]]
        comp = [r["by_component"].get(c, {}).get("rm_accuracy") for c in shown]
        print(f"  {r['variant']:<30} " + " ".join(f"{v:>8.3f}" for v in cells) + " "
              + " ".join(f"{v:>12.3f}" if v is not None else f"{'-':>12}" for v in comp) + f" {r['wall_s']:>7.1f}")
    ref = rows[0]
    print(f"  pairs: labelers {ref['labelers']['n_pairs']}, gold total {ref['gold_total']['n_pairs']}, "
          f"correctness {ref['correctness']['n_pairs']}; deciding component (labelers' pairs): "
          + ", ".join(f"{c} {ref['by_component'][c]['n_pairs']} (ceiling "
                      f"{ref['by_component'][c]['noise_ceiling']:.3f})" for c in shown))
    print("\n  pairs whose gold correctness differs, by task family:")
    print(f"  {'variant':<30} " + " ".join(f"{f[:8]:>8}" for f in families))
    for r in rows:
        cells = [r["correctness_by_family"].get(f, {}).get("accuracy") for f in families]
        print(f"  {r['variant']:<30} " + " ".join(f"{v:>8.3f}" if v is not None else f"{'-':>8}" for v in cells))
    print(f"  {'pairs':<30} " + " ".join(f"{ref['correctness_by_family'].get(f, {}).get('n_pairs', 0):>8}"
                                          for f in families))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default="runs/demo/world")
    parser.add_argument("--run", default="runs/demo/seed-0", help="a seed directory of `rlhf demo` (sft/, "
                        "rankings.jsonl)")
    parser.add_argument("--seed", type=int, default=0, help="the run's seed (the demo's RM seed)")
    parser.add_argument("--eval-seeds", type=int, nargs="+", default=[101, 102, 103])
    parser.add_argument("--hybrid-epochs", type=int, nargs="+", default=[1])
    parser.add_argument("--flags-epochs", type=int, default=2)
    parser.add_argument("--only", nargs="+", default=None, help="variants to run (names as in the table)")
    parser.add_argument("--out", default="runs/bench/rm_correctness.json")
    parser.add_argument("--work", default=None, help="samples, rankings, models (default: OUT without .json)")
    args = parser.parse_args(argv)
    clock = time.time()
    world, run = World(args.world), Path(args.run)
    sft, rankings_path = run / "sft", run / "rankings.jsonl"
    plan = PLANS[world.meta.get("preset", "tiny")]
    out = Path(args.out)
    work = Path(args.work) if args.work else out.with_suffix("")
    work.mkdir(parents=True, exist_ok=True)
    wanted = lambda name: args.only is None or any(name.startswith(o) for o in args.only)  # noqa: E731

    candidates, eval_rankings = eval_set(world, sft, work, args.eval_seeds, plan.k, plan.temperatures)
    groups = ordered_groups(preference_groups("rankings", eval_rankings))
    sets = [[(c["prompt"], x["text"], bool(x["finished"])) for x in c["completions"]] for c in candidates]
    samples = sorted({s for keys in sets for s in keys})
    gold = {s: gold_reward(*s) for s in samples}
    sft_correct = sum(g.correctness for g in gold.values()) / len(gold)
    print(f"rm_correctness: {len(candidates)} held-out items ({len(world.prompts('heldout'))} prompts x "
          f"{len(args.eval_seeds)} sampling seeds, K={plan.k}, T={plan.temperatures}), {len(eval_rankings)} rankings; "
          f"{len(samples)} distinct outputs, mean gold correctness {sft_correct:.3f}; {time.time() - clock:.0f} s",
          flush=True)
    print(f"rm_correctness: {GOLD_NOTE}; {LOOP_NOTE}", flush=True)

    records = read_jsonl(rankings_path)
    train_records, _ = split_by_prompt(records, RewardConfig().eval_fraction, args.seed, "rm-eval", "rm")
    rows = [measure("gold r* (noise ceiling)", {s: g.total for s, g in gold.items()}, sets, groups, gold, 0.0)]

    def run_variant(name: str, make_scores) -> None:
        if not wanted(name):
            return
        start = time.time()
        scores = make_scores()
        rows.append(measure(name, scores, sets, groups, gold, time.time() - start))
        print(f"  done: {name} ({rows[-1]['wall_s']:.0f} s)", flush=True)

    def rm(name, data, epochs, seed=args.seed):
        def scores():
            rm_dir = train_rm(sft, data, work / name, world, lr=plan.rm_lr, epochs=epochs, seed=seed)
            return scalar_scores(ScalarModel.from_pretrained(rm_dir).eval(), load_tokenizer(rm_dir), samples)
        return scores

    write_jsonl(work / "half.jsonl", half_rankings(records, args.seed))
    write_jsonl(work / "gold-ranked.jsonl", gold_ranked(records))
    run_variant(f"a. demo ({plan.rm_epochs} ep)", rm("demo", rankings_path, plan.rm_epochs))
    run_variant("b. 3 epochs", rm("epochs3", rankings_path, 3))
    run_variant("c. half the items", rm("half", work / "half.jsonl", plan.rm_epochs))
    run_variant("d. gold-ranked (diag.)", rm("gold-ranked", work / "gold-ranked.jsonl", plan.rm_epochs))
    run_variant(f"e. flags clf (diag., {args.flags_epochs} ep)",
                lambda: scalar_scores(*train_flags(sft, train_records, lr=plan.rm_lr, epochs=args.flags_epochs,
                                                      seed=args.seed), samples))
    for epochs in args.hybrid_epochs:
        run_variant(f"f. hybrid (diag., {epochs} ep)",
                    lambda epochs=epochs: hybrid_scores(*train_hybrid(sft, train_records, lr=plan.rm_lr,
                                                                      epochs=epochs, seed=args.seed), samples))
    for statistic in ("mean", "sum", "min"):
        run_variant(f"g. SFT {statistic} log p", lambda statistic=statistic: hybrid_scores(
            HybridReward(load_policy(sft)[0], head=False, statistic=statistic).eval(), load_tokenizer(sft), samples))
    run_variant("h. mean-pooled head (diag.)",
                lambda: hybrid_scores(*train_hybrid(sft, train_records, lr=plan.rm_lr, epochs=1, seed=args.seed,
                                                    pool="mean", likelihood=None), samples))
    run_variant("i. frozen log pi_SFT (diag.)",
                lambda: hybrid_scores(*train_hybrid(sft, train_records, lr=plan.rm_lr, epochs=1, seed=args.seed,
                                                    likelihood="frozen"), samples))
    if wanted("j. twice the prompts"):
        spread_rankings(world, sft, work / "spread", plan, args.seed)
    run_variant("j. twice the prompts, 1 label", rm("spread-rm", work / "spread" / "rankings.jsonl", plan.rm_epochs))

    def ensemble() -> dict:  # the mean score of three reward models that differ only in their seed
        seeds = range(args.seed, args.seed + 3)
        members = [rm(f"ensemble-{seed}", rankings_path, plan.rm_epochs, seed)() for seed in seeds]
        return {k: sum(m[k] for m in members) / len(members) for k in samples}

    run_variant("k. ensemble of 3 RMs", ensemble)

    print()
    print(f"reward models of {run} on {len(candidates)} held-out items (accuracy; ties count 1/2):")
    print_table(rows)
    print(f"  ({GOLD_NOTE}; {LOOP_NOTE})")
    result = {"world": str(world.path), "run": str(run), "eval_seeds": args.eval_seeds, "items": len(candidates),
              "rankings": len(eval_rankings), "outputs": len(samples), "sft_gold_correctness": round(sft_correct, 4),
              "notes": [GOLD_NOTE, LOOP_NOTE], "variants": rows, "wall_s": round(time.time() - clock, 1),
              "command": " ".join(sys.argv)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"rm_correctness: {time.time() - clock:.0f} s -> {out}")
    return result


if __name__ == "__main__":
    main()
