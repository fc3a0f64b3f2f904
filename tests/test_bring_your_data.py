"""Issue 16's acceptance: real-world preference files train a reward model and DPO with no conversion step —
a conversational preference dataset in Parquet (TRL's conversational preference format), an HH-RLHF-style JSONL
with an implicit prompt, and an UltraFeedback-style file of scored completions — on a tiny Qwen2 with a ChatML
byte-level BPE tokenizer (pad != EOS, `<|im_end|>` ends a turn)."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from transformers import AutoModelForCausalLM

from tests.arch_zoo import arch_config
from tests.conftest import run_cli
from tests.tokenizers_zoo import save_tiny_model

COLORS = ["red", "green", "blue", "yellow", "purple", "orange"]
THINGS = ["apple", "river", "house", "cat", "tree", "garden"]


def _rows():
    for i, (c, t) in enumerate((c, t) for c in COLORS for t in THINGS):
        yield i, f"Describe a {c} {t}.", f"The {t} is {c} and calm.", f"I do not know about {t}s, sorry."


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("byod") / "qwen2", "chatml", config=arch_config("qwen2"))


def _conversational_parquet(path):
    rows = [{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": q}],
             "chosen": [{"role": "assistant", "content": good}], "rejected": [{"role": "assistant", "content": bad}]}
            for _, q, good, bad in _rows()]
    pd.DataFrame(rows).to_parquet(path)


def _hh_jsonl(path):
    lines = [{"chosen": f"\n\nHuman: {q}\n\nAssistant: {good}", "rejected": f"\n\nHuman: {q}\n\nAssistant: {bad}"}
             for _, q, good, bad in _rows()]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")


def _ultrafeedback_jsonl(path):
    lines = [{"prompt": q, "completions": [good, bad, f"A {t}."], "scores": [9.0, 2.5, 2.5]}
             for (i, q, good, bad), t in zip(_rows(), THINGS * len(COLORS))]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")


def _ultrafeedback_binarized_parquet(path):
    """HuggingFaceH4/ultrafeedback_binarized's layout (issue 31, item 7): a string prompt; chosen and rejected are
    the whole conversation, repeating it; plus the scores, `messages` and `prompt_id`."""
    rows = []
    for i, q, good, bad in _rows():
        user = {"role": "user", "content": q}
        chosen, rejected = [user, {"role": "assistant", "content": good}], [user, {"role": "assistant", "content": bad}]
        rows.append({"prompt": q, "prompt_id": f"{i:064x}", "chosen": chosen, "rejected": rejected,
                     "messages": chosen, "score_chosen": 8.0, "score_rejected": 3.5})
    pd.DataFrame(rows).to_parquet(path)


WRITERS = {"prefs.parquet": _conversational_parquet, "hh.jsonl": _hh_jsonl, "ultrafeedback.jsonl": _ultrafeedback_jsonl,
           "ultrafeedback_binarized.parquet": _ultrafeedback_binarized_parquet}
TINY = ["--epochs", "1", "--batch-size", "8", "--eval-fraction", "0.2", "--threads", "1"]


@pytest.mark.parametrize("name", list(WRITERS))
def test_preferences_in_users_formats_train_a_reward_model_and_dpo(name, qwen2, tmp_path, capsys):
    data = tmp_path / name
    WRITERS[name](data)
    code, out, err = run_cli(["rm", "--model", qwen2, "--data", data, "--out", tmp_path / "rm", *TINY], capsys)
    assert code == 0, err
    metrics = [json.loads(line) for line in (tmp_path / "rm" / "metrics.jsonl").read_text().splitlines()]
    losses = [m["train_loss"] for m in metrics if "train_loss" in m]
    assert losses and all(math.isfinite(x) for x in losses)
    code, out, err = run_cli(["dpo", "--policy", qwen2, "--data", data, "--out", tmp_path / "dpo", *TINY], capsys)
    assert code == 0, err
    assert "held-out preference accuracy" in out
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "dpo").config.model_type == "qwen2"
