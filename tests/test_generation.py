import pytest
import torch

from rlhfkit.generation import generate, next_token
from rlhfkit.models.loading import load_causal_lm, load_tokenizer

PROMPTS = ["list three animals .", "summarize : my name is tom . i live in paris . tl;dr :", "what color is the sky ?"]


@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_llama"])
def test_greedy_left_padded_batch_equals_one_at_a_time(fixture, request):
    path = request.getfixturevalue(fixture)
    tokenizer = load_tokenizer(path)
    model = load_causal_lm(path, tokenizer).eval()
    batch = generate(model, tokenizer, PROMPTS, max_new_tokens=12, greedy=True)
    assert batch.prompt_mask[0, 0] == 0  # the shorter prompts really are left-padded
    for i, prompt in enumerate(PROMPTS):
        alone = generate(model, tokenizer, [prompt], max_new_tokens=12, greedy=True)
        n = int(alone.response_mask.sum())
        assert batch.response_ids[i, :n].tolist() == alone.response_ids[0, :n].tolist()
        assert batch.texts[i] == alone.texts[0]


def test_stops_at_eos_and_pads_after_it(tiny_gpt2):
    tokenizer = load_tokenizer(tiny_gpt2)
    model = load_causal_lm(tiny_gpt2, tokenizer).eval()
    eos = tokenizer.eos_token_id

    def likely_eos(module, inputs, output):  # p(EOS) ≈ 1/4 per step: rows end at different lengths
        output[..., eos] += 5.0
        return output
    model.lm_head.register_forward_hook(likely_eos)
    g = torch.Generator().manual_seed(0)
    s = generate(model, tokenizer, PROMPTS * 4, max_new_tokens=20, temperature=1.0, generator=g)
    assert s.finished.any() and len(set(s.response_mask.sum(1).tolist())) > 1
    for row, mask, done in zip(s.response_ids.tolist(), s.response_mask.tolist(), s.finished.tolist()):
        n = sum(mask)
        assert mask == [1] * n + [0] * (len(mask) - n)
        if done:
            assert row[n - 1] == eos and eos not in row[:n - 1]
            assert all(t == tokenizer.pad_token_id for t in row[n:])
        else:
            assert eos not in row[:n]


def test_ignore_eos_runs_to_full_length(tiny_gpt2):
    tokenizer = load_tokenizer(tiny_gpt2)
    model = load_causal_lm(tiny_gpt2, tokenizer).eval()
    s = generate(model, tokenizer, PROMPTS, max_new_tokens=9, ignore_eos=True,
                 generator=torch.Generator().manual_seed(1))
    assert s.response_mask.sum().item() == 9 * len(PROMPTS)
    assert not s.finished.any()


def test_top_p_keeps_only_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    g = torch.Generator().manual_seed(0)
    draws = {int(next_token(logits, 1.0, 0.7, False, g)) for _ in range(300)}
    assert draws == {0, 1}  # 0.5 + 0.3 reaches 0.7; tokens 2 and 3 are never drawn


def test_temperature_divides_logits():
    logits = torch.tensor([[2.0, 0.0]])
    g = torch.Generator().manual_seed(0)
    cold = sum(int(next_token(logits, 0.1, 1.0, False, g)) for _ in range(500))
    hot = sum(int(next_token(logits, 10.0, 1.0, False, g)) for _ in range(500))
    assert cold < 5 and 150 < hot < 350  # p(1) = 2e-9 at T=0.1, 0.45 at T=10


def test_bf16_decoding_casts_each_weight_once_not_at_every_token(tiny_gpt2):
    """--bf16: one autocast region around the decoding loop (`precision.cast_once`) keeps each weight's bf16 copy
    for the whole loop; under inference_mode, or with a region per forward pass, every token re-cast them all."""
    from torch.profiler import profile

    from rlhfkit.train.distributed import Parallel
    tokenizer = load_tokenizer(tiny_gpt2)
    model = Parallel(torch.device("cpu"), bf16=True).autocast(load_causal_lm(tiny_gpt2, tokenizer).eval())
    weight = model.transformer.h[0].mlp.c_fc.weight  # GPT-2's Conv1D: [d, 4d], a shape no activation has
    with profile(record_shapes=True) as prof:
        s = generate(model, tokenizer, PROMPTS, max_new_tokens=8, ignore_eos=True, generator=torch.Generator())
    assert s.response_ids.shape[1] == 8  # eight forward passes: the prompt's, then seven tokens'
    casts = [e for e in prof.events() if e.name == "aten::_to_copy" and e.input_shapes[:1] == [list(weight.shape)]]
    assert len(casts) == len(model.transformer.h)  # each layer's c_fc weight, once


def likely_eos_model(path):
    """The tiny model with p(EOS) ≈ 1/4 per step: rows stop at different steps, lanes after different loops."""
    tokenizer = load_tokenizer(path)
    model = load_causal_lm(path, tokenizer).eval()
    eos = tokenizer.eos_token_id

    def likely_eos(module, inputs, output):
        output[..., eos] += 5.0
        return output
    model.lm_head.register_forward_hook(likely_eos)
    return model, tokenizer


@pytest.mark.parametrize("lanes", [2, 3])
def test_lanes_decode_the_tokens_of_one_loop_and_leave_the_generator_where_it_does(tiny_gpt2, lanes):
    model, tokenizer = likely_eos_model(tiny_gpt2)
    prompts = PROMPTS * 6
    one_g, lanes_g = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    one = generate(model, tokenizer, prompts, max_new_tokens=20, generator=one_g, lanes=1)
    split = generate(model, tokenizer, prompts, max_new_tokens=20, generator=lanes_g, lanes=lanes)
    assert len(set(one.response_mask.sum(1).tolist())) > 1  # rows (and so lanes) stopped at different steps
    assert torch.equal(one.response_ids, split.response_ids)
    assert torch.equal(one.response_mask, split.response_mask)
    assert torch.equal(one.finished, split.finished) and one.texts == split.texts
    assert torch.equal(torch.rand(4, generator=one_g), torch.rand(4, generator=lanes_g))


def test_lanes_use_the_default_generator_as_one_loop_does(tiny_gpt2):
    model, tokenizer = likely_eos_model(tiny_gpt2)
    torch.manual_seed(5)
    one = generate(model, tokenizer, PROMPTS * 4, max_new_tokens=12, lanes=1)
    after_one = torch.rand(3)
    torch.manual_seed(5)
    split = generate(model, tokenizer, PROMPTS * 4, max_new_tokens=12, lanes=2)
    assert torch.equal(one.response_ids, split.response_ids) and torch.equal(torch.rand(3), after_one)


def test_a_failing_lane_raises_its_error_and_restores_the_thread_count(tiny_gpt2):
    model, tokenizer = likely_eos_model(tiny_gpt2)
    threads = torch.get_num_threads()

    def fail_in_second_lane(module, inputs, output):  # 9 rows in 2 lanes: 4 and 5; the lane of 5 fails
        if output.shape[0] == 5:
            raise RuntimeError("lane failed")
        return output
    model.lm_head.register_forward_hook(fail_in_second_lane)
    with pytest.raises(RuntimeError, match="lane failed"):  # not the other lane's broken meeting, nor a hang
        generate(model, tokenizer, PROMPTS * 3, max_new_tokens=6, generator=torch.Generator().manual_seed(0),
                 lanes=2)
    assert torch.get_num_threads() == threads


def test_decoding_lanes_follow_the_threads_for_a_small_model_on_a_cpu(monkeypatch):
    from rlhfkit.generation import LANE_ROWS, LANE_WEIGHTS, decoding_lanes
    small, large = torch.nn.Linear(16, 16), torch.nn.Embedding(LANE_WEIGHTS // 4 + 1, 1)  # float32: 4 bytes each
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch, "set_num_threads", torch._C.set_num_threads)  # (a vLLM test may have replaced it)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert decoding_lanes(small, cpu, 64) == 2
    assert decoding_lanes(small, cpu, 2 * LANE_ROWS - 1) == 1  # too few rows to split
    assert decoding_lanes(small, torch.device("cuda"), 64) == 1
    assert decoding_lanes(large, cpu, 64) == 1  # its weights would be streamed once per lane
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert decoding_lanes(small, cpu, 64) == 1
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # as vLLM's CPU worker leaves it: lanes could
    assert decoding_lanes(small, cpu, 64) == 1                     # not have one thread each
