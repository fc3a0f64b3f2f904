"""Loading and saving as real checkpoints ship: the pad rule, EOS lists, dtype, tokenizer files; generation stops at
every stop id and decodes without stripping (issue 16)."""

import json

import pytest
import torch
from safetensors import safe_open

from rlhfkit.data.chat import stop_ids
from rlhfkit.errors import UserError
from rlhfkit.generation import decode_responses, generate
from rlhfkit.models.loading import checkpoint_dtype, load_causal_lm, load_tokenizer, position_limit, save_dtype
from rlhfkit.models.lora import save_model
from tests.tokenizers_zoo import SETUPS, build_tokenizer, conversations, read_generation_eos, save_tiny_model


@pytest.mark.parametrize("setup", SETUPS)
def test_pad_rule_reuses_a_special_token_and_never_grows_the_vocabulary(setup, tmp_path):
    path = save_tiny_model(tmp_path / "m", setup)
    before = build_tokenizer(setup)
    tok = load_tokenizer(path)
    model = load_causal_lm(path, tok)
    assert len(tok) == len(before)
    assert model.get_input_embeddings().num_embeddings == len(before)
    assert tok.pad_token_id is not None
    if before.pad_token_id is not None:
        assert tok.pad_token_id == before.pad_token_id  # kept (mistral: pad == EOS stays)
    else:
        assert tok.pad_token_id == tok.eos_token_id  # no unk in these setups: EOS serves as pad
    save_model(tmp_path / "out", model, tok)
    assert load_tokenizer(tmp_path / "out").pad_token_id == tok.pad_token_id


def test_generation_config_eos_list_is_kept_and_saved_as_a_list(tmp_path):
    path = save_tiny_model(tmp_path / "m", "llama3", "llama")
    tok = load_tokenizer(path)
    model = load_causal_lm(path, tok)
    eos_list = read_generation_eos(path)
    assert isinstance(eos_list, list) and len(eos_list) == 2
    assert model.generation_config.eos_token_id == eos_list
    assert set(eos_list) <= stop_ids(tok, model)
    save_model(tmp_path / "out", model, tok)
    assert read_generation_eos(tmp_path / "out") == eos_list


@pytest.mark.parametrize("option, want", [("auto", torch.bfloat16), ("float32", torch.float32),
                                          ("float16", torch.float16)])
def test_saved_model_keeps_the_checkpoint_dtype_unless_told(option, want, tmp_path):
    path = save_tiny_model(tmp_path / "m", "chatml", "llama", dtype=torch.bfloat16)
    assert checkpoint_dtype(path) == torch.bfloat16
    tok = load_tokenizer(path)
    model = load_causal_lm(path, tok)
    assert next(model.parameters()).dtype == torch.float32  # training weights stay float32
    save_model(tmp_path / "out", model, tok, dtype=save_dtype(option, path))
    assert next(model.parameters()).dtype == torch.float32
    with safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {want}
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == str(want).removeprefix("torch.")


def test_model_directory_without_tokenizer_files_is_one_whole_line(tmp_path):
    path = save_tiny_model(tmp_path / "m", "chatml")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (path / name).unlink(missing_ok=True)
    with pytest.raises(UserError) as err:
        load_tokenizer(path)
    message = str(err.value)
    assert str(path) in message and "no tokenizer files" in message and "\n" not in message
    assert message.endswith("there too")


def test_position_limit_of_gpt2_and_llama(tmp_path):
    gpt2 = load_causal_lm(save_tiny_model(tmp_path / "g", "neox", "gpt2"))
    llama = load_causal_lm(save_tiny_model(tmp_path / "l", "llama3", "llama"))
    assert position_limit(gpt2) == 128 and position_limit(llama.config) == 128


def test_generation_stops_at_the_end_of_turn_and_keeps_it(tmp_path):
    """A conversational prompt: generation stops at <|eot_id|> (not the tokenizer's EOS), keeps it in the
    response, and `finished` is set; the prompt is the template's rendering."""
    path = save_tiny_model(tmp_path / "m", "llama3", "llama")
    tok = load_tokenizer(path)
    model = load_causal_lm(path, tok).eval()
    eot = tok.convert_tokens_to_ids("<|eot_id|>")

    def likely_eot(module, inputs, output):
        output[..., eot] += 4.0
        return output
    model.lm_head.register_forward_hook(likely_eot)
    prompts = [c[:2] if c[0]["role"] == "system" else c[:1] for c in conversations()] * 4
    s = generate(model, tok, prompts, max_new_tokens=16, generator=torch.Generator().manual_seed(0))
    want = tok.apply_chat_template(prompts[0], add_generation_prompt=True, tokenize=True, return_dict=False)
    row = s.prompt_ids[0][s.prompt_mask[0].bool()].tolist()
    assert row == list(want)
    assert s.finished.any()
    for ids, mask, done in zip(s.response_ids.tolist(), s.response_mask.tolist(), s.finished.tolist()):
        n = sum(mask)
        if done:
            assert ids[n - 1] == eot and eot not in ids[:n - 1]
        else:
            assert n == 16 and eot not in ids[:n]


def test_decoded_text_is_never_stripped_or_respaced():
    tok = build_tokenizer("neox")
    ids = tok("  The cat reads the book .  \n", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    text = decode_responses(tok, torch.tensor([ids + [tok.eos_token_id]]), torch.tensor([[1] * len(ids) + [0]]),
                            {tok.eos_token_id})[0]
    assert text == "  The cat reads the book .  \n"
    assert tok(text, add_special_tokens=False)["input_ids"] == ids[:-1]
