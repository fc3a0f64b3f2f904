"""The loss variants of losses.py (DAPO's clip-higher, aggregation and overlong punishment, GSPO's sequence-level
ratio, CISPO) by hand, as `rlhf ppo` wires them (`--loss-type dapo|cispo`, `--importance-level`,
`--clip-range-high`, `--overlong-cache`), against TRL 1.16 on identical tensors, and with 2 processes."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlhfkit import losses as L
from rlhfkit.generation import generate
from rlhfkit.runtime.optim import make_optimizer
from rlhfkit.train.common import shuffled_batches
from rlhfkit.train.configs import PPOConfig
from rlhfkit.train.ppo import advantages, measure, policy_terms, ppo_update, surrogate_loss
from rlhfkit.train.ppo_setup import load_models
from tests.conftest import run_cli
from tests.train.test_distributed import TOLERANCE, _column, _metrics
from tests.train.test_ppo import _reward_dir, _rollout

ROOT = Path(__file__).resolve().parents[2]
PEER_LATEST = ROOT / ".venv-peer-latest" / "bin" / "python"  # TRL 1.16 (bench/run_all.py ensure_peer_env)


def _close(tensor, expected):
    assert torch.allclose(tensor.detach().double(), torch.tensor(expected, dtype=torch.float64), atol=1e-6), tensor


def _ratios(*values):
    """log-probs with π_θk = 1/2 on every token whose ratios π_θ/π_θk are `values`: log π_θ = log(v/2)."""
    logp = torch.tensor([[math.log(v / 2) for v in values]], requires_grad=True)
    return logp, torch.full_like(logp, math.log(0.5))


def test_clip_higher_raises_only_the_upper_clip_hand_computed():
    logp, old = _ratios(1.25, 1.25, 0.7, 0.7)
    adv = torch.tensor([[1.0, -1.0, -1.0, 1.0]])
    # ρ = 1.25, Â = +1: clip(1.25, 0.8, 1.2) = 1.2 -> −min(1.25, 1.2) = −1.2 (clipped);  ε_high 0.28: −1.25
    # ρ = 1.25, Â = −1: −min(−1.25, −1.2) = 1.25 (never clipped from above when Â < 0)
    # ρ = 0.7,  Â = −1: −min(−0.7, −0.8) = 0.8 (clipped below at 1 − ε_low);  ρ = 0.7, Â = +1: −min(0.7, 0.8) = −0.7
    symmetric = L.clip_higher_terms(logp - old, adv, 0.2, 0.2)
    _close(symmetric, [[-1.2, 1.25, 0.8, -0.7]])
    assert torch.equal(symmetric, L.clipped_surrogate_terms(logp, old, adv, 0.2))  # ε_high = ε: PPO-Clip itself
    higher = L.clip_higher_terms(logp - old, adv, 0.2, 0.28)
    _close(higher, [[-1.25, 1.25, 0.8, -0.7]])
    higher.sum().backward()  # d(−ρÂ)/d log π = −ρÂ where unclipped, 0 where clipped
    _close(logp.grad, [[-1.25, 1.25, 0.0, -0.7]])


def test_gspo_sequence_ratio_is_the_length_normalized_one_with_gspo_token_gradients():
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.7, 9.9]], requires_grad=True)  # 9.9 sits on padding
    old = torch.tensor([[-1.3, -1.4, -3.6], [-0.9, -0.9, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    # row 1: log ρ = 0.3, −0.6, 0.6 -> log s = 0.3/3 = 0.1;  row 2: 0.4, 0.2 -> log s = 0.6/2 = 0.3
    log_s = L.importance_log_ratio(logp, old, mask, "sequence")
    _close(log_s[mask.bool()], [0.1, 0.1, 0.1, 0.3, 0.3])
    _close(L.importance_log_ratio(logp, old, mask, "token")[0], [0.3, -0.6, 0.6])
    # GSPO with one Â per response, the mean over responses (--loss-type grpo), ε = 0.2: s_1 = e^0.1 = 1.105171 is
    # inside [0.8, 1.2]; s_2 = e^0.3 = 1.349859 with Â = −1 is not clipped (Â < 0): the loss is −1/2 Σ_i s_i Â_i
    adv = torch.tensor([[0.5], [-1.0]]) * mask
    loss = L.aggregate_loss(L.clip_higher_terms(log_s, adv, 0.2, 0.2), mask, "grpo")
    assert loss.item() == pytest.approx((-1.105171 * 0.5 + 1.349859) / 2, abs=1e-6)  # = 0.398637
    loss.backward()
    # d/d log π_t of −1/2 · s_i Â_i = −1/2 · s_i Â_i / |y_i|: row 1 −1.105171·0.5/6 = −0.092098, row 2 1.349859/4
    expected = [[-0.092098, -0.092098, -0.092098], [0.337465, 0.337465, 0.0]]
    _close(logp.grad, expected)


def test_cispo_clips_the_weight_and_keeps_every_token_gradient_hand_computed():
    logp, old = _ratios(1.5, 0.5)
    adv = torch.tensor([[2.0, -1.0]])
    # ρ = 1.5 -> r̂ = min(1.5, 1.2) = 1.2; term −1.2·2·log(0.75) = 0.690392; ρ = 0.5 -> r̂ = 0.5 (no lower clip);
    # term −0.5·(−1)·log(0.25) = −0.693147
    terms = L.cispo_terms(logp - old, logp, adv, 0.2)
    _close(terms, [[-1.2 * 2 * math.log(0.75), 0.5 * math.log(0.25)]])
    terms.sum().backward()  # sg[r̂]·Â is the gradient's weight: −1.2·2 = −2.4 and −0.5·(−1) = 0.5
    _close(logp.grad, [[-2.4, 0.5]])
    logp.grad = None
    L.clip_higher_terms(logp - old, adv, 0.2, 0.2).sum().backward()
    assert logp.grad[0, 0] == 0  # PPO-Clip: ρ = 1.5 > 1.2 with Â > 0 has no gradient at all


def test_soft_overlong_punishment_hand_computed():
    lengths = torch.tensor([3, 6, 7, 9, 10, 12])
    # L_max = 10, L_cache = 4: 0 up to 6 tokens, then (6 − |y|)/4: 7 -> −0.25, 9 -> −0.75, 10 -> −1; beyond 10: −1
    assert L.soft_overlong_punishment(lengths, 10, 4).tolist() == [0.0, 0.0, -0.25, -0.75, -1.0, -1.0]


def test_the_trainer_selects_the_variant_its_flags_name():
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.7, -9.0]], requires_grad=True)
    old = torch.tensor([[-1.3, -1.4, -3.6], [-0.9, -0.9, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv = torch.tensor([[0.5], [-1.0]]) * mask
    cases = {  # flags -> the pure function they stand for
        (): L.clip_higher_terms(logp - old, adv, 0.2, 0.2),
        (("clip_range_high", 0.28),): L.clip_higher_terms(logp - old, adv, 0.2, 0.28),
        (("importance_level", "sequence"), ("clip_range", 0.05)):
            L.clip_higher_terms(L.importance_log_ratio(logp, old, mask, "sequence"), adv, 0.05, 0.05),
        (("loss_type", "cispo"), ("clip_range_high", 3.0)): L.cispo_terms(logp - old, logp, adv, 3.0),
        (("loss_type", "cispo"), ("importance_level", "sequence")):
            L.cispo_terms(L.importance_log_ratio(logp, old, mask, "sequence"), logp, adv, 0.2)}
    for flags, expected in cases.items():
        cfg = PPOConfig(advantage="grpo", max_new_tokens=3, **dict(flags))
        assert torch.equal(policy_terms(logp, old, adv, mask, cfg), expected), flags
    # --loss-type dapo: the token sum over the minibatch's 5 tokens. Row 1, Â = 0.5: ρ = e^0.3 = 1.349859 and
    # e^0.6 = 1.822119 clipped to 1.2 -> −0.6 each; ρ = e^−0.6 = 0.548812 -> −min(0.274406, 0.8·0.5) = −0.274406.
    # Row 2, Â = −1: ρ = e^0.4 = 1.491825, e^0.2 = 1.221403, above 1.2 but Â < 0: unclipped -> 1.491825, 1.221403
    cfg = PPOConfig(advantage="grpo", max_new_tokens=3, loss_type="dapo", kl_in="reward")
    dapo = (-0.6 - 0.274406 - 0.6 + 1.491825 + 1.221403) / 5  # = 0.247764
    assert surrogate_loss(logp, old, old, adv, mask, cfg, 0.0).item() == pytest.approx(dapo, abs=1e-6)
    cfg.loss_type = "grpo"  # each response's mean first: (−1.474406/3 + 2.713228/2) / 2 = 0.432573
    assert surrogate_loss(logp, old, old, adv, mask, cfg, 0.0).item() == pytest.approx(0.432573, abs=1e-6)


@pytest.fixture
def ppo_setup(tmp_path, tiny_gpt2):  # tests/train/test_ppo.py's `setup`: PPO with a value model
    cfg = PPOConfig(out=str(tmp_path / "run"), policy=str(tiny_gpt2), reward=str(_reward_dir(tmp_path, tiny_gpt2)),
                    prompts="unused", batch_size=8, minibatch_size=4, ppo_epochs=2, max_new_tokens=10, lr=1e-3)
    return cfg, *load_models(cfg, torch.device("cpu"))


def test_cispo_with_gae_first_minibatch_is_reinforce_on_the_gae_advantages(ppo_setup):
    """--advantage gae with --loss-type cispo --importance-level sequence: on the first minibatch π_θ = π_θk, so
    every weight is min(1, 1 + ε_high) = 1 and the loss is REINFORCE's −Σ m·Â·log π_θ / Σ m on GAE's Â."""
    cfg, _, policy, _, value, _ = ppo_setup
    _, rollout = _rollout(ppo_setup, loss_type="cispo", importance_level="sequence")
    _, adv, returns = advantages(rollout, cfg.kl_coef, cfg)
    optimizer = make_optimizer(list(policy.parameters()) + list(value.parameters()), cfg.lr)
    stats = ppo_update(policy, value, optimizer, rollout, adv, returns, cfg, cfg.kl_coef,
                       torch.Generator().manual_seed(0))
    first = next(iter(shuffled_batches(len(adv), cfg.minibatch_size, torch.Generator().manual_seed(0))))
    expected = -L.masked_mean(adv[first] * rollout.logp[first], rollout.mask[first])
    assert stats[0]["policy_loss"] == pytest.approx(expected.item(), abs=1e-5)
    ppo_clip = -L.masked_mean(adv[first], rollout.mask[first])  # PPO-Clip's first loss, ρ = 1: −mean(Â)
    assert abs(expected - ppo_clip) > 0.01  # measured 0.045: the check above tells them apart


@pytest.mark.parametrize("flags, message", [
    (dict(loss_type="gspo"), "config key 'loss_type': 'gspo' is not one of bnpo, grpo, dr_grpo, dapo, cispo"),
    (dict(importance_level="response"), "config key 'importance_level': 'response' is not one of token, sequence"),
    (dict(clip_range_high=-0.1), "config key 'clip_range_high' must be a finite number > 0"),
    (dict(overlong_cache=-1), "config key 'overlong_cache' must be at least 0"),
    (dict(overlong_cache=40), "config key 'overlong_cache' must not exceed 'overlong_max_length' (default: "
                              "'max_new_tokens')"),
    (dict(overlong_max_length=20), "config key 'overlong_max_length' needs --overlong-cache (the soft "
                                   "punishment's length)")])
def test_bad_loss_variant_flags_are_one_line_errors(flags, message, tiny_gpt2, tmp_path, capsys):
    (tmp_path / "p.jsonl").write_text('{"prompt": "list three animals ."}\n')
    args = ["ppo", "--policy", tiny_gpt2, "--reward-fn", "length", "--prompts", tmp_path / "p.jsonl",
            "--out", tmp_path / "run", "--advantage", "grpo", "--max-new-tokens", "32"]
    for key, value in flags.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and err.strip().splitlines()[-1] == f"rlhf ppo: error: {message}"
    assert not (tmp_path / "run").exists()


def test_overlong_punishment_is_added_to_the_terminal_reward_and_logged(tmp_path, tiny_gpt2):
    cfg = PPOConfig(out=str(tmp_path / "run"), policy=str(tiny_gpt2), reward=str(_reward_dir(tmp_path, tiny_gpt2)),
                    prompts="unused", advantage="grpo", num_generations=2, batch_size=4, max_new_tokens=8,
                    missing_eos_penalty=None)
    tokenizer, policy, reference, _, reward = load_models(cfg, torch.device("cpu"))
    samples = generate(policy, tokenizer, ["list three animals ."] * 4, max_new_tokens=8,
                       generator=torch.Generator().manual_seed(0))
    plain = measure(samples, policy, reference, None, reward, cfg)
    cfg.overlong_cache = 5  # L_max = 8: from 3 tokens on, −1/5 per token
    shaped = measure(samples, policy, reference, None, reward, cfg)
    lengths = samples.response_mask.sum(-1)
    assert (lengths > 3).any()  # some responses are punished
    expected = ((3 - lengths) / 5).clamp(max=0)
    assert torch.allclose(shaped.terminal_reward - plain.terminal_reward, expected.float())
    assert torch.allclose(shaped.columns["overlong"], expected.float())


@pytest.mark.slow
@pytest.mark.skipif(not PEER_LATEST.exists(), reason="needs .venv-peer-latest (TRL 1.16): make bench builds it")
def test_dapo_gspo_cispo_equal_trl_1_16_on_identical_tensors():
    """bench/peer_loss_check.py: TRL's GRPOTrainer's own `_compute_loss` (loss and d loss / d log π) against
    train/ppo.py `surrogate_loss` for dapo, GSPO and cispo, and TRL's soft overlong punishment (about 1 min)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "bench/peer_loss_check.py"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    print(done.stdout)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["trl"] == "1.16.0" and summary["cases"] == 8 and summary["max_abs_diff"] <= 1e-6


@pytest.mark.slow
def test_dapo_with_two_processes_takes_the_steps_of_one_process(micro_world, tmp_path, capsys):
    """--loss-type dapo is a mean over the global minibatch's tokens: with uneven response lengths, 2 processes
    weigh their shares by their tokens and follow the 1-process run (as bnpo; tests/train/test_distributed.py)."""
    args = ["ppo", "--policy", micro_world / "base", "--reward", _reward_dir(tmp_path, micro_world / "base"),
            "--prompts", micro_world / "prompts/train.jsonl", "--advantage", "grpo", "--num-generations", "2",
            "--loss-type", "dapo", "--clip-range-high", "0.28", "--overlong-cache", "4", "--ppo-steps", "2",
            "--batch-size", "4", "--minibatch-size", "4", "--ppo-epochs", "2", "--max-new-tokens", "12",
            "--lr", "1e-3", "--threads", "1"]
    for n in (1, 2):
        code, _, err = run_cli([*args, "--out", tmp_path / f"p{n}", "--num-processes", n], capsys)
        assert code == 0, err
    one, two = _metrics(tmp_path / "p1"), _metrics(tmp_path / "p2")
    assert len({r["response_length"] for r in one}) > 1 or any(0 < r["eos_rate"] < 1 for r in one)  # uneven
    for key in ("score", "reward/overlong", "kl", "policy_loss", "clipfrac", "approx_kl", "entropy", "ratio_max"):
        assert _column(two, key) == pytest.approx(_column(one, key), **TOLERANCE), key
