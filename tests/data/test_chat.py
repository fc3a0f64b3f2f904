"""Token ids as the model's own inference makes them (data/chat.py), in the four special-token setups of issue 16."""

import json
from datetime import datetime

import pytest
from transformers.utils import chat_template_utils

from rlhfkit.data.chat import (
    Truncation,
    completion_ids,
    conversation_ids,
    end_of_turn_id,
    example_ids,
    prompt_ids,
    set_chat_template,
    stop_ids,
)
from rlhfkit.data.collate import encode, encode_pair
from rlhfkit.data.formats import read_preferences, read_sft
from rlhfkit.data.pairs import preference_groups
from rlhfkit.errors import UserError
from rlhfkit.train.dpo import tokenize as dpo_tokenize
from rlhfkit.train.sft import tokenize_demos
from tests.tokenizers_zoo import (
    END_OF_TURN,
    FROZEN_DATE,
    SETUPS,
    build_tokenizer,
    conversations,
    real_template,
    write_neox_template,
)


@pytest.fixture(params=SETUPS)
def setup_tokenizer(request, tmp_path):
    tok = build_tokenizer(request.param)
    if request.param == "neox":  # no template of its own: the one users pass with --chat-template
        set_chat_template(tok, write_neox_template(tmp_path / "neox.jinja"))
    return request.param, tok


def prompts_of(conv):
    """Every prefix of a conversation that ends with a user turn (what generation is asked to continue)."""
    return [conv[:i] for i in range(1, len(conv) + 1) if conv[i - 1]["role"] == "user"]


def test_rendered_prompts_equal_apply_chat_template(setup_tokenizer):
    name, tok = setup_tokenizer
    for conv in conversations():
        for prompt in prompts_of(conv):
            want = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False)
            got = prompt_ids(tok, prompt)
            assert got == list(want)
            if tok.bos_token_id is not None and tok.bos_token_id != tok.eos_token_id:
                assert got.count(tok.bos_token_id) == 1 and got[0] == tok.bos_token_id  # BOS once, not twice


def test_string_prompts_are_encoded_as_inference_does(setup_tokenizer):
    name, tok = setup_tokenizer
    text = "The cat reads the book?"
    assert prompt_ids(tok, text) == tok(text)["input_ids"]
    if name in ("llama3", "mistral"):
        assert prompt_ids(tok, text)[0] == tok.bos_token_id
    else:
        assert prompt_ids(tok, text) == tok(text, add_special_tokens=False)["input_ids"]


def test_end_of_turn_is_found_from_the_template(setup_tokenizer):
    name, tok = setup_tokenizer
    assert end_of_turn_id(tok) == tok.convert_tokens_to_ids(END_OF_TURN[name])
    assert end_of_turn_id(tok) in stop_ids(tok, None, conversational=True)


def assistant_spans(tok, conv, eot: str):
    """Character spans of the rendered conversation that belong to assistant turns: from the end of the prompt
    rendered before the turn (with the generation prompt) through the end-of-turn token after its content."""
    text = tok.apply_chat_template(conv, tokenize=False)
    spans, search = [], 0
    for i, m in enumerate(conv):
        if m["role"] != "assistant":
            continue
        head = tok.apply_chat_template(conv[:i], add_generation_prompt=True, tokenize=False)
        assert text.startswith(head)
        start = text.index(m["content"], max(search, len(head)))
        end = text.index(eot, start + len(m["content"])) + len(eot)
        spans.append((len(head), end))
        search = end
    return text, spans


def test_sft_loss_mask_covers_exactly_the_assistant_tokens(setup_tokenizer):
    name, tok = setup_tokenizer
    eot = tok.convert_tokens_to_ids(END_OF_TURN[name])
    for conv in conversations():
        ids, mask = conversation_ids(tok, conv)
        text, spans = assistant_spans(tok, conv, END_OF_TURN[name])
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        assert ids == enc["input_ids"] == list(tok.apply_chat_template(conv, tokenize=True, return_dict=False))
        want = [int(any(a <= s and e <= b for a, b in spans)) for s, e in enc["offset_mapping"]]
        assert mask == want
        # each assistant turn is one run of loss tokens ending on its end-of-turn token
        assert sum(1 for t, m in zip(ids, mask) if m and t == eot) == sum(m["role"] == "assistant" for m in conv)
        starts = [i for i in range(len(mask)) if mask[i] and (i == 0 or not mask[i - 1])]
        ends = [i for i in range(len(mask)) if mask[i] and (i + 1 == len(mask) or not mask[i + 1])]
        assert len(starts) == sum(m["role"] == "assistant" for m in conv)
        assert all(ids[i] == eot for i in ends)


def test_a_user_token_with_loss_fails_the_mask_check(setup_tokenizer):
    """The check above can fail: one user token flipped into the loss breaks it."""
    name, tok = setup_tokenizer
    conv = conversations()[0]
    ids, mask = conversation_ids(tok, conv)
    text, spans = assistant_spans(tok, conv, END_OF_TURN[name])
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    user = text.index(conv[1]["content"])
    k = next(i for i, (s, e) in enumerate(enc["offset_mapping"]) if s >= user)
    bad = list(mask)
    bad[k] = 1
    want = [int(any(a <= s and e <= b for a, b in spans)) for s, e in enc["offset_mapping"]]
    assert mask == want and bad != want


def test_conversational_completion_ends_at_the_end_of_turn(setup_tokenizer):
    name, tok = setup_tokenizer
    conv = conversations()[0]
    prompt, answer = conv[:-1], conv[-1]["content"]
    head = prompt_ids(tok, prompt)
    tail = completion_ids(tok, prompt, answer)
    eot = tok.convert_tokens_to_ids(END_OF_TURN[name])
    assert tail[-1] == eot and eot not in tail[:-1]
    full = list(tok.apply_chat_template(conv, tokenize=True, return_dict=False))
    assert head + tail == full[:len(head) + len(tail)]  # ChatML/NeoX: the template's trailing "\n" is dropped
    assert completion_ids(tok, prompt, [conv[-1]]) == tail  # a str completion is one assistant message
    assert completion_ids(tok, prompt, answer, finished=False) == tail[:-1]
    ids, mask = example_ids(tok, {"prompt": prompt, "completion": answer}, Truncation(512))
    assert ids == head + tail and mask == [0] * len(head) + [1] * len(tail)


def test_string_completion_gets_eos_and_no_special_tokens(setup_tokenizer):
    name, tok = setup_tokenizer
    ids, mask = example_ids(tok, {"prompt": "The cat", "completion": " reads the book."}, Truncation(512))
    body = tok(" reads the book.", add_special_tokens=False)["input_ids"]
    assert ids == tok("The cat")["input_ids"] + body + [tok.eos_token_id]
    assert mask == [0] * len(tok("The cat")["input_ids"]) + [1] * (len(body) + 1)


def test_conversational_data_without_a_template_is_one_line(tmp_path):
    tok = build_tokenizer("neox")
    tok.name_or_path = str(tmp_path / "model")
    with pytest.raises(UserError) as err:
        prompt_ids(tok, conversations()[0][:2])
    assert str(tmp_path / "model") in str(err.value) and "--chat-template" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_template_that_is_not_prefix_stable_is_refused():
    tok = build_tokenizer("chatml")
    # renders the generation prompt differently from the assistant turn that follows it
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant:\n{% endif %}")
    with pytest.raises(UserError, match="not prefix-stable"):
        completion_ids(tok, conversations()[0][:2], "The cat likes the book.")


def test_world_tokenizer_ids_are_unchanged(world_tokenizer):
    """The toy world's word-level tokenizer adds no special tokens: every id is what it was before chat.py."""
    record = {"prompt": "list two fruits .", "completion": "apple pear"}
    assert prompt_ids(world_tokenizer, record["prompt"]) == encode(world_tokenizer, record["prompt"])
    for max_length in (64, 5, 3):
        old = encode_pair(world_tokenizer, encode(world_tokenizer, record["prompt"]), record["completion"], max_length)
        assert example_ids(world_tokenizer, record, Truncation(max_length)) == old


def test_truncation_keeps_a_leading_bos_and_counts_or_refuses():
    tok = build_tokenizer("llama3")
    record = {"prompt": "The cat reads the book? " * 5, "completion": "Yes."}
    truncation = Truncation(12)
    ids, mask = example_ids(tok, record, truncation)
    assert len(ids) == 12 and ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert truncation.cut == 1
    with pytest.raises(UserError, match=r"demos.jsonl: record 3: .* longer than max_length 12"):
        example_ids(tok, record, Truncation(12, "error"), "demos.jsonl: record 3")


def test_a_conversation_whose_template_is_not_prefix_stable_is_refused():
    tok = build_tokenizer("chatml")
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant:\n{% endif %}")
    with pytest.raises(UserError, match="not prefix-stable"):
        conversation_ids(tok, conversations()[0])


@pytest.fixture
def gpt2_rule_llama3():
    """Byte-level BPE with GPT-2's pre-tokenizer rule and a "\\n\\n" token, under Llama 3.2's own template: the
    generation prompt's "\\n\\n" is one token at the end of a prompt, two before the answer's first word."""
    tok = build_tokenizer("llama3", paragraphs=True)
    tok.chat_template = real_template("llama3_2")
    return tok


class _Clock:
    """Stands in for `datetime` in transformers' chat-template module, whose `strftime_now` reads `datetime.now()`."""

    def __init__(self, at: datetime):
        self.at = at

    def now(self, tz=None) -> datetime:
        return self.at


def test_llama3_2_renders_the_date_it_is_given_on_every_day(gpt2_rule_llama3, monkeypatch):
    """The Llama 3.2 fixture dates its system turn with today unless given `date_string`: renderings either side of
    midnight (a prompt, then prompt + answer) would differ. The tests' template is given one date; the bare text
    shows that the clock does reach the template."""
    prompt = conversations()[0][:-1]
    bare = build_tokenizer("llama3", paragraphs=True)
    bare.chat_template = real_template("llama3_2", date_string=None)
    renders = {"tests": [], "bare": []}
    for at in (datetime(2030, 12, 31, 23, 59, 59), datetime(2031, 1, 1, 0, 0, 1)):
        monkeypatch.setattr(chat_template_utils, "datetime", _Clock(at))
        for name, tok in (("tests", gpt2_rule_llama3), ("bare", bare)):
            renders[name].append((tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True),
                                  prompt_ids(tok, prompt)))
    assert "Today Date: 31 Dec 2030\n" in renders["bare"][0][0] and "Today Date: 01 Jan 2031\n" in renders["bare"][1][0]
    assert renders["tests"][0] == renders["tests"][1]
    assert f"Today Date: {FROZEN_DATE}\n" in renders["tests"][0][0]


def test_gpt2_rule_under_a_llama3_template_trains_on_the_ids_generation_produces(gpt2_rule_llama3, tmp_path):
    tok, eot = gpt2_rule_llama3, "<|eot_id|>"
    pairs = [(conv[:-1], conv[-1]["content"]) for conv in conversations()]
    for prompt, answer in pairs:
        head = prompt_ids(tok, prompt)
        assert tok.convert_ids_to_tokens(head[-1]) == "ĊĊ"  # what generation is given: one "\n\n" token
        full = tok.apply_chat_template(prompt + [{"role": "assistant", "content": answer}], return_dict=False)
        assert full[:len(head)] != head  # the whole rendering splits it in two: no id prefix to cut off
        target = completion_ids(tok, prompt, answer, True, head)
        assert target == tok(answer + eot, add_special_tokens=False)["input_ids"]  # what generation produces after it
    # through the readers and the trainers' tokenization: SFT's prompt-completion and messages rows, and DPO
    demos = tmp_path / "demos.jsonl"
    demos.write_text("".join(json.dumps({"prompt": p, "completion": a}) + "\n" for p, a in pairs), encoding="utf-8")
    for (ids, mask), (prompt, answer) in zip(tokenize_demos(tok, read_sft(demos), 1024), pairs):
        head = prompt_ids(tok, prompt)
        assert ids[:len(head)] == head and mask == [0] * len(head) + [1] * (len(ids) - len(head))
        assert tok.decode(ids[len(head):]) == answer + eot
    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(json.dumps({"messages": c}) + "\n" for c in conversations()), encoding="utf-8")
    for (ids, mask), conv in zip(tokenize_demos(tok, read_sft(chats), 1024), conversations()):
        trained = [t for t, m in zip(ids, mask) if m]
        answers = [m["content"] for m in conv if m["role"] == "assistant"]
        assert trained == tok("".join(a + eot for a in answers), add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == tok.apply_chat_template(conv, tokenize=False)  # the same text, turn by turn
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text("".join(json.dumps({"prompt": p, "chosen": a, "rejected": "No."}) + "\n" for p, a in pairs),
                     encoding="utf-8")
    groups = preference_groups(*read_preferences(prefs))
    for g, (prompt, answer) in zip(dpo_tokenize(tok, groups, 1024), pairs):
        (chosen, _), (rejected, _) = g["rows"]
        head = prompt_ids(tok, prompt)
        assert chosen[:len(head)] == head == rejected[:len(head)]
        assert tok.decode(chosen[len(head):]) == answer + eot and tok.decode(rejected[len(head):]) == "No." + eot
