"""GRPO in `rlhf ppo` (--advantage grpo): group-normalized advantages, the KL as a loss term or a reward, the loss
aggregations; reward functions and judges through the command line."""

import json
import math
import os
import subprocess
from pathlib import Path

import pytest
import torch

from rlhfkit import losses as L
from rlhfkit.generation import generate
from rlhfkit.train.configs import PPOConfig
from rlhfkit.train.ppo import advantages, measure, surrogate_loss
from rlhfkit.train.ppo_setup import load_models
from tests.conftest import run_cli
from tests.train.test_ppo import _reward_dir

ROOT = Path(__file__).resolve().parents[2]
PEER_LATEST = ROOT / ".venv-peer-latest" / "bin" / "python"  # TRL 1.16 (bench/run_all.py ensure_peer_env)
STEPS_BEFORE_ROW_17 = 3
PROMPTS = ["list three animals .", "count the words : cat dog owl ."]

REWARD_FUNCTIONS = '''
def picky(prompts, completions, n, **kw):
    if 17 in n:
        raise ValueError("row 17 is bad")
    return [float(len(c.split()) == 3) for c in completions]
'''


def test_surrogate_with_the_kl_as_a_loss_term_hand_computed():
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -0.5]])
    ref = logp - math.log(2)  # k3 = (π_ref/π − 1) − log(π_ref/π) = (0.5 − 1) + ln 2 = 0.193147 on every token
    adv, mask = torch.tensor([[0.5], [-1.0]]).expand(2, 3), torch.tensor([[1, 1, 0], [1, 0, 0]])
    cfg = PPOConfig(advantage="grpo", kl_coef=0.1, max_new_tokens=3)  # π_θ = π_old: ratio 1, no clipping
    # row 1 tokens: −0.5 + 0.1·0.193147 = −0.480685; row 2: 1.0 + 0.0193147 = 1.019315
    assert surrogate_loss(logp, logp, ref, adv, mask, cfg, 0.1).item() == pytest.approx(
        (-0.480685 + 1.019315) / 2, abs=1e-6)  # loss_type grpo: per response, then the mean over responses
    cfg.loss_type = "bnpo"
    assert surrogate_loss(logp, logp, ref, adv, mask, cfg, 0.1).item() == pytest.approx(
        (2 * -0.480685 + 1.019315) / 3, abs=1e-6)
    cfg.loss_type = "dr_grpo"
    assert surrogate_loss(logp, logp, ref, adv, mask, cfg, 0.1).item() == pytest.approx(
        (2 * -0.480685 + 1.019315) / (2 * 3), abs=1e-6)
    cfg.kl_in = "reward"  # the KL is then a per-token reward, not in the loss: −0.5, −0.5 | 1.0
    assert surrogate_loss(logp, logp, ref, adv, mask, cfg, 0.1).item() == pytest.approx(0.0 / 6, abs=1e-6)


@pytest.mark.parametrize("beta", [0.1, 0.0])
def test_kl_loss_term_is_finite_when_the_padding_log_probs_are_far_below_minus_88(beta):
    """The rollout stores log π_ref masked (0 on padding); the update's fresh log π is not: at temperature 0.1 the
    padding after EOS gets log π ≈ −200, and exp(0 + 200) overflows. The loss, and its gradient, are those of the
    same batch with any other padding values; at β = 0 the KL term is not taken at all."""
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])
    valid = torch.tensor([[-0.5, -1.0, 0.0, 0.0], [-2.0, -0.1, -0.3, 0.0]])
    ref = (valid - math.log(2)) * mask  # stored masked, as measure() does
    adv = torch.tensor([[0.5], [-1.0]]).expand(2, 4) * mask
    cfg = PPOConfig(advantage="grpo", kl_coef=beta, max_new_tokens=4)
    padded = (valid + torch.where(mask.bool(), 0.0, -200.0)).requires_grad_()
    loss = surrogate_loss(padded, valid, ref, adv, mask, cfg, beta)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(padded.grad).all()
    assert (padded.grad[~mask.bool()] == 0).all()
    # ratio 1: the surrogate term is −A, and k3 = (0.5 − 1) + ln 2 = 0.193147 on every valid token:
    # row 1: −0.5 + β·0.193147, row 2: 1.0 + β·0.193147; grpo: the mean of the two rows' token means
    assert loss.item() == pytest.approx((-0.5 + 1.0) / 2 + beta * 0.193147, abs=1e-6)


def test_grpo_at_a_low_temperature_trains_with_the_kl_term_and_without_it(micro_world, tmp_path, capsys):
    """The issue's run: GRPO, 2 samples per prompt, temperature 0.1 — at β = 0.05 and at β = 0 (before the fix:
    "PPO loss is not finite (nan)" in the first iteration, either way)."""
    (tmp_path / "rf.py").write_text("def three(completions, **kw):\n"
                                    "    return [float(len(c.split()) == 3) for c in completions]\n")
    for beta in ("0.05", "0"):
        code, _, err = run_cli(["ppo", "--policy", micro_world / "base", "--reward-fn", f"{tmp_path}/rf.py:three",
                                "--prompts", micro_world / "prompts/train.jsonl", "--out", tmp_path / beta,
                                "--advantage", "grpo", "--num-generations", "2", "--temperature", "0.1",
                                "--ppo-steps", "1", "--batch-size", "8", "--minibatch-size", "4", "--kl-coef", beta],
                               capsys)
        assert code == 0, err
        row = json.loads((tmp_path / beta / "metrics.jsonl").read_text())
        assert math.isfinite(row["policy_loss"]) and row["eos_rate"] > 0  # some responses end: padding follows


@pytest.fixture
def grpo_setup(tmp_path, tiny_gpt2):
    cfg = PPOConfig(out=str(tmp_path / "run"), policy=str(tiny_gpt2), reward=str(_reward_dir(tmp_path, tiny_gpt2)),
                    prompts="unused", advantage="grpo", num_generations=4, batch_size=8, minibatch_size=4,
                    max_new_tokens=8, lr=1e-3)
    tokenizer, policy, reference, value, reward = load_models(cfg, torch.device("cpu"))
    assert value is None  # no critic
    samples = generate(policy, tokenizer, [p for p in PROMPTS for _ in range(4)], max_new_tokens=8,
                       generator=torch.Generator().manual_seed(0))
    policy.lm_head.weight.data += 0.05 * torch.randn_like(policy.lm_head.weight)  # π_θ ≠ π_ref: a KL to see
    return cfg, measure(samples, policy, reference, None, reward, cfg)


def test_grpo_advantages_are_the_group_normalized_reward_on_every_token(grpo_setup):
    cfg, rollout = grpo_setup
    rewards, adv, returns = advantages(rollout, 0.05, cfg)  # default --kl-in loss: R is the terminal reward alone
    assert returns is None and torch.allclose(rewards.sum(-1), rollout.terminal_reward)
    expected = L.grpo_advantages(rollout.terminal_reward, 4)
    assert torch.allclose(adv, expected[:, None] * rollout.mask)
    cfg.kl_in, cfg.scale_rewards = "reward", "none"  # Dr. GRPO's advantage of the KL-penalized reward
    rewards, adv, _ = advantages(rollout, 0.05, cfg)
    sequence = rollout.terminal_reward - 0.05 * (rollout.logp - rollout.ref_logp).sum(-1)
    assert torch.allclose(rewards.sum(-1), sequence, atol=1e-6)
    centred = sequence - sequence.reshape(2, 4).mean(-1).repeat_interleave(4)
    assert torch.allclose(adv, centred[:, None] * rollout.mask, atol=1e-6)


def _prompts(path, n=24):
    path.write_text("".join(json.dumps({"prompt": PROMPTS[i % 2], "id": f"r{i + 1}", "n": i + 1}) + "\n"
                            for i in range(n)))
    return path


def test_grpo_on_a_reward_function_alone_logs_it_its_time_and_the_gold_judge(micro_world, tmp_path, capsys):
    (tmp_path / "rf.py").write_text(REWARD_FUNCTIONS.replace("17 in n", "False"))
    out = tmp_path / "grpo"
    code, _, err = run_cli(["ppo", "--policy", micro_world / "base", "--reward-fn", f"{tmp_path}/rf.py:picky",
                            "--prompts", _prompts(tmp_path / "p.jsonl"), "--out", out, "--advantage", "grpo",
                            "--num-generations", "4", "--ppo-steps", "2", "--batch-size", "8", "--minibatch-size", "4",
                            "--judge", f"world:gold,{_reward_dir(tmp_path, micro_world / 'base')}"], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for key in ("reward/rf:picky", "reward_fn_s", "gold", "gold_correctness", "judge_rm", "policy_loss", "kl"):
        assert key in rows[-1], key
    assert "value_loss" not in rows[-1] and not (out / "value").exists()


def test_a_reward_function_raising_on_row_17_stops_with_one_line_and_exit_2(micro_world, tmp_path, capsys):
    (tmp_path / "rf.py").write_text(REWARD_FUNCTIONS)
    out = tmp_path / "run"
    code, _, err = run_cli(["ppo", "--policy", micro_world / "base", "--reward-fn", f"{tmp_path}/rf.py:picky",
                            "--prompts", _prompts(tmp_path / "p.jsonl"), "--out", out, "--advantage", "rloo",
                            "--ppo-steps", "6", "--batch-size", "8", "--minibatch-size", "8", "--ppo-epochs", "1",
                            "--checkpoint-every", "1"], capsys)
    assert code == 2
    assert err.strip().splitlines()[-1] == (f"rlhf ppo: error: reward function rf:picky raised ValueError: row 17 is "
                                            f"bad on {tmp_path / 'p.jsonl'}: prompt 17 (id r17)")
    steps_done = len((out / "metrics.jsonl").read_text().splitlines())
    assert steps_done == STEPS_BEFORE_ROW_17  # seed 0's order of the 24 prompts (2 per step) reaches row 17 at step 4
    assert (out / "resume" / f"step-{steps_done}" / "state.pt").is_file()  # the last checkpoint, intact


@pytest.mark.slow
@pytest.mark.skipif(not PEER_LATEST.exists(), reason="needs .venv-peer-latest (TRL 1.16): make bench builds it")
def test_grpo_advantages_and_loss_equal_trl_1_16_on_identical_tensors():
    """bench/peer_grpo_check.py: TRL's GRPOTrainer's own advantage and loss code against ours (about 30 s)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(PEER_LATEST), "peer_grpo_check.py"], cwd=ROOT / "bench", env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["trl"] == "1.16.0" and summary["cases"] == 9 and summary["max_abs_diff"] <= 1e-6
