"""`rlhf sample`: K outputs per prompt, for labelers to compare.

As in summarize-from-feedback (Stiennon et al. 2020, §3.4), the K outputs of a prompt come from several
sources: different policies (current and initial) and different temperatures. Each of the K slots of a prompt
draws its source at random (seeded), so every prompt compares a mix; each candidate records its `source`
(`policy-name@T`) and whether it ended with EOS (`finished`).
"""

from __future__ import annotations

import random
from pathlib import Path

from rlhfkit.data.chat import is_conversation, require_template
from rlhfkit.data.formats import read_prompts
from rlhfkit.data.jsonl import check_writable, write_jsonl
from rlhfkit.data.schemas import tools_field
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
from rlhfkit.recipes.configs import SampleConfig


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
    records = read_prompts(cfg.prompts, cfg)[:cfg.limit]
    for path in cfg.models:
        check_model_dir(path)
    sources = [(m, t) for m in cfg.models for t in cfg.temperatures]
    slots = assign_sources(len(records), cfg.k, len(sources), cfg.seed)
    device = pick_device(cfg.device)
    results: dict[tuple[int, int], tuple[str, bool]] = {}
    for s, (path, temperature) in enumerate(sources):
        tokenizer = load_tokenizer(path, cfg.chat_template)
        model = load_causal_lm(path, tokenizer).to(device).eval()
        run_in_bf16(cfg.bf16, model)
        check_lengths(path, model.config, max_new_tokens=cfg.max_new_tokens)
        if any(is_conversation(r["prompt"]) for r in records):
            require_template(tokenizer)
        check_prompt_lengths(cfg.prompts, tokenizer, records, cfg.max_new_tokens, position_limit(model), path)
        wanted = [(i, j) for i, row in enumerate(slots) for j, src in enumerate(row) if src == s]
        engine = make_engine(cfg.rollout_engine, model, tokenizer, max_len=position_limit(model) or 4096,
                             served=path, gpu_memory=cfg.vllm_gpu_memory, seed=cfg.seed,
                             server=cfg.rollout_server)
        texts, finished = generate_texts(engine, [records[i]["prompt"] for i, _ in wanted],
                                         max_new_tokens=cfg.max_new_tokens, temperature=temperature,
                                         top_p=cfg.top_p, seed=cfg.seed * 1000 + s)
        engine.close()
        results.update({key: (t, f) for key, t, f in zip(wanted, texts, finished)})
    candidates = []
    for i, r in enumerate(records):
        completions = []
        for j, s in enumerate(slots[i]):
            text, done = results[(i, j)]
            completions.append({"text": text, "source": source_name(*sources[s]), "finished": done})
        candidates.append({"id": r.get("id", f"item-{i}"), "prompt": r["prompt"], **tools_field(r["prompt"]),
                           "completions": completions})
    write_jsonl(cfg.out, candidates)
    print(f"sample: {len(candidates)} prompts x {cfg.k} outputs from {len(sources)} sources "
          f"({', '.join(source_name(*s) for s in sources)}) -> {cfg.out}")
    return candidates
