"""Writing the tool world (`world/tools.py`): prompts, demonstrations with and without the calculator, and a
random-init base LM with the tool world's tokenizer and chat template."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from rlhfkit.world.build import is_heldout
from rlhfkit.world.pretrain import base_config
from rlhfkit.world.tools import expert_messages, sample_sum, tool_schemas, tool_tokenizer


def build_tool_world(out: str | Path, seed: int = 0, n_demos: int = 1000, n_train: int = 1000, n_heldout: int = 200,
                     heldout_fraction: float = 0.2, d_model: int = 64, n_layers: int = 2, n_heads: int = 2,
                     arch: str = "llama") -> Path:
    """The tool world in `out`: base/ (random-init GPT-2 + tokenizer), prompts/{train,heldout}.jsonl (messages with
    the tool schemas), demos_tools.jsonl, demos_direct.jsonl. Deterministic in `seed`."""
    out = Path(out)
    rng = random.Random(seed)
    tools = tool_schemas()
    seen_train, seen_heldout = [], {}
    while len(seen_heldout) < n_heldout or len(seen_train) < n_train + n_demos:
        task, prompt = sample_sum(rng)
        if is_heldout(prompt, seed, heldout_fraction):
            if len(seen_heldout) < n_heldout:
                seen_heldout.setdefault(prompt, task)
        elif len(seen_train) < n_train + n_demos:
            seen_train.append((task, prompt))
    demos, train = seen_train[:n_demos], seen_train[n_demos:]
    write = lambda path, rows: _write_jsonl(out / path, rows)  # noqa: E731
    write("prompts/train.jsonl", ({"id": f"train-{i}", "prompt": [{"role": "user", "content": p}], "tools": tools,
                                   "answer": t.answer} for i, (t, p) in enumerate(train)))
    write("prompts/heldout.jsonl", ({"id": f"heldout-{i}", "prompt": [{"role": "user", "content": p}],
                                     "tools": tools, "answer": t.answer}
                                    for i, (p, t) in enumerate(seen_heldout.items())))
    write("demos_tools.jsonl", ({"messages": expert_messages(t, p, rng), "tools": tools} for t, p in demos))
    write("demos_direct.jsonl", ({"prompt": [{"role": "user", "content": p}],
                                  "completion": [{"role": "assistant", "content": str(t.answer)}]} for t, p in demos))
    tokenizer = tool_tokenizer()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(base_config(arch, tokenizer, d_model, n_layers, n_heads, 128))
    model.save_pretrained(out / "base")
    tokenizer.save_pretrained(out / "base")
    (out / "tool_world.json").write_text(json.dumps({"seed": seed, "n_demos": n_demos, "n_train": n_train,
                                                     "n_heldout": n_heldout}, indent=2) + "\n", encoding="utf-8")
    return out


def _write_jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
