"""The hf-static engine (static KV cache; compiled into CUDA graphs on a GPU) samples what the hf engine samples."""

import pytest
import torch

from rlhfkit.engines.core import generate_texts, make_engine
from rlhfkit.models.loading import load_causal_lm, load_tokenizer

PROMPTS = ["list three animals .", "summarize : my name is tom . i live in paris . tl;dr :", "what color is the sky ?",
           "name the opposite of hot ."]


def _engines(path, device="cpu"):
    tokenizer = load_tokenizer(path)
    model = load_causal_lm(path, tokenizer).to(device).eval()
    return (make_engine("hf", model, tokenizer, max_len=64), make_engine("hf-static", model, tokenizer, max_len=64))


@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_llama"])
def test_static_cache_greedy_equals_dynamic_cache(fixture, request):
    hf, static = _engines(request.getfixturevalue(fixture))
    for prompts in (PROMPTS, PROMPTS[::-1]):  # the second call reuses (resets) the first one's cache
        a = hf.generate(prompts, max_new_tokens=16, greedy=True, ignore_eos=True)
        b = static.generate(prompts, max_new_tokens=16, greedy=True, ignore_eos=True)
        assert b.prompt_ids.shape[1] == 64 - 16  # prompts left-padded to the engine's fixed width
        assert torch.equal(a.response_ids, b.response_ids) and a.texts == b.texts
    assert len(static.caches) == 1


@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_llama"])
def test_static_cache_samples_the_same_tokens_from_the_same_generator(fixture, request):
    """Same logits (to float noise) and the same sampler: the same tokens, stops and padding."""
    hf, static = _engines(request.getfixturevalue(fixture))
    a = generate_texts(hf, PROMPTS * 3, max_new_tokens=20, temperature=1.0, top_p=0.9, seed=3)
    b = generate_texts(static, PROMPTS * 3, max_new_tokens=20, temperature=1.0, top_p=0.9, seed=3)
    assert a == b


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs: needs a GPU (run on CPU above, eager)")
@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_llama"])
def test_compiled_static_decoding_on_cuda_equals_eager_loop(fixture, request):
    hf, static = _engines(request.getfixturevalue(fixture), "cuda")
    assert static.forward is not None  # the compiled step
    for _ in range(2):  # the second call replays the captured graphs
        a = hf.generate(PROMPTS, max_new_tokens=16, greedy=True, ignore_eos=True)
        b = static.generate(PROMPTS, max_new_tokens=16, greedy=True, ignore_eos=True)
        assert torch.equal(a.response_ids, b.response_ids)
