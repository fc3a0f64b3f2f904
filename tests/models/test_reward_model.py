"""Reward models in the standard format, anyone's reward model, and a reward model with its own tokenizer (issue 17).

Tiny random Llama/GPT-2 models with the byte-level BPE tokenizers of tests/tokenizers_zoo.py. The cross-check
with TRL's RewardTrainer itself is `bench/peer_rm_check.py` (slow: test_peer_rm_check below).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    CohereConfig,
    LlamaConfig,
    LlamaForSequenceClassification,
    MarianConfig,
)
from transformers.modeling_layers import GenericForSequenceClassification
from transformers.models.cohere.modeling_cohere import CoherePreTrainedModel

from rlhfkit.errors import UserError
from rlhfkit.generation import Samples, generate
from rlhfkit.models import packing as pk
from rlhfkit.models.loading import load_causal_lm, load_tokenizer
from rlhfkit.models.lora import save_scalar_model
from rlhfkit.models.reward_model import RewardModel, same_tokenizer
from rlhfkit.models.scalar import ScalarModel, classifier_class, response_sequences, score_sequences
from tests.arch_zoo import arch_config
from tests.conftest import run_cli
from tests.tokenizers_zoo import build_tokenizer, model_config, save_tiny_model
from tests.train.test_packing import _counting_packs, _packs_inside
from tests.train.test_ppo import _reward_dir

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ["the cat reads", "a dog likes the book today.", "Zoë sees", "the robot counts 42 numbers"]
COMPLETIONS = [" three apples.", " ok", " the answer!", " a long story (again)."]


def _our_rm(tmp_path: Path, setup: str, arch: str = "gpt2", bias: float = 0.3) -> tuple[Path, Path]:
    """(policy dir, RM dir): an RM as `rlhf rm` saves one, its bias shifted by −`bias`."""
    policy = save_tiny_model(tmp_path / f"{setup}-{arch}-policy", setup, arch)
    tokenizer = load_tokenizer(policy)
    model = ScalarModel.from_backbone(policy, tokenizer, seed=1)
    model.shift_bias(bias)
    save_scalar_model(tmp_path / f"{setup}-{arch}-rm", model, tokenizer)
    return policy, tmp_path / f"{setup}-{arch}-rm"


def _transformers_scores(path: Path, rows: list[list[int]], side: str) -> list[float]:
    """What plain transformers gives: the saved tokenizer pads the rows (`side`), the model's logit. Left-padded
    rows get position ids from the mask (GPT-2's absolute positions would otherwise shift)."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = side
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    batch = tokenizer.pad({"input_ids": rows}, return_tensors="pt")
    positions = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        return model(**batch, position_ids=positions).logits[:, 0].tolist()


@pytest.mark.parametrize("setup, arch", [("llama3", "llama"), ("chatml", "gpt2"), ("mistral", "llama"),
                                         ("neox", "gpt2")])
def test_saved_rm_scores_the_same_in_plain_transformers(setup, arch, tmp_path):
    policy, path = _our_rm(tmp_path, setup, arch)
    config = json.loads((path / "config.json").read_text())
    assert config["architectures"][0].endswith("ForSequenceClassification")
    assert list(config["id2label"]) == ["0"]  # num_labels = 1
    assert config["pad_token_id"] is not None and config["pad_token_id"] != config["eos_token_id"]
    assert config["normalize_reward"] is True and config["mean"] == pytest.approx(0.3)  # r = logit − 0.3
    assert "rlhfkit_read_at" in config
    assert AutoTokenizer.from_pretrained(path).pad_token_id == config["pad_token_id"]
    reward = RewardModel.load(path, load_tokenizer(policy))
    assert reward.same  # the saved pad differs from the policy's; the encoding does not
    ours = reward.score_texts(PROMPTS, COMPLETIONS).tolist()
    rows = response_sequences(reward.tokenizer, PROMPTS, COMPLETIONS)
    assert rows[0][-1] == reward.tokenizer.eos_token_id  # a finished response ends with EOS: read there
    for side in ("right", "left"):
        plain = _transformers_scores(path, rows, side)
        assert max(abs(a - (b - config["mean"])) for a, b in zip(ours, plain)) < 1e-5


def test_someone_elses_rm_with_pad_equal_to_eos_is_read_as_transformers_reads_it(tmp_path):
    # TRL sets pad = EOS when a tokenizer has none (Llama-3): transformers then reads the token before the final
    # EOS; rlhfkit reads the same token, so the scores match the model's own.
    tokenizer = build_tokenizer("llama3")
    tokenizer.pad_token = tokenizer.eos_token
    config = model_config("llama", tokenizer, "llama3")
    config.num_labels, config.pad_token_id = 1, tokenizer.eos_token_id
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    reward = RewardModel.load(tmp_path / "rm", load_tokenizer(tmp_path / "rm"))
    rows = response_sequences(reward.tokenizer, PROMPTS, COMPLETIONS)
    ours = score_sequences(reward.model, rows, reward.tokenizer.pad_token_id)
    plain = _transformers_scores(tmp_path / "rm", rows, "right")
    assert max(abs(a - b) for a, b in zip(ours, plain)) < 1e-5


def test_old_layout_still_loads_and_convert_rm_keeps_its_scores(tmp_path, capsys):
    policy = save_tiny_model(tmp_path / "policy", "chatml", "gpt2")
    tokenizer = load_tokenizer(policy)
    old = tmp_path / "old"  # rlhfkit's layout before issue 17: backbone + scalar_head.safetensors
    AutoModel.from_pretrained(policy).save_pretrained(old)
    tokenizer.save_pretrained(old)
    torch.manual_seed(3)
    save_file({"weight": torch.randn(1, 32), "bias": torch.tensor([0.7])}, old / "scalar_head.safetensors")
    before = RewardModel.load(old, tokenizer).score_texts(PROMPTS, COMPLETIONS)
    code, out, err = run_cli(["data", "convert-rm", old, tmp_path / "new"], capsys)
    assert code == 0, err
    assert "num_labels=1" in out and not (tmp_path / "new" / "scalar_head.safetensors").exists()
    after = RewardModel.load(tmp_path / "new", tokenizer).score_texts(PROMPTS, COMPLETIONS)
    assert torch.allclose(before, after, atol=1e-6)
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "new").config.num_labels == 1
    code, _, err = run_cli(["data", "convert-rm", tmp_path / "new", tmp_path / "again"], capsys)
    assert code == 2 and err.count("\n") == 1 and "needs no conversion" in err


def test_tokenizers_are_compared_by_content_not_size():
    a = build_tokenizer("chatml")
    b = copy.deepcopy(a)
    b.pad_token = "<|im_start|>"
    assert same_tokenizer(a, b)  # the pad token never reaches the model
    c = copy.deepcopy(a)
    c.eos_token = "<|endoftext|>"  # same vocabulary and size, another EOS id
    assert len(c) == len(a) and not same_tokenizer(a, c)
    d = copy.deepcopy(a)
    d.chat_template = "{{ messages[0]['content'] }}"
    assert not same_tokenizer(a, d)
    assert not same_tokenizer(a, build_tokenizer("llama3"))


def test_rm_with_its_own_tokenizer_scores_decoded_responses_reencoded(tmp_path, tiny_gpt2):
    # The policy speaks the toy world's word-level tokenizer; the RM a ChatML byte-level BPE.
    _, path = _our_rm(tmp_path, "chatml", "gpt2")
    policy_tokenizer = load_tokenizer(tiny_gpt2)
    reward = RewardModel.load(path, policy_tokenizer)
    assert not reward.same
    policy = load_causal_lm(tiny_gpt2, policy_tokenizer).eval()
    from_policy = generate(policy, policy_tokenizer, ["list three animals ."] * 4,
                           max_new_tokens=6, generator=torch.Generator().manual_seed(0))
    scores = reward.score_samples(from_policy)
    finished = from_policy.finished.tolist()
    assert torch.equal(scores, reward.score_texts(from_policy.prompts, from_policy.texts, finished))
    rows = response_sequences(reward.tokenizer, from_policy.prompts, from_policy.texts, finished)
    assert all(max(r) < len(reward.tokenizer) for r in rows)
    plain = _transformers_scores(path, rows, "right")
    mean = json.loads((path / "config.json").read_text())["mean"]
    assert max(abs(a - (b - mean)) for a, b in zip(scores.tolist(), plain)) < 1e-5


@pytest.fixture
def dirs(tmp_path):
    """A policy, our RM, a two-label classifier, prompts and rankings."""
    policy, rm = _our_rm(tmp_path, "chatml", "gpt2")
    tokenizer = build_tokenizer("chatml")
    config = model_config("gpt2", tokenizer, "chatml")
    config.num_labels = 2
    AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path / "two")
    tokenizer.save_pretrained(tmp_path / "two")
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    ranking = {"id": "r0", "labeler": "t", "prompt": PROMPTS[0], "completions": COMPLETIONS[:2],
               "ranking": [[0], [1]]}
    (tmp_path / "rankings.jsonl").write_text(json.dumps(ranking) + "\n")
    (tmp_path / "demos.jsonl").write_text(json.dumps({"prompt": PROMPTS[0], "completion": COMPLETIONS[0]}) + "\n")
    return {"demos": tmp_path / "demos.jsonl", "policy": policy, "rm": rm, "two": tmp_path / "two",
            "prompts": tmp_path / "prompts.jsonl", "rankings": tmp_path / "rankings.jsonl"}


@pytest.mark.parametrize("args, message", [
    (["ppo", "--policy", "{rm}", "--reward", "{rm}", "--prompts", "{prompts}"], "not a causal LM; a policy"),
    (["ppo", "--policy", "{policy}", "--reference", "{rm}", "--reward", "{rm}", "--prompts", "{prompts}"],
     "not a causal LM; a reference"),
    (["ppo", "--policy", "{policy}", "--reward", "{policy}", "--prompts", "{prompts}"],
     "is a causal LM (GPT2LMHeadModel), not a reward model"),
    (["ppo", "--policy", "{policy}", "--reward", "{two}", "--prompts", "{prompts}"], "2 labels); a reward model"),
    (["ppo", "--policy", "{policy}", "--reward", "{rm}", "--value-model", "{two}", "--prompts", "{prompts}"],
     "2 labels); a value model"),
    (["rm", "--model", "{rm}", "--data", "{rankings}"], "`rlhf rm --model`: the SFT policy"),
    (["dpo", "--policy", "{rm}", "--data", "{rankings}", "--eval-data", "{rankings}"], "not a causal LM"),
    (["sft", "--model", "{rm}", "--data", "{demos}"], "not a causal LM"),
    (["eval", "rm", "--rm", "{policy}", "--data", "{rankings}"], "not a reward model"),
])
def test_a_model_of_the_wrong_kind_is_refused_in_one_line(dirs, args, message, tmp_path, capsys):
    out = tmp_path / "run"
    argv = [a.format(**dirs) for a in args] + ([] if args[0] == "eval" else ["--out", out])
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert message in err
    assert not out.exists()


@pytest.mark.slow
def test_peer_rm_check(tmp_path):
    """TRL 1.16's RewardTrainer and rlhfkit exchange reward models with the same scores (bench/peer_rm_check.py;
    needs .venv-peer-latest, built by `make bench`)."""
    if not (ROOT / ".venv-peer-latest" / "bin" / "python").exists():
        pytest.skip(".venv-peer-latest is not built (make bench)")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "peer_rm_check.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(done.stdout[done.stdout.index("{\n"):])
    for setup in summary["setups"]:
        assert setup["trl_rm_in_rlhfkit_max_abs_diff"] <= 1e-5 and setup["our_rm_in_trl_max_abs_diff"] <= 1e-5


def test_ppo_runs_on_an_rm_with_another_tokenizer_and_refuses_it_as_value_model(tmp_path, tiny_gpt2, capsys):
    _, rm = _our_rm(tmp_path, "chatml", "gpt2")  # the policy: the toy world's word-level tokenizer
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["list three animals .", "say pear ."]))
    common = ["ppo", "--policy", tiny_gpt2, "--reward", rm, "--prompts", prompts, "--ppo-steps", "1",
              "--batch-size", "4", "--minibatch-size", "2", "--max-new-tokens", "6", "--threads", "1"]
    code, _, err = run_cli([*common, "--advantage", "rloo", "--num-generations", "2", "--out", tmp_path / "rloo"],
                           capsys)
    assert code == 0, err
    assert "rm_score" in json.loads((tmp_path / "rloo" / "metrics.jsonl").read_text().splitlines()[0])
    code, _, err = run_cli([*common, "--out", tmp_path / "gae"], capsys)  # GAE: the value model defaults to the RM
    assert code == 2 and err.count("\n") == 1 and "value model reads the policy's tokens" in err
    assert not (tmp_path / "gae").exists()


def test_each_architecture_is_saved_as_a_last_token_score_classifier_or_refused():
    """Issue 31: transformers' own classifier where it is a last-token `score` (Llama); the generic one where
    transformers has none (Cohere) or its own reads another token (BERT: its first); an encoder-decoder's LM head
    (Marian) refused in one line."""
    tiny = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    assert classifier_class(LlamaConfig(**tiny)) is LlamaForSequenceClassification
    cohere = classifier_class(CohereConfig(**tiny))
    assert cohere.__name__ == "CohereForSequenceClassification"
    assert issubclass(cohere, GenericForSequenceClassification) and issubclass(cohere, CoherePreTrainedModel)
    bert = classifier_class(BertConfig(**tiny, is_decoder=True))
    assert bert.__name__ == "BertForLastTokenClassification" and issubclass(bert, GenericForSequenceClassification)
    with pytest.raises(UserError, match="cannot be built on 'marian': its causal LM is not MarianModel"):
        classifier_class(MarianConfig(vocab_size=64, d_model=16, decoder_layers=1, encoder_layers=1))


def test_a_bert_rm_is_saved_beside_transformers_own_class_and_loads_back(tmp_path):
    """A BERT-family LM head used as a decoder: its RM is `BertForLastTokenClassification` (transformers' own
    BertForSequenceClassification would read the pooled first token), and it loads back with the same scores."""
    config = BertConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2, is_decoder=True, max_position_embeddings=32)
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(tmp_path / "lm")
    backbone = AutoModel.from_pretrained(tmp_path / "lm")
    model = ScalarModel(backbone, torch.nn.Linear(16, 1), pad_token_id=0)
    save_scalar_model(tmp_path / "rm", model)
    saved = json.loads((tmp_path / "rm" / "config.json").read_text())
    assert saved["architectures"] == ["BertForLastTokenClassification"] and "rlhfkit_classifier" in saved
    again = ScalarModel.from_pretrained(tmp_path / "rm")
    ids = torch.tensor([[5, 6, 7, 8]])
    assert torch.allclose(model.score(ids, torch.ones_like(ids)), again.score(ids, torch.ones_like(ids)), atol=1e-6)


# --------------------------------------------------------------------------- scoring rollouts packed (--packing)

def _rm_on(tmp_path: Path, arch: str) -> tuple[Path, Path]:
    """(policy dir, RM dir): a tiny `arch` policy (tests/arch_zoo.py) with the ChatML tokenizer, and an RM on its
    transformer as `rlhf rm` saves one."""
    policy = save_tiny_model(tmp_path / f"{arch}-policy", "chatml", config=arch_config(arch))
    tokenizer = load_tokenizer(policy)
    model = ScalarModel.from_backbone(policy, tokenizer, seed=1)
    model.shift_bias(0.3)
    save_scalar_model(tmp_path / f"{arch}-rm", model, tokenizer)
    return policy, tmp_path / f"{arch}-rm"


PROMPT_LENGTHS, RESPONSE_LENGTHS = (1, 6, 3, 5, 2, 4), (7, 1, 4, 2, 6, 3)
FINISHED = (True, False, True, False, True, True)


def _rollout_of(tokenizer, seed: int = 0) -> Samples:
    """Samples as PPO's rollouts hold them: prompts of 1–6 tokens left-padded, responses of 1–7 right-padded, the
    finished ones ending with EOS, two cut before it; the padding is EOS (as a tokenizer with pad = EOS pads)."""
    g = torch.Generator().manual_seed(seed)
    eos, specials = tokenizer.eos_token_id, set(tokenizer.all_special_ids)
    ordinary = torch.tensor([i for i in range(len(tokenizer)) if i not in specials])
    width, length = max(PROMPT_LENGTHS), max(RESPONSE_LENGTHS)
    prompt_ids, response_ids = torch.full((6, width), eos), torch.full((6, length), eos)
    prompt_mask, response_mask = torch.zeros(6, width, dtype=torch.long), torch.zeros(6, length, dtype=torch.long)
    prompts, texts = [], []
    for i, (p, r, done) in enumerate(zip(PROMPT_LENGTHS, RESPONSE_LENGTHS, FINISHED)):
        prompt = ordinary[torch.randint(len(ordinary), (p,), generator=g)]
        response = ordinary[torch.randint(len(ordinary), (r,), generator=g)]
        if done:
            response[-1] = eos
        prompt_ids[i, width - p:], prompt_mask[i, width - p:] = prompt, 1
        response_ids[i, :r], response_mask[i, :r] = response, 1
        prompts.append(tokenizer.decode(prompt))
        texts.append(tokenizer.decode(response[:-1] if done else response))
    return Samples(prompt_ids, prompt_mask, response_ids, response_mask, torch.tensor(FINISHED), texts, prompts)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
def test_rm_scores_rollouts_packed_as_padded(arch, tmp_path, monkeypatch):
    """`RewardModel(packing=True).score_samples` of a rollout (uneven left-padded prompts and right-padded responses,
    two unfinished) = the padded scores (rel 1e-5), through one `pk.pack` of the batch's 6 rows; without packing
    none. Three readers: our RM (read at a finished response's EOS); someone else's RM with pad = EOS (read at the
    token before it: the packed row reads that token too, and it is another token than ours for exactly the
    finished rows); an RM with its own tokenizer (responses decoded and re-encoded, `score_texts`). Before the fix
    RewardModel took no packing and scored padded whatever the run said."""
    policy, path = _rm_on(tmp_path, arch)
    tokenizer, other = load_tokenizer(policy), build_tokenizer("llama3")
    readers = {}
    for packing in (False, True):
        ours = RewardModel.load(path, tokenizer, packing=packing)
        eos_pad = RewardModel(ScalarModel(ours.model.backbone, ours.model.head, tokenizer.eos_token_id),
                              ours.tokenizer, True, packing=packing)
        readers[packing] = {"ours": ours, "pad = EOS": eos_pad,
                            "own tokenizer": RewardModel.load(path, other, packing=packing)}
    assert readers[True]["ours"].same and not readers[True]["own tokenizer"].same
    rollouts = {"ours": _rollout_of(tokenizer), "pad = EOS": _rollout_of(tokenizer),
                "own tokenizer": _rollout_of(other)}
    assert pk.supports_packing(readers[True]["ours"].model)  # the probe's own packed call, before the count
    calls = _counting_packs(monkeypatch)
    scores = {}
    for packing in (False, True):
        for name, rm in readers[packing].items():
            before = len(calls)
            scores[packing, name] = rm.score_samples(rollouts[name])
            assert calls[before:] == ([6] if packing else []), (packing, name)
    for name in readers[False]:
        torch.testing.assert_close(scores[True, name], scores[False, name], rtol=1e-5, atol=1e-6, msg=name)
    moved = scores[False, "pad = EOS"] != scores[False, "ours"]
    assert moved.tolist() == list(FINISHED)


@pytest.mark.parametrize("kind", ["rloo", "lora-gae"])
def test_ppo_scores_its_rollouts_packed_under_packing(kind, micro_world, tmp_path, capsys, monkeypatch):
    """`rlhf ppo --packing` (the default) scores the rollouts by the reward model packed — the RM loaded from
    --reward (RLOO), or the value model's transformer with its adapters off (LoRA with GAE) — and so does a reward
    model named as a judge: `pk.pack` is called inside `RewardModel.score_samples` / `score_texts`; with
    --no-packing it is not. The logged RM scores agree to float rounding. Before the fix the RM ran padded."""
    calls = _counting_packs(monkeypatch)
    inside = _packs_inside(monkeypatch, calls, RewardModel, ("score_samples", "score_texts"))
    base = micro_world / "base"
    rm, judge = _reward_dir(tmp_path, base), _reward_dir(tmp_path, base, "judge")
    args = ["ppo", "--policy", base, "--reward", rm, "--judge", judge, "--prompts", micro_world / "prompts/train.jsonl",
            "--ppo-steps", "1", "--batch-size", "6", "--minibatch-size", "6", "--ppo-epochs", "1",
            "--max-new-tokens", "8", "--threads", "1"]
    args += ["--advantage", "rloo", "--num-generations", "2"] if kind == "rloo" else ["--lora-r", "4"]
    figures = {}
    for packing in ("--no-packing", "--packing"):
        inside.clear()
        code, _, err = run_cli([*args, packing, "--out", tmp_path / packing], capsys)
        assert code == 0, err
        assert sorted(inside) == ["score_samples", "score_texts"], inside
        for name, counts in inside.items():
            assert all(n > 0 for n in counts) if packing == "--packing" else not any(counts), (packing, name, counts)
        figures[packing] = json.loads((tmp_path / packing / "metrics.jsonl").read_text().splitlines()[0])
    for key in ("rm_score", "judge_rm"):
        assert figures["--packing"][key] == pytest.approx(figures["--no-packing"][key], rel=1e-4, abs=1e-5), key
