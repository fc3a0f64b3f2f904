"""models/policy.py: scoring in row chunks gives what one pass over the whole batch gives."""

import torch

from rlhfkit.generation import generate
from rlhfkit.losses import token_entropy
from rlhfkit.models import policy as P
from rlhfkit.models.loading import load_causal_lm, load_tokenizer

PROMPTS = ["list three animals .", "summarize : my name is tom . tl;dr :", "what color is the sky ?",
           "name the opposite of hot .", "which number follows four ?"]


def test_scored_responses_in_chunks_equal_one_pass(tiny_llama, monkeypatch):
    tokenizer = load_tokenizer(tiny_llama)
    model = load_causal_lm(tiny_llama, tokenizer).eval()
    s = generate(model, tokenizer, PROMPTS, max_new_tokens=8, generator=torch.Generator().manual_seed(0))
    width, r = s.prompt_ids.shape[1], s.response_ids.shape[1]
    with torch.inference_mode():
        logp, logits = P.response_logprobs(model, s.input_ids, s.attention_mask, width, 0.7)
        # a budget of two rows' logits: chunks of 2, 2 and 1 rows
        monkeypatch.setattr(P, "LOGITS_BUDGET", 2 * (r + 1) * model.config.vocab_size)
        chunked_logp, chunked_entropy = P.scored_responses(model, s.input_ids, s.attention_mask, width, 0.7)
    assert torch.allclose(chunked_logp, logp, atol=1e-5)
    assert torch.allclose(chunked_entropy, token_entropy(logits, 0.7), atol=1e-5)
