"""The architecture matrix of issue 16: ten tiny random architectures (tests/arch_zoo.py) x the four tokenizer
setups (tests/tokenizers_zoo.py, byte-level BPE). The default suite runs each architecture with one setup
(`PAIRING`, every setup twice or more); the whole 10 x 4 product is marked slow.

(a) Each model loads through rlhfkit.models.loading and through plain AutoModelForCausalLM / AutoTokenizer, and
    both give the same log-probs (`response_logprobs`) on the same token ids.
(b) Through the CLI: sft -> rm -> ppo -> dpo and ppo --advantage rloo; every output loads with plain transformers
    and gives the log-probs rlhfkit computes for it.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhfkit.data.collate import pad_left, pad_right
from rlhfkit.models.loading import load_causal_lm, load_tokenizer
from rlhfkit.models.policy import response_logprobs
from tests.arch_zoo import ARCHS, PAIRING, arch_config
from tests.conftest import run_cli
from tests.tokenizers_zoo import SETUPS, conversations, save_tiny_model, write_neox_template

DEFAULT = [(arch, PAIRING[arch]) for arch in ARCHS]
PRODUCT = [pytest.param(arch, setup, marks=pytest.mark.slow) for arch in ARCHS for setup in SETUPS
           if PAIRING[arch] != setup]
CASES = DEFAULT + PRODUCT
IDS = [f"{a}-{s}" for a, s in DEFAULT] + [f"{a}-{s}" for a in ARCHS for s in SETUPS if PAIRING[a] != s]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """One saved tiny model per (architecture, setup), made on first use."""
    made = {}

    def get(arch: str, setup: str):
        if (arch, setup) not in made:
            path = tmp_path_factory.mktemp(f"{arch}-{setup}") / "model"
            made[arch, setup] = save_tiny_model(path, setup, config=arch_config(arch))
        return made[arch, setup]
    return get


def _prompts_and_responses(tokenizer) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids of a few user turns (prompts) and assistant turns (responses) of tests/tokenizers_zoo.py."""
    prompts, responses = [], []
    for conv in conversations():
        prompts.append(tokenizer(conv[-2]["content"], add_special_tokens=False)["input_ids"])
        responses.append(tokenizer(conv[-1]["content"], add_special_tokens=False)["input_ids"]
                         + [tokenizer.eos_token_id])
    return prompts, responses


def _batch(prompts, responses, pad_id: int):
    """[left-padded prompt | right-padded response] (models/policy.py's layout) and its attention mask."""
    left = pad_left(prompts, pad_id)
    right = pad_right(responses, pad_id)
    left_mask = pad_left([[1] * len(p) for p in prompts], 0)
    right_mask = pad_right([[1] * len(r) for r in responses], 0)
    return torch.cat([left, right], 1), torch.cat([left_mask, right_mask], 1), left.shape[1]


def _plain_logprobs(model, prompts, responses) -> list[list[float]]:
    """log π(y_t | x, y_<t) of each response, one unpadded sequence at a time, as plain transformers computes."""
    out = []
    for p, r in zip(prompts, responses):
        ids = torch.tensor([p + r])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(p) - 1:-1].float()
        out.append(torch.log_softmax(logits, -1).gather(-1, torch.tensor(r)[:, None])[:, 0].tolist())
    return out


def _rlhfkit_logprobs(model, prompts, responses, pad_id: int) -> list[list[float]]:
    ids, mask, width = _batch(prompts, responses, pad_id)
    with torch.no_grad():
        logprobs, _ = response_logprobs(model.eval(), ids, mask, width)
    return [logprobs[i, :len(r)].tolist() for i, r in enumerate(responses)]


def _assert_same_logprobs(rlhfkit_dir, plain_dir=None):
    """The model in `rlhfkit_dir` loaded by rlhfkit gives the log-probs plain transformers gives for it."""
    tokenizer = load_tokenizer(rlhfkit_dir)
    ours = load_causal_lm(rlhfkit_dir, tokenizer)
    plain = AutoModelForCausalLM.from_pretrained(plain_dir or rlhfkit_dir, dtype=torch.float32).eval()
    plain_tokenizer = AutoTokenizer.from_pretrained(plain_dir or rlhfkit_dir)
    prompts, responses = _prompts_and_responses(plain_tokenizer)
    assert _prompts_and_responses(tokenizer) == (prompts, responses)  # the same ids both ways
    expected = _plain_logprobs(plain, prompts, responses)
    got = _rlhfkit_logprobs(ours, prompts, responses, tokenizer.pad_token_id)
    for e, g in zip(expected, got):
        assert torch.allclose(torch.tensor(g), torch.tensor(e), atol=1e-4), (e, g)


@pytest.mark.parametrize("arch, setup", CASES, ids=IDS)
def test_every_architecture_loads_and_scores_as_plain_transformers(arch, setup, models):
    path = models(arch, setup)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.model_type == arch
    _assert_same_logprobs(path)


# ------------------------------------------------------------------------------------------ pipeline

def write_data(folder, setup: str) -> dict[str, str]:
    """Demonstrations (`messages`), conversational preferences (explicit prompt) and prompts from the zoo's
    conversations; `CONVERSATIONAL = False` writes the flat string formats instead."""
    convs = conversations() * 3
    files = {name: folder / f"{name}.jsonl" for name in ("demos", "pairs", "prompts")}
    rows = {"demos": [], "pairs": [], "prompts": []}
    for i, conv in enumerate(convs):
        prompt, answer = conv[:-1], conv[-1]["content"]
        worse = convs[(i + 1) % len(convs)][-1]["content"]
        if CONVERSATIONAL:
            rows["demos"].append({"messages": conv})
            rows["pairs"].append({"prompt": prompt, "chosen": [{"role": "assistant", "content": answer}],
                                  "rejected": [{"role": "assistant", "content": worse}]})
            rows["prompts"].append({"prompt": prompt})
        else:
            text = f"{prompt[-1]['content']} ({i})"
            rows["demos"].append({"prompt": text, "completion": answer})
            rows["pairs"].append({"prompt": text, "chosen": answer, "rejected": worse})
            rows["prompts"].append({"prompt": text})
    for name, path in files.items():
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[name]), encoding="utf-8")
    return {name: str(path) for name, path in files.items()}


CONVERSATIONAL = True

TINY = ["--epochs", "1", "--batch-size", "4", "--max-length", "64", "--eval-fraction", "0.2", "--log-every", "1"]
TINY_RL = ["--ppo-steps", "1", "--batch-size", "4", "--minibatch-size", "4", "--ppo-epochs", "1",
           "--max-new-tokens", "4", "--max-prompt-length", "32"]


def _ok(args, capsys):
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    return out


@pytest.mark.parametrize("arch, setup", CASES, ids=IDS)
def test_the_pipeline_runs_on_every_architecture_and_its_outputs_load_with_plain_transformers(
        arch, setup, models, tmp_path, capsys):
    base = models(arch, setup)
    data = write_data(tmp_path, setup)
    sft, rm, ppo, rloo, dpo = (tmp_path / name for name in ("sft", "rm", "ppo", "rloo", "dpo"))
    template = ["--chat-template", write_neox_template(tmp_path / "neox.jinja")] if setup == "neox" else []
    _ok(["sft", "--model", base, "--data", data["demos"], "--out", sft, *TINY, *template], capsys)  # saved with it
    _ok(["rm", "--model", sft, "--data", data["pairs"], "--out", rm, *TINY], capsys)
    _ok(["ppo", "--policy", sft, "--reward", rm, "--prompts", data["prompts"], "--out", ppo, *TINY_RL], capsys)
    _ok(["ppo", "--policy", sft, "--reward", rm, "--prompts", data["prompts"], "--out", rloo, *TINY_RL,
         "--advantage", "rloo", "--num-generations", "2"], capsys)
    _ok(["dpo", "--policy", sft, "--data", data["pairs"], "--out", dpo, *TINY], capsys)
    for policy in (sft, ppo, rloo, dpo):
        assert AutoModelForCausalLM.from_pretrained(policy).config.model_type == arch
        _assert_same_logprobs(policy)
    assert (rm / "config.json").exists() and AutoTokenizer.from_pretrained(rm) is not None
