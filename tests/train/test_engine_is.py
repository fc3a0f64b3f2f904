"""Engine importance weights (issue 33 item 3; losses.py "engine importance weights", train/engine_is.py): TIS and MIS
weights, the capped/masked share and the engine–trainer KL by hand; the PPO/GRPO/CISPO losses times the weight by
hand; the hf engine (the trained model sampling itself) leaves the loss bit-for-bit unchanged; an engine whose
log-probs differ from the trainer's by a known amount, through `rlhf ppo` with 1 and 2 processes."""

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from rlhfkit import losses as L
from rlhfkit.config import build_config
from rlhfkit.engines.hf import HFEngine
from rlhfkit.generation import Samples
from rlhfkit.models.policy import scored_responses
from rlhfkit.runtime.optim import make_optimizer
from rlhfkit.train import ppo as ppo_module
from rlhfkit.train.configs import PPOConfig, engine_correction
from rlhfkit.train.engine_is import engine_metrics, engine_weights
from rlhfkit.train.ppo import advantages, measure, ppo_update, surrogate_loss
from rlhfkit.train.ppo_setup import load, load_models, read_inputs
from rlhfkit.train.rollout import pad_responses
from rlhfkit.train.run import start_run
from tests.conftest import run_cli
from tests.train.test_distributed import TOLERANCE, _column, _metrics
from tests.train.test_ppo import PROMPTS, _reward_dir, setup  # noqa: F401  (setup: a fixture)

# The known gap of `ShiftedEngine`: log π_engine(y_t) = log π_θk(y_t) − δ_t with δ_t = SHIFT[t mod 4], so the
# behaviour ratio is r_t = e^{δ_t}: with C = 3, TIS weights min(e^0.5, 3) = 1.648721, e^−0.3 = 0.740818,
# min(e^1.5 = 4.481689, 3) = 3 (capped), e^0 = 1.
SHIFT = (0.5, -0.3, 1.5, 0.0)
ROOT = Path(__file__).resolve().parents[2]


def _close(tensor, expected, atol=1e-6):
    expected = torch.as_tensor(expected, dtype=torch.float64)
    assert torch.allclose(tensor.detach().double(), expected, atol=atol), (tensor, expected)


def _shift(width: int) -> torch.Tensor:
    return torch.tensor([SHIFT[t % len(SHIFT)] for t in range(width)])


class ShiftedEngine:
    """The hf engine (a real model sampling), reporting each sampled token's log-prob under its own model minus δ_t
    (`SHIFT`): an engine whose distribution differs from the trainer's by a known amount, as vLLM's does by an
    unknown one."""

    def __init__(self, inner: HFEngine, temperature: float):
        self.inner, self.temperature, self.name = inner, temperature, "hf"

    @property
    def device(self):
        return self.inner.device

    def generate(self, prompts: list, **options) -> Samples:
        s = self.inner.generate(prompts, **options)
        with torch.no_grad():
            logp, _ = scored_responses(self.inner.model, s.input_ids, s.attention_mask, s.prompt_ids.shape[1],
                                       self.temperature)
        return replace(s, engine_logp=(logp - _shift(logp.shape[1])) * s.response_mask)

    def sync(self, model) -> float:
        return self.inner.sync(model)

    def close(self) -> None:
        self.inner.close()


# ------------------------------------------------------------------------------------------ by hand

OLD = torch.tensor([[-1.0, -1.0, -1.0], [-2.0, -2.0, 0.0]])
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])
# log r = log π_θk − log π_engine: row 1 (0.5, −0.2, 1.5), row 2 (0.3, −0.9, padding: its −7 must not count)
ENGINE = OLD - torch.tensor([[0.5, -0.2, 1.5], [0.3, -0.9, -7.0]])


def test_tis_weights_truncate_each_token_ratio_at_the_cap_hand_computed():
    # C = 2: w = min(e^0.5, 2) = 1.648721, e^−0.2 = 0.818731, min(e^1.5 = 4.481689, 2) = 2; row 2: e^0.3 = 1.349859,
    # e^−0.9 = 0.406570; padding 1 (its terms are masked out of every loss)
    w = L.tis_weights(OLD, ENGINE, MASK, 2.0)
    _close(w, [[1.648721, 0.818731, 2.0], [1.349859, 0.406570, 1.0]])
    assert L.tis_capped_fraction(OLD, ENGINE, MASK, 2.0).item() == pytest.approx(1 / 5)  # 1 token of 5 capped
    _close(L.tis_weights(OLD, ENGINE, MASK, 5.0)[0], [1.648721, 0.818731, 4.481689])  # C = 5: nothing capped
    assert L.tis_capped_fraction(OLD, ENGINE, MASK, 5.0).item() == 0.0


def test_mis_weights_mask_a_response_whose_ratio_leaves_the_band_hand_computed():
    # ρ_i = Π_t r_t = exp(Σ_t log r_t): row 1 exp(0.5 − 0.2 + 1.5) = e^1.8 = 6.049647; row 2 exp(0.3 − 0.9) = e^−0.6
    # = 0.548812. C = 2, band [0.5, 2]: row 1 masked (w = 0), row 2 kept with its ratio on each of its tokens
    _close(L.mis_weights(OLD, ENGINE, MASK, 2.0) * MASK, [[0.0, 0.0, 0.0], [0.548812, 0.548812, 0.0]])
    assert L.mis_masked_fraction(OLD, ENGINE, MASK, 2.0).item() == 0.5  # 1 response of 2
    # C = 1.5, band [0.666667, 1.5]: e^−0.6 = 0.548812 < 1/1.5 is masked from below too
    assert L.mis_weights(OLD, ENGINE, MASK, 1.5).abs().sum().item() == 0.0
    assert L.mis_masked_fraction(OLD, ENGINE, MASK, 1.5).item() == 1.0
    # C = 7: both inside [1/7, 7]
    _close(L.mis_weights(OLD, ENGINE, MASK, 7.0) * MASK, [[6.049647] * 3, [0.548812, 0.548812, 0.0]])


def test_engine_trainer_mismatch_is_the_token_kl_hand_computed():
    # k1 = mean(−log r) = −(0.5 − 0.2 + 1.5 + 0.3 − 0.9)/5 = −1.2/5 = −0.24
    # k3 = mean((r − 1) − log r): (e^0.5 − 1.5) + (e^−0.2 − 0.8) + (e^1.5 − 2.5) + (e^0.3 − 1.3) + (e^−0.9 − 0.1)
    #    = 0.148721 + 0.018731 + 1.981689 + 0.049859 + 0.306570 = 2.505570, / 5 = 0.501114
    k1, k3 = L.engine_mismatch(OLD, ENGINE, MASK)
    assert k1.item() == pytest.approx(-0.24, abs=1e-6) and k3.item() == pytest.approx(0.501114, abs=1e-6)
    zero = L.engine_mismatch(OLD, OLD, MASK)
    assert zero[0].item() == 0.0 and zero[1].item() == 0.0


def test_the_policy_loss_is_each_token_term_times_its_weight_hand_computed():
    """PPO (bnpo), GRPO with its KL term (not weighted, as TRL 1.16) and CISPO: each token's policy term times w_t."""
    logp = torch.tensor([[-1.0, -1.0 + math.log(1.5), -1.0], [-2.0, -2.0, 0.0]], requires_grad=True)
    adv = torch.tensor([[1.0, 1.0, -2.0], [0.5, 0.5, 0.0]])
    w = L.tis_weights(OLD, ENGINE, MASK, 2.0)  # 1.648721, 0.818731, 2 | 1.349859, 0.406570
    # PPO-Clip terms −min(ρA, clip(ρ, 0.8, 1.2)A): ρ = 1 except token 2 (ρ = 1.5, A = 1: clipped, −1.2):
    # −1, −1.2, 2 | −0.5, −0.5. Weighted: −1.648721 − 0.982477 + 4 − 0.674929 − 0.203285 = 0.490588, / 5 tokens
    ppo = PPOConfig(max_new_tokens=3)
    loss = surrogate_loss(logp, OLD, OLD, adv, MASK, ppo, 0.0, w)
    assert loss.item() == pytest.approx(0.490588 / 5, abs=1e-6)
    loss.backward()  # d/d log π of −w·ρ·A / 5 where unclipped: −1.648721/5, 0 (clipped), 2·2/5 | −1.349859·0.5/5 ...
    _close(logp.grad, [[-0.329744, 0.0, 0.8], [-0.134986, -0.040657, 0.0]])
    # GRPO (mean over responses) with β·k3 = 0.1·k3(π_θ, π_ref), π_ref = π_θk: k3 = (1/1.5 − 1) + log 1.5 = 0.072132
    # on token 2 only. Row 1: (−1.648721 − 0.982477 + 0.1·0.072132 + 4)/3 = 0.458672; row 2 −0.878214/2 = −0.439107
    grpo = PPOConfig(advantage="grpo", max_new_tokens=3)
    loss = surrogate_loss(logp, OLD, OLD, adv, MASK, grpo, 0.1, w)
    assert loss.item() == pytest.approx((0.458672 - 0.439107) / 2, abs=1e-6)
    # CISPO: w·(−sg[min(ρ, 1 + ε_high)]·A·log π_θ), ε_high 0.2; token 2: min(1.5, 1.2) = 1.2, log π_θ = −1 + log 1.5:
    # 1.648721·(−1·1·(−1)) + 0.818731·(−1.2·1·(−0.594535)) + 2·(−1·(−2)·(−1)) + 1.349859·1 + 0.406570·1
    # = 1.648721 + 0.584117 − 4 + 1.349859 + 0.406570 = −0.010733, the token mean −0.010733/5
    cispo = PPOConfig(loss_type="cispo", max_new_tokens=3)
    loss = surrogate_loss(logp, OLD, OLD, adv, MASK, cispo, 0.0, w)
    assert loss.item() == pytest.approx(-0.010733 / 5, abs=1e-6)


@pytest.mark.parametrize("loss_type, importance_level", [("bnpo", "token"), ("grpo", "token"), ("dapo", "sequence"),
                                                         ("cispo", "token"), ("dr_grpo", "token")])
def test_a_weight_of_exactly_one_leaves_the_loss_and_gradient_bit_identical(loss_type, importance_level):
    """The engine sampled the trained model's own distribution (π_engine = π_θk): w = min(e^0, C) = 1 and the MIS
    ratio e^0 = 1, exactly; the loss and its gradient are those of no correction, bit for bit."""
    g = torch.Generator().manual_seed(0)
    logp = (torch.randn(4, 5, generator=g) - 1).requires_grad_(True)
    old, ref, adv = logp.detach() + 0.1 * torch.randn(4, 5, generator=g), logp.detach() - 0.2, torch.randn(4, 5)
    mask = (torch.arange(5)[None] < torch.tensor([5, 2, 4, 1])[:, None]).long()
    cfg = PPOConfig(loss_type=loss_type, importance_level=importance_level, kl_in="loss", max_new_tokens=5)
    plain = surrogate_loss(logp, old, ref, adv, mask, cfg, 0.05)
    (grad,) = torch.autograd.grad(plain, logp)
    for w in (L.tis_weights(old, old, mask, 3.0), L.mis_weights(old, old, mask, 3.0)):
        assert torch.equal(w, torch.ones_like(w))
        weighted = surrogate_loss(logp, old, ref, adv, mask, cfg, 0.05, w)
        assert torch.equal(weighted, plain)
        assert torch.equal(torch.autograd.grad(weighted, logp)[0], grad)


def test_the_default_is_tis_where_the_engine_is_not_the_trainer():
    assert engine_correction(PPOConfig()) == "none"                             # hf: the trained model samples
    assert engine_correction(PPOConfig(rollout_engine="hf-static")) == "none"
    assert engine_correction(PPOConfig(rollout_engine="vllm")) == "tis"
    stale = PPOConfig()
    stale.async_rollouts = 1  # the field of issue 33 item 4, where it exists: a stale policy sampled
    assert engine_correction(stale) == "tis"
    assert engine_correction(PPOConfig(rollout_engine="vllm", engine_is="none")) == "none"  # the flag wins
    assert engine_correction(PPOConfig(engine_is="mis")) == "mis"
    assert PPOConfig().engine_is_cap == 3.0  # TRL 1.16's vllm_importance_sampling_clip_max


@pytest.mark.parametrize("given", [{"flags": {"engine_is": "none"}}, {"sets": ["engine_is=none"]}])
def test_engine_is_none_given_on_the_command_line_turns_the_correction_off(given):
    """`--engine-is none` is the word none, not "no value": it was read as None (the default) and vLLM kept TIS."""
    flags = {"policy": "sft", "prompts": "p.jsonl", "out": "o", "rollout_engine": "vllm", **given.get("flags", {})}
    cfg = build_config(PPOConfig, flags=flags, sets=given.get("sets", []))
    assert cfg.engine_is == "none" and engine_correction(cfg) == "none"
    default = build_config(PPOConfig, flags={k: v for k, v in flags.items() if k != "engine_is"})
    assert default.engine_is == "auto" and engine_correction(default) == "tis"


@pytest.mark.parametrize("flags, message", [
    (["--engine-is", "icepop"], "config key 'engine_is': 'icepop' is not one of auto, tis, mis, none"),
    (["--engine-is-cap", "1"], "config key 'engine_is_cap' must be > 1"),
    (["--engine-is-cap", "0.5"], "config key 'engine_is_cap' must be > 1"),
])
def test_bad_engine_is_flags_are_one_line_errors(flags, message, tiny_gpt2, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(["ppo", "--policy", tiny_gpt2, "--reward", tiny_gpt2, "--prompts", tmp_path / "p.jsonl",
                            "--out", out, *flags], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_pad_responses_pads_engine_logp_with_zeros():
    s = Samples(torch.ones(2, 1, dtype=torch.long), torch.ones(2, 1), torch.ones(2, 2, dtype=torch.long),
                torch.tensor([[1, 1], [1, 0]]), torch.tensor([True, True]), ["a", "b"], ["x", "y"],
                torch.tensor([[-0.5, -0.25], [-1.0, 0.0]]))
    padded = pad_responses(s, 4, pad_id=0)
    assert torch.equal(padded.engine_logp, torch.tensor([[-0.5, -0.25, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0]]))
    assert pad_responses(replace(s, engine_logp=None), 4, pad_id=0).engine_logp is None


# ------------------------------------------------------------------------------ through a real model

@pytest.fixture
def world_setup(tmp_path, micro_world):
    """`setup` with the micro world's pretrained policy: its responses end at different lengths."""
    cfg = PPOConfig(out=str(tmp_path / "run"), policy=str(micro_world / "base"), prompts="unused", batch_size=8,
                    reward=str(_reward_dir(tmp_path, micro_world / "base")), minibatch_size=4, ppo_epochs=2,
                    max_new_tokens=12, lr=1e-3)
    return cfg, *load_models(cfg, torch.device("cpu"))


def _shifted_rollout(setup, **overrides):  # noqa: F811  (`setup`: a tuple here)
    cfg, tokenizer, policy, reference, value, reward = setup
    for key, val in overrides.items():
        setattr(cfg, key, val)
    engine = ShiftedEngine(HFEngine(policy, tokenizer), cfg.temperature)
    samples = engine.generate(PROMPTS, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                              generator=torch.Generator().manual_seed(0))
    return measure(samples, policy, reference, value, reward, cfg)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_an_engine_off_by_a_known_amount_gets_the_hand_computed_tis_weights_and_loss(world_setup, temperature):
    """The trainer's log π_θk of the engine's responses (train/ppo.py `measure`) minus the engine's is δ_t: the TIS
    weights are min(e^δ_t, 3), the capped share that of the tokens with δ_t = 1.5, and the first minibatch's loss
    (ratio π_θ/π_θk = 1: no clipping) −Σ w_t·Â_t / Σ m."""
    cfg, _, policy, _, value, _ = world_setup
    rollout = _shifted_rollout(world_setup, temperature=temperature, engine_is="tis", minibatch_size=cfg.batch_size)
    mask = rollout.mask
    delta = _shift(mask.shape[1]).expand_as(mask) * mask
    _close(rollout.logp - rollout.engine_logp, delta, atol=1e-5)
    expected = torch.tensor([min(math.exp(d), 3.0) for d in SHIFT])[torch.arange(mask.shape[1]) % 4]
    expected = torch.where(mask.bool(), expected.expand_as(mask), torch.ones_like(delta))
    _close(engine_weights(rollout, cfg), expected, atol=1e-5)
    record = engine_metrics(rollout, cfg)
    capped = ((torch.arange(mask.shape[1]) % 4 == 2) * mask).sum() / mask.sum()  # δ = 1.5: e^1.5 > 3
    assert record["engine_is_capped"] == pytest.approx(capped.item(), abs=1e-6) and 0 < capped < 1
    assert record["engine_kl"] == pytest.approx(-(delta.sum() / mask.sum()).item(), abs=1e-5)
    assert record["engine_is_weight"] == pytest.approx(((expected * mask).sum() / mask.sum()).item(), abs=1e-5)
    _, adv, returns = advantages(rollout, cfg.kl_coef, cfg)
    optimizer = make_optimizer(list(policy.parameters()) + list(value.parameters()), cfg.lr)
    stats = ppo_update(policy, value, optimizer, rollout, adv, returns, cfg, cfg.kl_coef,
                       torch.Generator().manual_seed(0))
    # the first minibatch is the whole batch, at π_θ = π_θk (1 to rounding: packed rows differ between scoring and
    # the update, --packing is on by default)
    assert stats[0]["ratio_max"] == pytest.approx(1.0, abs=1e-6)
    assert stats[0]["policy_loss"] == pytest.approx(-((expected * adv * mask).sum() / mask.sum()).item(), abs=1e-5)


def test_an_engine_off_by_a_known_amount_gets_the_hand_computed_mis_weights(world_setup):
    """Responses of 4, 5, 7 and 12 tokens: Σ_t δ_t = 1.7, 2.2, 3.4, 5.1; with C = 20 (log C = 2.995732) the first two
    are kept with ρ = e^1.7, e^2.2, the others masked."""
    cfg = world_setup[0]
    rollout = _shifted_rollout(world_setup, engine_is="mis", engine_is_cap=20.0)
    lengths = rollout.mask.sum(-1)
    log_rho = torch.tensor([sum(SHIFT[t % 4] for t in range(n)) for n in lengths.tolist()])  # Σ_t δ_t per response
    rho = torch.where(log_rho.abs() <= math.log(20.0), log_rho.exp(), torch.zeros_like(log_rho))  # band [1/20, 20]
    _close(engine_weights(rollout, cfg) * rollout.mask, rho[:, None] * rollout.mask, atol=1e-4)
    masked = (log_rho.abs() > math.log(20.0)).double().mean().item()
    assert 0 < masked < 1, lengths
    assert engine_metrics(rollout, cfg)["engine_is_masked"] == pytest.approx(masked)


def test_the_hf_engine_has_no_engine_log_probs_so_no_weight(setup):  # noqa: F811
    cfg, tokenizer, policy, reference, value, reward = setup
    cfg.engine_is = "tis"
    samples = HFEngine(policy, tokenizer).generate(PROMPTS, max_new_tokens=4,
                                                   generator=torch.Generator().manual_seed(0))
    rollout = measure(samples, policy, reference, value, reward, cfg)
    assert samples.engine_logp is None and engine_weights(rollout, cfg) is None and engine_metrics(rollout, cfg) == {}


def _ppo_args(world, tmp_path, *extra):
    return ["ppo", "--policy", world / "base", "--reward", _reward_dir(tmp_path, world / "base"), "--prompts",
            world / "prompts/train.jsonl", "--ppo-steps", "2", "--batch-size", "4", "--minibatch-size", "2",
            "--ppo-epochs", "2", "--max-new-tokens", "12", "--lr", "1e-3", "--threads", "1", *extra]


def test_with_the_hf_engine_rlhf_ppo_is_bit_identical_with_or_without_the_correction(micro_world, tmp_path, capsys):
    """`rlhf ppo` with the hf engine: --engine-is tis (or mis) runs the very steps of --engine-is none, and logs no
    engine metrics (the trained model sampled itself: there is no gap to log)."""
    saved = {}
    for mode in ("none", "tis", "mis"):
        out = tmp_path / mode
        code, _, err = run_cli([*_ppo_args(micro_world, tmp_path, "--engine-is", mode), "--out", out], capsys)
        assert code == 0, err
        rows = [{k: v for k, v in r.items() if not k.endswith("_s")} for r in _metrics(out)]  # timings aside
        assert not any(k.startswith("engine_") for r in rows for k in r)
        saved[mode] = (rows, (out / "model.safetensors").read_bytes())
    assert saved["tis"] == saved["none"] and saved["mis"] == saved["none"]


def _loop_with_shifted_engine(run):
    """`ppo_loop` with the run's engine wrapped in `ShiftedEngine` (in each process: this is pickled into them)."""
    real = ppo_module.make_engine
    ppo_module.make_engine = lambda *args, **kw: ShiftedEngine(real(*args, **kw), run.cfg.temperature)
    try:
        return ppo_module.ppo_loop(run)
    finally:
        ppo_module.make_engine = real


@pytest.mark.parametrize("mode", ["tis", pytest.param("mis", marks=pytest.mark.slow)])
def test_two_processes_with_engine_log_probs_take_the_steps_of_one_process(mode, micro_world, tmp_path):
    """An engine off by δ_t (`ShiftedEngine`, a real model sampling) on 2 processes (gloo) with uneven response
    lengths: engine_logp is padded to the global width, gathered with the rollout, and the weights of each process's
    share of every minibatch are the one-process run's — the logged mismatch, capped/masked share, weight and losses
    follow the one-process run. (lr 1e-4: at 1e-3, Adam's steps on near-zero gradients, which float rounding of the
    gradient average decides, moved the second iteration's policy loss by 5e-5 with TIS's weights, 2e-6 without;
    measured with this test's setup.) MIS: C = 90 keeps a 9-token response (Σδ = 3.9 < log 90 = 4.50) and masks a
    12-token one (Σδ = 5.1)."""
    rm, prompts = _reward_dir(tmp_path, micro_world / "base"), micro_world / "prompts/train.jsonl"
    for n in (1, 2):
        cfg = PPOConfig(policy=str(micro_world / "base"), reward=str(rm), prompts=str(prompts), world=str(micro_world),
                        out=str(tmp_path / f"p{n}"), num_processes=n, threads=1, ppo_steps=2, batch_size=4,
                        minibatch_size=2, ppo_epochs=2, max_new_tokens=12, lr=1e-4, advantage="grpo",
                        num_generations=2, engine_is=mode, engine_is_cap=90.0 if mode == "mis" else 3.0)
        start_run(cfg, read_inputs, load, _loop_with_shifted_engine)
    one, two = _metrics(tmp_path / "p1"), _metrics(tmp_path / "p2")
    assert [r["step"] for r in two] == [1, 2]
    assert len({r["response_length"] for r in one}) > 1 or any(0 < r["eos_rate"] < 1 for r in one)  # uneven ends
    share = "engine_is_capped" if mode == "tis" else "engine_is_masked"
    assert any(0 < r[share] < 1 for r in one), [r[share] for r in one]  # some capped/masked, some not
    for key in ("engine_kl", "engine_kl_k3", share, "engine_is_weight", "kl", "score", "policy_loss", "clipfrac",
                "approx_kl", "ratio_max", "gold"):
        assert _column(two, key) == pytest.approx(_column(one, key), **TOLERANCE), key





PEER = Path(os.environ.get("PEER_PYTHON", ROOT / ".venv-peer-latest" / "bin" / "python"))  # TRL 1.16


@pytest.mark.slow
@pytest.mark.skipif(not PEER.exists(), reason="needs TRL 1.16: .venv-peer-latest (make bench) or PEER_PYTHON")
def test_tis_and_mis_equal_trl_1_16_on_identical_tensors():
    """bench/peer_engine_is_check.py: TRL's GRPOTrainer's own vLLM importance-sampling ratios (token_truncate at 3,
    sequence_mask in [1/3, 3]) and the loss and gradient it weighs with them (dapo, grpo, cispo), against
    `losses.tis_weights`/`mis_weights` and train/ppo.py `surrogate_loss` (measured: max |diff| 0.0)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PEER_PYTHON": str(PEER)}
    done = subprocess.run([sys.executable, "bench/peer_engine_is_check.py"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["trl"] == "1.16.0" and summary["cases"] == 5 and summary["max_abs_diff"] <= 1e-6
