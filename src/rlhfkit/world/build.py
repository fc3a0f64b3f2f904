"""`rlhf world build`: the embedded toy world, written into one directory.

    WORLD/world.json              preset, seed, labeler temperature τ, the held-out rule
    WORLD/base/                   the misaligned base LM + word-level tokenizer (save_pretrained)
    WORLD/prompts/train.jsonl     prompts for RM candidates and PPO (never held out)
    WORLD/prompts/heldout.jsonl   evaluation prompts; split by prompt, unseen by every training step
    WORLD/demos.jsonl             the noisy expert's demonstrations (prompt, completion)
    WORLD/config.toml, metrics.jsonl

The base LM is cached by a hash of its config, corpus and seed (RLHFKIT_CACHE, default ~/.cache/rlhfkit),
so a second build with the same settings takes seconds.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import asdict
from pathlib import Path

from rlhfkit.data.jsonl import read_jsonl, write_jsonl
from rlhfkit.data.schemas import demo_record, prompt_record
from rlhfkit.errors import UserError
from rlhfkit.runtime.directory import RunDir, prepare_out_dir
from rlhfkit.world import vocab as V
from rlhfkit.world.configs import PRESETS, WorldConfig
from rlhfkit.world.corpus import (
    HARMFUL_REPLIES,
    RAMBLE_SENTENCES,
    RUDE_REPLIES,
    expert_response,
    fact_document,
    web_response,
)
from rlhfkit.world.gold import GoldReward, gold_reward
from rlhfkit.world.labelers import calibrate_temperature, make_labelers, score_items
from rlhfkit.world.pretrain import base_config, cache_key, cached_pretrain, pretrain
from rlhfkit.world.tasks import FAMILIES, Task, sample_task
from rlhfkit.world.tokenizer import build_tokenizer

RESPONSE_LIMIT = 32  # tokens a world response may have before it counts as never ending
CALIBRATION_EXPERT_SHARE = 0.97  # expert-style candidates in the labelers' calibration set (the rest raw web)


def is_heldout(prompt: str, seed: int, fraction: float) -> bool:
    """Split by prompt (never by sample): a stable hash of the prompt text decides."""
    digest = hashlib.md5(f"{seed}|{prompt}".encode()).hexdigest()
    return int(digest[:8], 16) % 10_000 < fraction * 10_000


def _tasks(rng: random.Random, n: int, keep, distinct: bool = False, tries: int = 200) -> list[Task]:
    out, seen = [], set()
    for _ in range(n * tries):
        if len(out) == n:
            break
        task = sample_task(rng)
        if keep(task.prompt) and not (distinct and task.prompt in seen):
            out.append(task)
            seen.add(task.prompt)
    return out


def world_words() -> set[str]:
    """Every word the world can write (the tokenizer's vocabulary)."""
    words = set()
    for items in V.CATEGORIES.values():
        words |= set(items)
    for text in (*RAMBLE_SENTENCES, *RUDE_REPLIES, *HARMFUL_REPLIES, *V.PREAMBLES, *V.CLOSINGS):
        words |= set(text.split())
    lists = (V.PLURALS.values(), V.COLOR_OF, V.COLOR_OF.values(), [w for p in V.OPPOSITE_PAIRS for w in p],
             V.NUMBERS, V.NAMES, V.CITIES, V.PETS, V.PROBLEMS, V.FEELINGS, V.WEATHER, V.PEOPLE, V.NICE, V.RUDE,
             V.VIOLENT, V.SEXUAL, V.DENIGRATING, V.HARMFUL_ADVICE, V.MORALIZING, V.ENCOURAGING, V.RAMBLE,
             V.PUNCT, ["tl;dr"])
    for group in lists:
        words |= set(group)
    rng = random.Random(0)
    for family in FAMILIES.values():  # template words
        for _ in range(200):
            task = family.sample(rng)
            words |= set(task.prompt.split()) | set(" ".join(family.answer(task.args, rng)).split())
    for _ in range(3000):  # the fact templates' words
        words |= set(fact_document(rng))
    return {w for w in words if not w.startswith("{")}


def build_world(cfg: WorldConfig) -> Path:
    cfg.check()
    prepare_out_dir(cfg.out, cfg.overwrite)
    preset = PRESETS[cfg.preset]
    steps = cfg.pretrain_steps if cfg.pretrain_steps is not None else preset.pretrain_steps
    start = time.time()
    run = RunDir(cfg.out, cfg, cfg.overwrite)
    out = run.path
    rng = random.Random(cfg.seed)
    train = lambda p: not is_heldout(p, cfg.seed, cfg.heldout_fraction)  # noqa: E731
    heldout = lambda p: is_heldout(p, cfg.seed, cfg.heldout_fraction)  # noqa: E731

    tokenizer = build_tokenizer(world_words())
    heldout_tasks = _tasks(rng, preset.n_heldout, heldout, distinct=True)
    train_tasks = _tasks(rng, preset.n_train_prompts, train)
    demo_tasks = _tasks(rng, preset.n_demos, train)
    corpus_tasks = _tasks(rng, preset.n_corpus, train)

    # 1. The base LM: pretrained on raw-web answers (cached).
    documents = []
    for task in corpus_tasks:
        words, ended = web_response(task, rng, RESPONSE_LIMIT)
        ids = tokenizer(f"{task.prompt} {' '.join(words)}", add_special_tokens=False)["input_ids"]
        documents.append((ids + [tokenizer.eos_token_id] if ended else ids)[:preset.max_len])
    for _ in range(preset.n_facts):
        ids = tokenizer(" ".join(fact_document(rng)), add_special_tokens=False)["input_ids"]
        documents.append((ids + [tokenizer.eos_token_id])[:preset.max_len])
    config = base_config(cfg.arch, tokenizer, preset.d_model, preset.n_layers, preset.n_heads, n_positions=128)
    key = cache_key(preset=asdict(preset), steps=steps, seed=cfg.seed, arch=cfg.arch, vocab=tokenizer.get_vocab(),
                    corpus=hashlib.sha256(json.dumps(documents).encode()).hexdigest())
    hit = cached_pretrain(key, tokenizer, out / "base", lambda: pretrain(
        config, documents, steps=steps, batch_size=preset.pretrain_batch, lr=preset.pretrain_lr, seed=cfg.seed,
        log=run.log))

    # 2. Prompts and the expert's demonstrations.
    write_jsonl(out / "prompts" / "train.jsonl",
                ({"id": f"train-{i}", "prompt": t.prompt, "task": t.family} for i, t in enumerate(train_tasks)))
    write_jsonl(out / "prompts" / "heldout.jsonl",
                ({"id": f"heldout-{i}", "prompt": t.prompt, "task": t.family} for i, t in enumerate(heldout_tasks)))
    write_jsonl(out / "demos.jsonl",
                ({"prompt": t.prompt, "completion": expert_response(t, rng)} for t in demo_tasks))

    # 3. Labelers: τ so that two of them agree on ~73% of pairs of SFT-like candidates (K = 4 answers in the
    #    expert's style, a few of them raw-web answers, as an SFT policy's samples are).
    calibration = []
    for task in _tasks(rng, 1500, train):
        cands, done = [], []
        for _ in range(4):
            if rng.random() < CALIBRATION_EXPERT_SHARE:
                cands.append(expert_response(task, rng)), done.append(True)
            else:
                words, ended = web_response(task, rng, RESPONSE_LIMIT)
                cands.append(" ".join(words[:RESPONSE_LIMIT])), done.append(ended)
        calibration.append((task.prompt, cands, done))
    temperature = calibrate_temperature(score_items(calibration), seed=cfg.seed)

    meta = {"preset": cfg.preset, "seed": cfg.seed, "arch": cfg.arch, "heldout_fraction": cfg.heldout_fraction,
            "response_limit": RESPONSE_LIMIT, "labeler_temperature": temperature, "families": list(FAMILIES),
            "base_cache_key": key, "pretrain_steps": steps, **{f"preset_{k}": v for k, v in asdict(preset).items()}}
    (out / "world.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    run.log(steps, labeler_temperature=temperature, build_s=round(time.time() - start, 1), base_cached=hit)
    run.close()
    print(f"world '{cfg.preset}' (seed {cfg.seed}, {cfg.arch}) -> {out}  [{len(tokenizer)} words, "
          f"{len(train_tasks)} train / {len(heldout_tasks)} held-out prompts, {len(demo_tasks)} demos, "
          f"labeler τ={temperature}, base LM {'from cache' if hit else 'pretrained'}, "
          f"{time.time() - start:.0f}s]")
    return out


class World:
    """A built world, loaded from its directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta = self.path / "world.json"
        if not meta.exists():
            raise UserError(f"{self.path}: not a world directory (no world.json; run `rlhf world build`)")
        try:
            self.meta = json.loads(meta.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UserError(f"{meta}: invalid JSON: {exc.msg}") from None
        except (UnicodeDecodeError, RecursionError) as exc:
            raise UserError(f"{meta}: invalid JSON: {exc}") from None
        if not isinstance(self.meta, dict):
            raise UserError(f"{meta}: not a world description (expected a JSON object)")
        self.base = self.path / "base"
        self.demos_path = self.path / "demos.jsonl"
        self.train_prompts_path = self.path / "prompts" / "train.jsonl"
        self.heldout_prompts_path = self.path / "prompts" / "heldout.jsonl"

    @property
    def response_limit(self) -> int:
        return int(self.meta.get("response_limit", RESPONSE_LIMIT))

    def prompts(self, split: str = "heldout") -> list[str]:
        path = self.heldout_prompts_path if split == "heldout" else self.train_prompts_path
        return [r["prompt"] for r in read_jsonl(path, prompt_record)]

    def demos(self) -> list[dict]:
        return read_jsonl(self.demos_path, demo_record)

    def gold(self, prompt: str, response: str, finished: bool = True) -> GoldReward:
        return gold_reward(prompt, response, finished)

    def labelers(self, n: int, seed: int = 0):
        return make_labelers(n, float(self.meta["labeler_temperature"]), seed)
