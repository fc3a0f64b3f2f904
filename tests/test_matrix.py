"""The architecture matrix (issues 16 and 31): `arch_zoo.MATRIX`, the causal-LM architectures of transformers 5.24
whose tiny config builds (146 of 196, `tests/arch_survey.py`) less the 44 that do not run through it yet
(`arch_zoo.NOT_YET`, each with its reason): 102 architectures, each with a tokenizer setup of
tests/tokenizers_zoo.py (byte-level BPE). The default suite runs the ten of issue 16 and the six of issue 31 (Cohere,
Granite, Gemma3, Falcon, StableLM, OLMo2), each with one setup (`PAIRING`, every setup twice or more); the ten x the
other three setups and the other 86 architectures are marked slow.

(a) Each model loads through rlhfkit.models.loading and through plain AutoModelForCausalLM / AutoTokenizer, and
    both give the same log-probs (`response_logprobs`) on the same token ids.
(b) Through the CLI: sft -> rm -> ppo -> dpo and ppo --advantage rloo; every output loads with plain transformers
    and gives the log-probs rlhfkit computes for it. An architecture with no decoder transformer to put a scalar
    head on (an encoder-decoder's LM head: Marian, Whisper, ...) is refused by `rlhf rm` in one line, before
    training, and the rest of the pipeline runs.
(c) Cohere and Granite, whose reward models transformers has no class for: the RM serves every consumer.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

from rlhfkit.data.collate import pad_left, pad_right
from rlhfkit.errors import UserError
from rlhfkit.models.loading import load_causal_lm, load_tokenizer
from rlhfkit.models.policy import response_logprobs
from rlhfkit.models.reward_model import RewardModel
from rlhfkit.models.scalar import ScalarModel, classifier_class
from tests.arch_zoo import ADDED, ARCHS, MATRIX, PAIRING, arch_config
from tests.conftest import run_cli
from tests.tokenizers_zoo import SETUPS, conversations, save_tiny_model, write_neox_template

DEFAULT = [(arch, PAIRING[arch]) for arch in ARCHS + ADDED]
PRODUCT = [(arch, setup) for arch in ARCHS for setup in SETUPS if PAIRING[arch] != setup]
REST = [(arch, PAIRING[arch]) for arch in MATRIX if arch not in ARCHS + ADDED]
CASES = DEFAULT + [pytest.param(a, s, marks=pytest.mark.slow) for a, s in PRODUCT + REST]
IDS = [f"{a}-{s}" for a, s in DEFAULT + PRODUCT + REST]


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
    assert model.config.model_type == arch_config(arch).model_type  # (gpt-sw3's is gpt2's)
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
    if not has_scalar_layout(base):  # refused in one line before any training; nothing written
        code, _, err = run_cli(["rm", "--model", sft, "--data", data["pairs"], "--out", rm, *TINY], capsys)
        assert code == 2 and err.count("\n") == 1 and "cannot be built on" in err and not rm.exists(), err
        rm = None
    else:
        _ok(["rm", "--model", sft, "--data", data["pairs"], "--out", rm, *TINY], capsys)
        _ok(["ppo", "--policy", sft, "--reward", rm, "--prompts", data["prompts"], "--out", ppo, *TINY_RL], capsys)
        _ok(["ppo", "--policy", sft, "--reward", rm, "--prompts", data["prompts"], "--out", rloo, *TINY_RL,
             "--advantage", "rloo", "--num-generations", "2"], capsys)
    _ok(["dpo", "--policy", sft, "--data", data["pairs"], "--out", dpo, *TINY], capsys)
    for policy in (sft, dpo) if rm is None else (sft, ppo, rloo, dpo):
        assert AutoModelForCausalLM.from_pretrained(policy).config.model_type == arch_config(arch).model_type
        _assert_same_logprobs(policy)
    if rm is not None:
        assert (rm / "config.json").exists() and AutoTokenizer.from_pretrained(rm) is not None


def has_scalar_layout(path) -> bool:
    """Whether a reward model can be built on the model in `path` (models/scalar.py's `classifier_class`)."""
    try:
        classifier_class(AutoConfig.from_pretrained(path))
    except UserError:
        return False
    return True


# ----------------------------------------------------------------- (c) RMs transformers has no class for

@pytest.mark.parametrize("arch", ["cohere", "granite"])
def test_an_rm_of_an_architecture_transformers_has_no_classifier_for_serves_every_consumer(
        arch, models, micro_world, tmp_path, capsys):
    """Issue 31: `rlhf rm` trained Cohere/Granite RMs, then crashed saving them (transformers has no
    CohereForSequenceClassification). Now saved by transformers' generic classifier, read back by rlhf ppo (reward
    and value model), eval rm and eval bon; plain transformers reads the transformer with AutoModel."""
    base = models(arch, PAIRING[arch])
    data = write_data(tmp_path, PAIRING[arch])
    rm, ppo, ppo2 = tmp_path / "rm", tmp_path / "ppo", tmp_path / "ppo2"
    _ok(["rm", "--model", base, "--data", data["pairs"], "--out", rm, *TINY], capsys)
    config = json.loads((rm / "config.json").read_text())
    name = f"{type(AutoModel.from_config(AutoConfig.from_pretrained(base))).__name__[:-5]}ForSequenceClassification"
    assert config["architectures"] == [name] and list(config["id2label"]) == ["0"]
    assert "GenericForSequenceClassification" in config["rlhfkit_classifier"]

    # Plain transformers: the transformer through AutoModel, w = score.weight, r = w·h − mean at the read token.
    reward = RewardModel.load(rm, load_tokenizer(base))
    prompts, responses = _prompts_and_responses(reward.tokenizer)
    rows = [p + r for p, r in zip(prompts, responses)]
    backbone = AutoModel.from_pretrained(rm).eval()
    w = load_file(rm / "model.safetensors")["score.weight"]
    with torch.no_grad():
        plain = [float(backbone(input_ids=torch.tensor([row])).last_hidden_state[0, -1] @ w[0]) - config["mean"]
                 for row in rows]
        ours = [float(reward.model.score(torch.tensor([row]), torch.ones(1, len(row), dtype=torch.long)))
                for row in rows]
    assert max(abs(a - b) for a, b in zip(ours, plain)) < 1e-4, (ours, plain)

    assert "held-out accuracy" in _ok(["eval", "rm", "--rm", rm, "--data", data["pairs"]], capsys)
    _ok(["ppo", "--policy", base, "--reward", rm, "--prompts", data["prompts"], "--out", ppo, *TINY_RL], capsys)
    value = ScalarModel.from_pretrained(ppo / "value", role="value model")  # the value model PPO trained from it
    assert type(value.backbone).__name__ == type(backbone).__name__
    _ok(["ppo", "--policy", base, "--reward", rm, "--value-model", ppo / "value", "--prompts", data["prompts"],
         "--out", ppo2, *TINY_RL], capsys)
    # best-of-n of the toy world's policy scored by this RM through its own tokenizer (texts re-encoded)
    _ok(["eval", "bon", "--policy", micro_world / "base", "--world", micro_world, "--reward", rm, "--n", "2",
         "--limit", "2", "--missing-eos-penalty", "none", "--json-out", tmp_path / "bon.json"], capsys)
    curve = json.loads((tmp_path / "bon.json").read_text())["curve"]
    assert [row["n"] for row in curve] == [1, 2] and curve[0]["rm"] != 0.0  # the RM scored the samples


def test_an_rm_on_an_architecture_with_no_decoder_transformer_is_refused_before_training(models, tmp_path, capsys):
    """Marian's causal LM is the decoder of an encoder-decoder: no transformer of its own to put a scalar head on.
    `rlhf rm` says so in one line before training (it used to train, then fail), and writes nothing."""
    base = models("marian", "llama3")
    data = write_data(tmp_path, "llama3")
    code, _, err = run_cli(["rm", "--model", base, "--data", data["pairs"], "--out", tmp_path / "rm", *TINY], capsys)
    assert code == 2 and err.count("\n") == 1 and not (tmp_path / "rm").exists(), err
    assert "cannot be built on 'marian': its causal LM is not MarianModel (its AutoModel)" in err
