import json

import pytest
import torch
from transformers import AutoModel

from rlhfkit import losses as L
from rlhfkit.errors import UserError
from rlhfkit.generation import generate
from rlhfkit.models.loading import load_causal_lm, load_tokenizer
from rlhfkit.models.policy import response_logprobs
from rlhfkit.models.scalar import ScalarModel
from rlhfkit.runtime.optim import make_optimizer
from rlhfkit.train import ppo as ppo_module
from rlhfkit.train.configs import PPOConfig
from rlhfkit.train.ppo import advantages, measure, ppo_update
from rlhfkit.train.ppo_data import PtxBatches, read_ptx
from rlhfkit.train.ppo_setup import load_models
from tests.conftest import run_cli

PROMPTS = ["list three animals .", "what color is the sky ?", "say pear two times .", "compliment the baker .",
           "summarize : my name is tom . i live in paris . my dog is sick . i feel sad . tl;dr :",
           "count the words : cat dog owl .", "name the opposite of hot .", "which number follows four ?"]


def _reward_dir(tmp_path, policy_dir, name="rm"):
    out = tmp_path / name
    ScalarModel.from_backbone(policy_dir).save_pretrained(out)
    load_tokenizer(policy_dir).save_pretrained(out)
    return out


@pytest.fixture
def setup(tmp_path, tiny_gpt2):
    cfg = PPOConfig(out=str(tmp_path / "run"), policy=str(tiny_gpt2), reward=str(_reward_dir(tmp_path, tiny_gpt2)),
                    prompts="unused", batch_size=8, minibatch_size=4, ppo_epochs=2, max_new_tokens=10, lr=1e-3)
    tokenizer, policy, reference, value, reward = load_models(cfg, torch.device("cpu"))
    return cfg, tokenizer, policy, reference, value, reward


def _rollout(setup, seed=0, **overrides):
    cfg, tokenizer, policy, reference, value, reward = setup
    for key, val in overrides.items():
        setattr(cfg, key, val)
    samples = generate(policy, tokenizer, PROMPTS, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                       generator=torch.Generator().manual_seed(seed))
    return samples, measure(samples, policy, reference, value, reward, cfg)


@pytest.mark.parametrize("temperature, packing", [(1.0, False), (0.7, False), (0.7, True)])
def test_first_minibatch_ratio_is_one_and_clipfrac_zero(setup, temperature, packing):
    """Padded, the minibatch's forward pass repeats the scoring pass's numbers exactly; packed (--packing), the
    rows sit in other packed rows than when they were scored (another matmul shape): equal to float rounding."""
    cfg, tokenizer, policy, reference, value, reward = setup
    _, rollout = _rollout(setup, temperature=temperature, packing=packing)
    _, adv, returns = advantages(rollout, cfg.kl_coef, cfg)
    optimizer = make_optimizer(list(policy.parameters()) + list(value.parameters()), cfg.lr)
    stats = ppo_update(policy, value, optimizer, rollout, adv, returns, cfg, cfg.kl_coef,
                       torch.Generator().manual_seed(0))
    assert len(stats) == cfg.ppo_epochs * cfg.batch_size // cfg.minibatch_size
    exact = dict(abs=0.0, rel=0.0) if not packing else dict(abs=1e-6, rel=0.0)
    assert stats[0]["ratio_min"] == pytest.approx(1.0, **exact)
    assert stats[0]["ratio_max"] == pytest.approx(1.0, **exact)
    assert stats[0]["clipfrac"] == 0.0 and stats[0]["approx_kl"] == pytest.approx(0.0, **exact)
    assert stats[-1]["ratio_max"] != 1.0  # ... and later minibatches see the updated policy


def test_a_loss_that_is_not_finite_is_named_with_its_place_and_input(setup):
    """Before any update a non-finite loss comes from the rollout, not from the learning rate: the one line says which
    loss, which minibatch of which iteration, and which of its inputs are not finite."""
    cfg, tokenizer, policy, reference, value, reward = setup
    _, rollout = _rollout(setup)
    _, adv, returns = advantages(rollout, cfg.kl_coef, cfg)
    optimizer = make_optimizer(list(policy.parameters()) + list(value.parameters()), cfg.lr)
    with pytest.raises(UserError) as error:
        ppo_update(policy, value, optimizer, rollout, adv * float("nan"), returns, cfg, cfg.kl_coef,
                   torch.Generator())
    assert str(error.value) == ("iteration 1, epoch 1, minibatch 1: the policy loss is not finite (nan); not finite "
                                "among its inputs: the advantages; stopping (before any update: the data or the "
                                "model give it, not the training)")
    returns[0, 0] = float("inf")  # a later iteration, and the value loss of the minibatch that holds row 0
    with pytest.raises(UserError, match=r"^iteration 3, epoch \d, minibatch \d: the value loss is not finite "
                                        r"\(inf\); not finite among its inputs: the returns; stopping \(lower the "
                                        r"learning rate"):
        ppo_update(policy, value, optimizer, rollout, adv, returns, cfg, cfg.kl_coef, torch.Generator(),
                   iteration=3)


def test_logged_approx_kl_estimates_the_exact_kl_after_a_real_update_step(setup):
    # One full-batch step moves π_old to π; the next update's first minibatch logs approx-KL of π against the
    # rollout's π_old. The exact value: the mean over response tokens of Σ_v π_old(v)·log(π_old(v)/π(v)).
    # k2 = ½(log π − log π_old)² (TRL's estimator) lands near it; the former k3 with ρ = π_old/π estimated χ² − KL.
    # Measured here: exact 0.395, k2 0.446, former k3 0.668.
    cfg, tokenizer, policy, reference, value, reward = setup
    cfg.batch_size = cfg.minibatch_size = 4 * len(PROMPTS)
    cfg.ppo_epochs, cfg.lr, cfg.max_new_tokens = 1, 0.15, 16
    samples = generate(policy, tokenizer, PROMPTS * 4, max_new_tokens=16, generator=torch.Generator().manual_seed(0))
    rollout = measure(samples, policy, reference, value, reward, cfg)
    s, width, mask = rollout.samples, rollout.prompt_width, rollout.mask
    _, adv, returns = advantages(rollout, cfg.kl_coef, cfg)
    with torch.no_grad():
        _, old_logits = response_logprobs(policy, s.input_ids, s.attention_mask, width, cfg.temperature)
    optimizer = make_optimizer(list(policy.parameters()) + list(value.parameters()), cfg.lr)
    ppo_update(policy, value, optimizer, rollout, adv, returns, cfg, cfg.kl_coef,
               torch.Generator().manual_seed(0))  # 1 step
    with torch.no_grad():
        logp, new_logits = response_logprobs(policy, s.input_ids, s.attention_mask, width, cfg.temperature)
        old, new = torch.log_softmax(old_logits.float(), -1), torch.log_softmax(new_logits.float(), -1)
        exact = L.masked_mean((old.exp() * (old - new)).sum(-1), mask).item()
        former_k3 = L.masked_mean(L.kl_k3(logp, rollout.logp), mask).item()
    logged = ppo_update(policy, value, optimizer, rollout, adv, returns, cfg, cfg.kl_coef,
                        torch.Generator().manual_seed(0))[0]["approx_kl"]
    assert exact > 0.05  # a real step, not a rounding error
    assert logged == pytest.approx(L.masked_mean(L.kl_k2(logp, rollout.logp), mask).item(), rel=1e-5)
    assert logged == pytest.approx(exact, rel=0.25)
    assert abs(former_k3 - exact) > 2 * abs(logged - exact)


def test_reference_starts_equal_to_policy_so_first_kl_is_zero(setup):
    _, rollout = _rollout(setup)
    assert torch.equal(rollout.logp, rollout.ref_logp)


def test_reward_is_read_at_the_last_real_token_and_missing_eos_is_penalized(setup):
    cfg, tokenizer, policy, reference, value, reward = setup
    samples, rollout = _rollout(setup, missing_eos_penalty=-7.0, max_new_tokens=4)
    assert not samples.finished.all()  # 4 tokens: a random tiny model rarely ends that soon
    for i in range(len(PROMPTS)):
        keep_prompt = samples.prompt_mask[i].bool()
        keep_resp = samples.response_mask[i].bool()
        ids = torch.cat([samples.prompt_ids[i][keep_prompt], samples.response_ids[i][keep_resp]])[None]
        alone = reward.model.score(ids, torch.ones_like(ids)).item()  # the same sequence, without any padding
        assert rollout.rm_score[i].item() == pytest.approx(alone, abs=1e-5)
        expected = alone if samples.finished[i] else -7.0
        assert rollout.terminal_reward[i].item() == pytest.approx(expected, abs=1e-5)


def test_penalty_can_be_turned_off(setup):
    _, rollout = _rollout(setup, missing_eos_penalty=None, max_new_tokens=3)
    assert torch.equal(rollout.terminal_reward, rollout.rm_score)


def test_rollout_is_masked_after_the_first_eos(setup):
    cfg, tokenizer, *_ = setup
    samples, rollout = _rollout(setup, max_new_tokens=10)
    eos = tokenizer.eos_token_id
    for ids, mask, done in zip(samples.response_ids.tolist(), samples.response_mask.tolist(), samples.finished):
        n = sum(mask)
        assert eos not in ids[:n - 1]
        assert (ids[n - 1] == eos) == bool(done)
    assert (rollout.logp * (1 - rollout.mask) == 0).all() and (rollout.values * (1 - rollout.mask) == 0).all()


def _grads(setup, ptx):
    cfg, tokenizer, policy, reference, value, reward = setup
    _, rollout = _rollout(setup)
    _, adv, returns = advantages(rollout, cfg.kl_coef, cfg)
    cfg.ppo_epochs, cfg.minibatch_size, cfg.lr, cfg.ptx_coef = 1, cfg.batch_size, 0.0, 1.0
    optimizer = make_optimizer(list(policy.parameters()) + list(value.parameters()), cfg.lr)
    grads = {}
    hook = policy.get_output_embeddings().weight.register_hook(lambda g: grads.setdefault("g", g.clone()))
    ppo_update(policy, value, optimizer, rollout, adv, returns, cfg, cfg.kl_coef, torch.Generator().manual_seed(0),
               ptx)
    hook.remove()
    return grads["g"]


def test_ptx_term_changes_the_policy_gradient(setup, tmp_path):
    ptx_file = tmp_path / "ptx.jsonl"
    ptx_file.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["the sky is blue .", "a cat is an animal ."]))
    ptx = PtxBatches(read_ptx(str(ptx_file)), setup[1], 4, torch.Generator().manual_seed(0))
    without, with_ptx = _grads(setup, None), _grads(setup, ptx)
    assert not torch.allclose(without, with_ptx)


def test_ppo_command_runs_logs_every_metric_and_tracks_gold(micro_world, tmp_path, capsys, monkeypatch):
    sft = micro_world / "base"
    rm = _reward_dir(tmp_path, sft)
    out = tmp_path / "ppo"
    betas, iteration = [], ppo_module.ppo_iteration

    def watched(models, prompts, cfg, kl_coef, *args, **kwargs):  # the loop's one iteration, β as it passes it
        betas.append(kl_coef)
        return iteration(models, prompts, cfg, kl_coef, *args, **kwargs)

    monkeypatch.setattr(ppo_module, "ppo_iteration", watched)
    code, stdout, err = run_cli(["ppo", "--policy", sft, "--reward", rm,
                                 "--prompts", micro_world / "prompts/train.jsonl", "--out", out, "--ppo-steps", "3",
                                 "--batch-size", "8", "--minibatch-size", "4",
                                 "--world", micro_world, "--save-every", "2", "--adaptive-kl-target", "1.0"], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for key in ("rm_score", "kl", "kl_k3", "policy_loss", "value_loss", "approx_kl", "clipfrac", "entropy",
                "response_length", "eos_rate", "gold", "kl_coef", "generation_s", "scoring_s", "update_s"):
        assert key in rows[-1], key
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # policy == reference at the first rollout
    assert betas == pytest.approx([r["kl_coef"] for r in rows], abs=1e-6)  # the adaptive controller's β (logged: 6
    assert betas[0] == 0.05 != betas[-1]                                     # decimals), step by step
    assert (out / "checkpoints" / "step-2" / "config.json").exists()
    assert load_causal_lm(out, load_tokenizer(out)) is not None
    assert ScalarModel.from_pretrained(out / "value") is not None


def test_tiny_llama_policy_runs_through_the_same_loop(tiny_llama, micro_world, tmp_path, capsys):
    rm = _reward_dir(tmp_path, tiny_llama)
    code, _, err = run_cli(["ppo", "--policy", tiny_llama, "--reward", rm, "--prompts",
                            micro_world / "prompts/train.jsonl", "--out", tmp_path / "ppo", "--ppo-steps", "2",
                            "--batch-size", "4", "--minibatch-size", "2", "--max-new-tokens", "6"], capsys)
    assert code == 0, err


def test_value_model_starts_as_a_separate_copy_of_the_reward_model(setup):
    cfg, tokenizer, policy, reference, value, reward = setup
    assert value is not reward.model
    assert all(torch.equal(a, b) for a, b in zip(value.state_dict().values(), reward.model.state_dict().values()))
    assert all(not p.requires_grad for p in reward.model.parameters())
    assert all(p.requires_grad for p in value.parameters())


def test_value_model_can_start_from_a_causal_lm_under_a_fresh_head_drawn_from_the_seed(tmp_path, tiny_gpt2):
    """--value-model = the SFT policy (as TRL and OpenRLHF start the critic): its transformer, and the head `rlhf rm`
    would draw from the run's seed; a reward model directory is still taken whole."""
    cfg = PPOConfig(out=str(tmp_path / "run"), policy=str(tiny_gpt2), value_model=str(tiny_gpt2),
                    reward_fn=[_length_fn(tmp_path)],
                    prompts="unused", seed=3)
    tokenizer, policy, _, value, reward = load_models(cfg, torch.device("cpu"))
    assert reward is None  # reward functions alone: the value model is not a reward model's copy
    body = policy.transformer.state_dict()
    assert all(torch.equal(v, body[k]) for k, v in value.backbone.state_dict().items())
    fresh = ScalarModel.from_backbone(tiny_gpt2, tokenizer, seed=3)
    assert torch.equal(value.head.weight, fresh.head.weight) and not value.head.bias.any()
    assert not torch.equal(value.head.weight, ScalarModel.from_backbone(tiny_gpt2, tokenizer, seed=4).head.weight)
    assert all(p.requires_grad for p in value.parameters())


def _length_fn(tmp_path) -> str:
    (tmp_path / "rf.py").write_text("def length(completions, **kw):\n"
                                    "    return [float(len(c.split())) for c in completions]\n")
    return f"{tmp_path}/rf.py:length"


def test_ppo_command_trains_a_value_model_started_from_the_sft_policy(micro_world, tmp_path, capsys):
    """No reward model at all (a reward function, as bench/tool_world.py): the critic starts from the SFT policy."""
    sft, out = micro_world / "base", tmp_path / "ppo"
    code, _, err = run_cli(["ppo", "--policy", sft, "--value-model", sft, "--reward-fn", _length_fn(tmp_path),
                            "--prompts", micro_world / "prompts/train.jsonl", "--out", out, "--ppo-steps", "2",
                            "--batch-size", "4", "--minibatch-size", "2", "--max-new-tokens", "6", "--threads", "1"],
                           capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all("value_loss" in r for r in rows)
    assert ScalarModel.from_pretrained(out / "value", role="value model") is not None


def test_a_value_model_that_is_neither_a_reward_model_nor_a_causal_lm_is_refused(micro_world, tmp_path, capsys):
    bare = tmp_path / "bare"  # a transformer without a head: GPT2Model
    AutoModel.from_pretrained(micro_world / "base").save_pretrained(bare)
    load_tokenizer(micro_world / "base").save_pretrained(bare)
    out = tmp_path / "ppo"
    code, _, err = run_cli(["ppo", "--policy", micro_world / "base", "--value-model", bare,
                            "--reward-fn", _length_fn(tmp_path), "--prompts", micro_world / "prompts/train.jsonl",
                            "--out", out, "--ppo-steps", "1"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "neither a reward model nor a causal LM (a GPT2Model)" in err
    assert not out.exists()
