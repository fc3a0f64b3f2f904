"""RLOO (Ahmadian et al. 2024): the option of the RL trainer without a value model (`--advantage rloo`)."""

import json

import pytest
import torch

from rlhfkit.engines.core import HFEngine
from rlhfkit.losses import rloo_baseline
from rlhfkit.runtime.optim import make_optimizer
from rlhfkit.train.configs import PPOConfig
from rlhfkit.train.ppo import advantages, collect, measure, ppo_update
from rlhfkit.train.ppo_setup import load_models
from tests.conftest import run_cli
from tests.train.test_ppo import PROMPTS, _reward_dir

K = 4


def test_leave_one_out_baseline_excludes_each_samples_own_reward():
    # Two prompts, k = 4 samples each, side by side.
    rewards = torch.tensor([1.0, 2.0, 3.0, 6.0,     # prompt 1: sum 12
                            0.0, 0.0, 4.0, -4.0])   # prompt 2: sum 0
    # b_i = (sum of the group − R_i) / (k − 1):
    #   prompt 1: (12−1)/3 = 11/3, (12−2)/3 = 10/3, (12−3)/3 = 3, (12−6)/3 = 2
    #   prompt 2: (0−0)/3 = 0, 0, (0−4)/3 = −4/3, (0+4)/3 = 4/3
    expected = torch.tensor([11 / 3, 10 / 3, 3.0, 2.0, 0.0, 0.0, -4 / 3, 4 / 3])
    assert torch.allclose(rloo_baseline(rewards, K), expected)
    # A_i = R_i − b_i: prompt 1 gives 1 − 11/3 = −8/3, 2 − 10/3 = −4/3, 3 − 3 = 0, 6 − 2 = 4 (they sum to 0)
    assert torch.allclose(rewards - rloo_baseline(rewards, K),
                          torch.tensor([-8 / 3, -4 / 3, 0.0, 4.0, 0.0, 0.0, 16 / 3, -16 / 3]))
    # Changing a sample's own reward leaves its baseline alone and moves only the other k−1 of its prompt.
    moved = rewards.clone()
    moved[1] += 30.0
    delta = rloo_baseline(moved, K) - rloo_baseline(rewards, K)
    assert torch.allclose(delta, torch.tensor([10.0, 0.0, 10.0, 10.0, 0.0, 0.0, 0.0, 0.0]))


def test_baseline_is_not_the_mean_of_all_k():
    # With the group mean (own reward included) sample 4 would get A = 6 − 3 = 3, not 4: the two must differ.
    rewards = torch.tensor([1.0, 2.0, 3.0, 6.0])
    assert (rewards - rloo_baseline(rewards, K))[3].item() == pytest.approx(4.0)


@pytest.fixture
def rloo(tmp_path, tiny_gpt2):
    cfg = PPOConfig(out=str(tmp_path / "run"), policy=str(tiny_gpt2), reward=str(_reward_dir(tmp_path, tiny_gpt2)),
                    prompts="unused", batch_size=8, minibatch_size=4, ppo_epochs=2, max_new_tokens=8, lr=1e-3,
                    advantage="rloo", num_generations=K,
                    missing_eos_penalty=None)  # a random model rarely ends: use the RM
    tokenizer, policy, reference, value, reward = load_models(cfg, torch.device("cpu"))
    samples = collect(HFEngine(policy, tokenizer), tokenizer, PROMPTS[:2], cfg, torch.Generator().manual_seed(0))
    return cfg, tokenizer, policy, reference, value, reward, samples


def test_no_value_model_is_loaded_and_each_prompt_gets_k_samples(rloo):
    cfg, tokenizer, policy, reference, value, reward, samples = rloo
    assert value is None
    assert samples.prompts == [PROMPTS[0]] * K + [PROMPTS[1]] * K
    assert len(samples.texts) == cfg.batch_size


def test_every_token_of_a_response_gets_its_leave_one_out_advantage(rloo):
    cfg, tokenizer, policy, reference, value, reward, samples = rloo
    rollout = measure(samples, policy, reference, value, reward, cfg)
    rollout.logp = rollout.logp + 0.1 * rollout.mask  # a policy that moved from π_SFT: the KL term is not 0
    rewards, adv, returns = advantages(rollout, 0.05, cfg)
    assert returns is None
    # R(x, y) = r(x, y) − β·Σ_t (log π − log π_SFT), then A = R − mean of the other three of the same prompt
    sequence = rollout.terminal_reward - 0.05 * (rollout.logp - rollout.ref_logp).sum(-1)
    assert torch.allclose(rewards.sum(-1), sequence, atol=1e-6)
    groups = sequence.reshape(2, K)
    expected = (groups - (groups.sum(1, keepdim=True) - groups) / (K - 1)).reshape(-1)
    mask = rollout.mask.bool()
    for i in range(cfg.batch_size):
        assert torch.allclose(adv[i][mask[i]], expected[i].expand(int(mask[i].sum())), atol=1e-6)
        assert (adv[i][~mask[i]] == 0).all()
    assert torch.allclose(adv[:, 0].reshape(2, K).sum(1), torch.zeros(2), atol=1e-5)


def test_first_minibatch_ratio_is_one_without_a_value_term(rloo):
    cfg, tokenizer, policy, reference, value, reward, samples = rloo
    rollout = measure(samples, policy, reference, value, reward, cfg)
    assert (rollout.values == 0).all()
    _, adv, returns = advantages(rollout, cfg.kl_coef, cfg)
    optimizer = make_optimizer(policy.parameters(), cfg.lr)
    stats = ppo_update(policy, value, optimizer, rollout, adv, returns, cfg, cfg.kl_coef,
                       torch.Generator().manual_seed(0))
    assert len(stats) == cfg.ppo_epochs * cfg.batch_size // cfg.minibatch_size
    assert stats[0]["ratio_min"] == 1.0 and stats[0]["ratio_max"] == 1.0
    assert stats[0]["clipfrac"] == 0.0 and stats[0]["approx_kl"] == 0.0
    assert "value_loss" not in stats[0]
    assert stats[-1]["ratio_max"] != 1.0


def test_rloo_raises_the_logprob_of_the_better_sample(rloo):
    # Two identical prompts' groups with hand-set scores: sample 0 of each is the best, sample 1 the worst.
    cfg, tokenizer, policy, reference, value, reward, samples = rloo
    cfg.ppo_epochs, cfg.minibatch_size, cfg.kl_coef = 1, cfg.batch_size, 0.0
    rollout = measure(samples, policy, reference, value, reward, cfg)
    rollout.terminal_reward = torch.tensor([1.0, -1.0, 0.0, 0.0] * 2)
    _, adv, returns = advantages(rollout, cfg.kl_coef, cfg)
    before = rollout.logp.sum(-1)
    ppo_update(policy, value, torch.optim.SGD(policy.parameters(), lr=0.5), rollout, adv, returns, cfg, cfg.kl_coef,
               torch.Generator().manual_seed(0))
    after = measure(samples, policy, reference, value, reward, cfg).logp.sum(-1)
    change = (after - before).reshape(2, K)
    assert (change[:, 0] > change[:, 1]).all()


def test_rloo_command_runs_end_to_end_without_a_value_model(micro_world, tmp_path, capsys):
    sft = micro_world / "base"
    out = tmp_path / "rloo"
    code, stdout, err = run_cli(["ppo", "--policy", sft, "--reward", _reward_dir(tmp_path, sft), "--prompts",
                                 micro_world / "prompts/train.jsonl", "--out", out, "--ppo-steps", "3", "--batch-size",
                                 "8", "--minibatch-size", "4", "--advantage", "rloo", "--num-generations", "4",
                                 "--world", micro_world, "--save-every", "2", "--threads", "1"], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and rows[-1]["episodes"] == 24
    for key in ("rm_score", "kl", "policy_loss", "clipfrac", "approx_kl", "entropy", "gold"):
        assert key in rows[-1], key
    assert "value_loss" not in rows[-1]
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6)
    assert (out / "checkpoints" / "step-2" / "config.json").exists()
    assert (out / "config.json").exists() and not (out / "value").exists()


@pytest.mark.parametrize("flags, needle", [(["--num-generations", "3"], "num_generations"),
                                           (["--num-generations", "1"], "num_generations"),
                                           (["--advantage", "vtrace"], "advantage")])
def test_bad_rloo_settings_exit_2_before_anything_runs(tmp_path, capsys, flags, needle):
    args = ["ppo", "--policy", tmp_path, "--reward", tmp_path, "--prompts", tmp_path / "p.jsonl", "--out",
            tmp_path / "out", "--batch-size", "8", "--minibatch-size", "4"]
    if needle == "num_generations":
        flags = ["--advantage", "rloo", *flags]
    code, _, err = run_cli(args + flags, capsys)
    assert code == 2 and needle in err
    assert not (tmp_path / "out").exists()
