"""`rlhf sample`: K outputs per prompt, for labelers to compare.

As in summarize-from-feedback (Stiennon et al. 2020, §3.4), the K outputs of a prompt come from several
sources: different policies (current and initial) and different temperatures. Each of the K slots of a prompt
draws its source at random (seeded), so every prompt compares a mix; each candidate records its `source`
(`policy-name@T`) and whether it ended with EOS (`finished`).

With `--select uncertain|disagree|mixed` it samples a pool first (`--select-from` prompts × `--pool-k` outputs) and
keeps the `--limit` prompts and K outputs of each that data/selection.py chooses (a `--random-share` of them drawn
uniformly), each record with `selected`: {by, score}; `uncertain` scores the pool with `--select-rm` (bootstrap heads
on its features when `--select-data` gives the rankings it learned from: recipes/judges.py).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from rlhfkit.data.chat import is_conversation, require_template
from rlhfkit.data.formats import read_prompts
from rlhfkit.data.jsonl import check_writable, read_jsonl, write_jsonl
from rlhfkit.data.schemas import ranking_record, tools_field
from rlhfkit.data.selection import CandidateSet, select
from rlhfkit.engines.core import generate_texts, make_engine
from rlhfkit.errors import UserError
from rlhfkit.generation import prompt_rows
from rlhfkit.models.loading import (
    check_lengths,
    check_model_dir,
    load_causal_lm,
    load_tokenizer,
    pick_device,
    position_limit,
)
from rlhfkit.models.precision import run_in_bf16
from rlhfkit.models.reward_model import RewardModel
from rlhfkit.recipes.configs import SampleConfig
from rlhfkit.recipes.judges import ensemble_scores


def source_name(model: str, temperature: float) -> str:
    return f"{Path(model).name or model}@T={temperature:g}"


def assign_sources(n_prompts: int, k: int, n_sources: int, seed: int) -> list[list[int]]:
    """For each prompt, the source index of each of its K slots: each source used equally often (±1)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n_prompts):
        slots = [j % n_sources for j in range(k)] if k >= n_sources else rng.sample(range(n_sources), k)
        rng.shuffle(slots)
        out.append(slots)
    return out


def check_prompt_lengths(source, tokenizer, records: list[dict], max_new_tokens: int, limit: int | None,
                         model_path) -> None:
    """One line, before any sampling, naming the first prompt whose tokens and the response's cannot fit in the
    model's positions (the model would otherwise index past its position embeddings)."""
    if limit is None:
        return
    for i, row in enumerate(prompt_rows(tokenizer, [r["prompt"] for r in records])):
        if len(row) + max_new_tokens > limit:
            name = records[i].get("id", f"prompt {i + 1}")
            raise UserError(f"{source}: {name}: {len(row)} prompt tokens + --max-new-tokens {max_new_tokens} is "
                            f"beyond the position limit {limit} of {model_path}; shorten the prompt or lower "
                            "--max-new-tokens")


def sample_candidates(cfg: SampleConfig) -> list[dict]:
    cfg.check()
    check_writable(cfg.out)
    records = read_prompts(cfg.prompts, cfg)
    rankings = read_jsonl(cfg.select_data, ranking_record) if cfg.select_data else None
    if cfg.select == "random":
        candidates, sources = generate(cfg, records[:cfg.limit], cfg.k)
    else:
        pool, sources = generate(cfg, records[:cfg.select_from or 2 * cfg.limit], cfg.pool_k or 2 * cfg.k)
        scores = rm_scores(cfg.select_rm, cfg.models[0], pool, rankings, cfg.ensemble, cfg.seed) \
            if cfg.select_rm else None
        candidates = select_candidates(pool, cfg.limit, cfg.k, cfg.select, cfg.random_share, cfg.seed, scores)
    write_jsonl(cfg.out, candidates)
    chosen = "" if cfg.select == "random" else (
        f", chosen by --select {cfg.select} ({sum(c['selected']['by'] == 'random' for c in candidates)} of them at "
        f"random) from {len(pool)} prompts x {cfg.pool_k or 2 * cfg.k}")
    print(f"sample: {len(candidates)} prompts x {cfg.k} outputs from {len(sources)} sources "
          f"({', '.join(source_name(*s) for s in sources)}){chosen} -> {cfg.out}")
    return candidates


def generate(cfg: SampleConfig, records: list[dict], k: int) -> tuple[list[dict], list[tuple[str, float]]]:
    """K outputs for each prompt record (each slot's source drawn by `assign_sources`), and the sources."""
    for path in cfg.models:
        check_model_dir(path)
    sources = [(m, t) for m in cfg.models for t in cfg.temperatures]
    slots = assign_sources(len(records), k, len(sources), cfg.seed)
    device = pick_device(cfg.device)
    results: dict[tuple[int, int], tuple[str, bool]] = {}
    for path in dict.fromkeys(cfg.models):  # each model loaded, checked and given an engine once, for all its
        # temperatures (a model named twice too)
        tokenizer = load_tokenizer(path, cfg.chat_template)
        model = load_causal_lm(path, tokenizer).to(device).eval()
        run_in_bf16(cfg.bf16, model)
        check_lengths(path, model.config, max_new_tokens=cfg.max_new_tokens)
        if any(is_conversation(r["prompt"]) for r in records):
            require_template(tokenizer)
        check_prompt_lengths(cfg.prompts, tokenizer, records, cfg.max_new_tokens, position_limit(model), path)
        engine = make_engine(cfg.rollout_engine, model, tokenizer, max_len=position_limit(model) or 4096,
                             served=path, gpu_memory=cfg.vllm_gpu_memory, seed=cfg.seed,
                             server=cfg.rollout_server)
        for s in (s for s, (source, _) in enumerate(sources) if source == path):
            wanted = [(i, j) for i, row in enumerate(slots) for j, src in enumerate(row) if src == s]
            texts, finished = generate_texts(engine, [records[i]["prompt"] for i, _ in wanted],
                                             max_new_tokens=cfg.max_new_tokens, temperature=sources[s][1],
                                             top_p=cfg.top_p, seed=cfg.seed * 1000 + s)
            results.update({key: (t, f) for key, t, f in zip(wanted, texts, finished)})
        engine.close()
    candidates = []
    for i, r in enumerate(records):
        completions = []
        for j, s in enumerate(slots[i]):
            text, done = results[(i, j)]
            completions.append({"text": text, "source": source_name(*sources[s]), "finished": done})
        candidates.append({"id": r.get("id", f"item-{i}"), "prompt": r["prompt"], **tools_field(r["prompt"]),
                           "completions": completions})
    return candidates, sources


def rm_scores(rm_dir: str, tokenizer_dir: str, pool: list[dict], rankings: list[dict] | None, heads: int,
              seed: int) -> list:
    """Each pooled candidate's scores under the ensemble of `judges.ensemble_scores` ([E][M] per record)."""
    rm = RewardModel.load(rm_dir, load_tokenizer(tokenizer_dir))
    return ensemble_scores(rm, pool, rankings, heads, seed)


def select_candidates(pool: list[dict], n: int, k: int, strategy: str, random_share: float, seed: int,
                      scores: list | None = None) -> list[dict]:
    """The n chosen records of the pool with their K chosen completions, each with `selected`: {by, score}
    (data/selection.py): by "random" for the random share, else the strategy that chose it."""
    def key(text):
        return text if isinstance(text, str) else json.dumps(text, sort_keys=True)
    sets = [CandidateSet(tuple(key(c["text"]) for c in it["completions"]),
                         tuple(c.get("source", "") for c in it["completions"]),
                         tuple(scores[i]) if scores else ()) for i, it in enumerate(pool)]
    picks = select(sets, n, k, strategy, random_share, seed)
    return [{**pool[p.index], "completions": [pool[p.index]["completions"][j] for j in p.candidates],
             "selected": {"by": p.by, "score": p.score}} for p in picks]
