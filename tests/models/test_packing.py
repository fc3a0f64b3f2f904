"""models/packing.py: the index maps by hand, and packed = padded (outputs and gradients to 1e-5) for the model calls
of every trainer on tiny GPT-2, Llama and Qwen2 models; an architecture that does not read packed positions (OPT)
is probed and run padded."""

import logging

import pytest
import torch
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM

from rlhfkit.models import packing as pk
from rlhfkit.models.policy import response_logprobs, response_values, scored_responses
from rlhfkit.models.scalar import ScalarModel
from tests.arch_zoo import arch_config
from tests.conftest import transformers_warnings

VOCAB = 64


def test_layout_is_first_fit_by_decreasing_length_by_hand():
    # lengths 3, 5, 2, 4, 1 into rows of 5: 5 → row 0; 4 → row 1; 3 → row 2; 2 → row 2 (3 + 2); 1 → row 1 (4 + 1)
    assert pk.layout([3, 5, 2, 4, 1], 5) == [[1], [3, 4], [0, 2]]
    assert pk.layout([2, 2, 2], 6) == [[0, 1, 2]]  # ties keep their order
    assert pk.layout([7, 1], 5) == [[0], [1]]       # longer than a row: a row of its own


def test_pack_maps_each_token_to_its_packed_place_by_hand():
    ids = torch.tensor([[0, 0, 11, 12, 13],    # left-padded, 3 tokens
                        [21, 22, 0, 0, 0],     # right-padded, 2 tokens
                        [0, 31, 32, 33, 0]])   # both sides, 3 tokens
    mask = (ids != 0).long()
    p = pk.pack(ids, mask, capacity=5, fill_id=9)
    # first-fit decreasing with capacity 5: row 0 = seq 0 (3) + seq 1 (2); row 1 = seq 2 (3) + 2 dummy tokens
    assert p.input_ids.tolist() == [[11, 12, 13, 21, 22], [31, 32, 33, 9, 9]]
    assert p.position_ids.tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 0, 1]]
    assert p.index.tolist() == [[0, 0, 0, 1, 2], [3, 4, 0, 0, 0], [0, 5, 6, 7, 0]]
    values = torch.arange(10.0).reshape(2, 5) + 100  # packed value at flat k is 100 + k
    assert pk.unpack(values, p).tolist() == [[0, 0, 100, 101, 102], [103, 104, 0, 0, 0], [0, 105, 106, 107, 0]]
    # the default capacity is the longest sequence (3): three rows
    assert pk.pack(ids, mask).input_ids.shape == (3, 3)


def test_next_token_logprobs_reads_each_prediction_back_by_hand():
    ids = torch.tensor([[5, 6, 7], [8, 9, 0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    p = pk.pack(ids, mask, capacity=5)  # one row: 5 6 7 8 9
    logits = torch.zeros(1, 5, 10)
    logits[0, 0, 6] = logits[0, 1, 7] = logits[0, 3, 9] = 2.0  # position c favours the token at c + 1
    got = pk.next_token_logprobs(logits, p)
    high, low = 2 - torch.log(torch.tensor(9 + torch.e ** 2)), -torch.log(torch.tensor(9 + torch.e ** 2))
    assert torch.allclose(got[0], torch.stack([high, high]))
    assert torch.allclose(got[1, 0], high) and got[1, 1] == 0  # (1, 1) predicts padding: 0, masked downstream
    assert torch.allclose(got[1, 0], high) and low < high


def test_token_batches_and_even_out_by_hand():
    # packed: Σ lengths ≤ 10 → [4, 5] | [3, 6] | [12] (over the budget: alone) | [1]
    assert pk.token_batches([4, 5, 3, 6, 12, 1], 10, packed=True) == [[0, 1], [2, 3], [4], [5]]
    # padded: rows × longest ≤ 10 → [4, 5] (2 × 5) | [3] (2 × 6 = 12 > 10) | [6] | [12] | [1]
    assert pk.token_batches([4, 5, 3, 6, 12, 1], 10, packed=False) == [[0, 1], [2], [3], [4], [5]]
    assert pk.token_batches([4, 5], None, packed=True) == [[0, 1]]
    assert pk.even_out([[0, 1, 2, 3], [4]], 3) == [[0, 1], [2, 3], [4]]
    assert pk.even_out([[0], [1]], 3) == [[0], [1], []]  # nothing left to split: an empty part


def _models(arch: str):
    torch.manual_seed(0)
    config = arch_config(arch)
    config.vocab_size, config.pad_token_id = VOCAB, None
    policy = AutoModelForCausalLM.from_config(config).train()
    torch.manual_seed(1)
    value = ScalarModel(AutoModel.from_config(config), nn.Linear(config.hidden_size, 1), pad_token_id=None).train()
    return policy, value


def _batch(rows: int = 6, prompt: int = 5, response: int = 7, seed: int = 0):
    """[left-padded prompt | response | right padding] of uneven lengths, as a rollout holds them."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (rows, prompt + response), generator=g)
    p_len = torch.randint(1, prompt + 1, (rows,), generator=g)
    r_len = torch.randint(1, response + 1, (rows,), generator=g)
    cols = torch.arange(prompt + response)
    mask = ((cols >= prompt - p_len[:, None]) & (cols < prompt + r_len[:, None])).long()
    return ids * mask, mask, prompt


def _grads(model) -> dict:
    out = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


def _same(a: dict, b: dict):
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
def test_packed_calls_equal_padded_with_gradients(arch):
    policy, value = _models(arch)
    ids, mask, width = _batch()
    response = mask[:, width:]
    results = {}
    for packing in (False, True):
        logp, logits = response_logprobs(policy, ids, mask, width, 1.3, packing)
        (-(logp * response).sum() / response.sum()).backward()  # packed, the logits come detached (statistics)
        v = response_values(value, ids, mask, width, packing)
        ((v * response).sum() / response.sum()).backward()
        score = value.score(ids, mask, packing=packing)
        score.pow(2).mean().backward()
        with torch.no_grad():
            scored = scored_responses(policy, ids, mask, width, 1.3, packing)
        results[packing] = (logp * response, v * response, score, scored[0] * response, scored[1] * response,
                            logits.detach() * response[..., None], _grads(policy), _grads(value))
    padded, packed = results[False], results[True]
    for a, b in zip(padded[:6], packed[:6]):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
    _same(padded[6], packed[6])
    _same(padded[7], packed[7])
    assert pk.supports_packing(policy) and pk.supports_packing(value)


def test_an_architecture_that_ignores_packed_positions_runs_padded(capsys):
    """OPT offsets its learned positions from the attention mask, not the position ids: packed it would read
    the wrong positions (logits 0.1 off), so the probe says no and the call runs padded, with one line."""
    policy, _ = _models("opt")
    ids, mask, width = _batch()
    assert not pk.supports_packing(policy)
    assert "opt (sdpa attention) does not read packed sequences" in capsys.readouterr().err
    with torch.no_grad():
        a, _ = response_logprobs(policy, ids, mask, width, 1.0, False)
        b, _ = response_logprobs(policy, ids, mask, width, 1.0, True)
    torch.testing.assert_close(b * mask[:, width:], a * mask[:, width:], rtol=0, atol=1e-6)


def test_packed_rows_holding_the_pad_id_score_as_padded_and_transformers_does_not_warn():
    """GPT-2 warns "We strongly recommend passing in an `attention_mask` since your input_ids may be padded" when a
    call without a mask has the pad id in its first or last column. Packed rows hold it as a real token (pad = EOS
    here, ending every sequence) and as the dummy sequence after a row's last one (fill id 0 = pad): a false alarm,
    the scores, the values and the policy's log-probs are the padded ones."""
    torch.manual_seed(0)
    config = arch_config("gpt2")
    config.vocab_size, config.pad_token_id, config.eos_token_id = VOCAB, 0, 0
    policy = AutoModelForCausalLM.from_config(config).eval()
    value = ScalarModel(AutoModel.from_config(config), nn.Linear(config.hidden_size, 1), pad_token_id=None).eval()
    ids, mask, width = _batch()
    last = mask.cumsum(-1).argmax(-1)  # each row's last real token: EOS = pad
    ids[torch.arange(len(ids)), last] = 0
    p = pk.pack_for(value.backbone, ids, mask)
    assert (p.input_ids[:, [0, -1]] == 0).any()  # what transformers looks at: the pad id is there
    with transformers_warnings() as said, torch.no_grad():
        packed = (value.score(ids, mask, packing=True), response_values(value, ids, mask, width, packing=True),
                  response_logprobs(policy, ids, mask, width, 1.0, packing=True)[0])
    assert not [m for m in said if "strongly recommend passing in an `attention_mask`" in m], said
    with torch.no_grad():
        padded = (value.score(ids, mask), response_values(value, ids, mask, width),
                  response_logprobs(policy, ids, mask, width, 1.0)[0])
    response = mask[:, width:]
    torch.testing.assert_close(packed[0], padded[0], rtol=0, atol=1e-5)
    for a, b in zip(packed[1:], padded[1:]):
        torch.testing.assert_close(a * response, b * response, rtol=0, atol=1e-5)


def test_the_padding_warning_is_dropped_only_inside_packed_calls():
    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord(pk.PADDING_WARNING_LOGGER, logging.WARNING, __file__, 0, message, None, None)

    warning = record(pk.PADDING_WARNING + ". See https://huggingface.co/docs/transformers/troubleshooting")
    other = record("Some weights of the model checkpoint were not used")
    with transformers_warnings() as said:
        logger = logging.getLogger(pk.PADDING_WARNING_LOGGER)
        with pk.packed_rows():
            logger.handle(warning)
            logger.handle(other)
        logger.handle(warning)  # a padded call made without a mask, outside: warned
    assert said == [other.getMessage(), warning.getMessage()]
