"""Multi-turn SFT with tool calls and tool results: the loss falls on the assistant's turns alone — its tool-call
turns included — for every chat template the matrix covers (issue 35, item 1).

Each expected mask is written by hand as the pieces of the rendered text, each marked trained (1) or not (0):
the ids of the pieces, encoded one by one, must be the ids `conversation_ids` returns, and the mask theirs. The
first piece (the template's system turn, the tool list and the user's question, up to the generation prompt) is
never trained; the rest is spelled out for each template.

Templates: Qwen2.5-Instruct's and Llama-3.2-Instruct's own (tests/fixtures/chat_templates; both write structured
`tool_calls` and tool messages), the four setups of tests/tokenizers_zoo.py (plain role templates: the call is the
assistant's content, the result a `tool` turn), and Gemma's (google/gemma-7b-it, gemma-2), which refuses any role
but user/assistant: a conversation with a tool message is refused in one line, and so is a template that would
drop the row's `tools` or an assistant's `tool_calls`."""

import json

import pytest

from rlhfkit.data.chat import conversation_ids, encode_text, render_text
from rlhfkit.data.formats import read_sft
from rlhfkit.data.schemas import Conversation
from rlhfkit.errors import UserError
from rlhfkit.train.sft import tokenize_demos
from tests.tokenizers_zoo import NEOX_TEMPLATE, build_tokenizer, real_template

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city today.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
USER = {"role": "user", "content": "What is the weather in Paris?"}
CALL = {"role": "assistant", "tool_calls": [{"type": "function",
                                             "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}
RESULT = {"role": "tool", "name": "get_weather", "content": "sunny"}
ANSWER = {"role": "assistant", "content": "It is sunny."}
CALL_TEXT = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
CALL_IN_CONTENT = {"role": "assistant", "content": CALL_TEXT}  # templates without a tool_calls branch

# Gemma's template as google/gemma-7b-it and gemma-2-it ship it (tokenizer_config.json's chat_template).
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}")


def tokenizer(name: str):
    if name == "qwen2_5":
        tok = build_tokenizer("chatml")
        tok.chat_template = real_template("qwen2_5")
    elif name == "llama3_2":  # the date it writes is fixed (tokenizers_zoo.FROZEN_DATE), not today's
        tok = build_tokenizer("llama3")
        tok.chat_template = real_template("llama3_2")
    elif name == "gemma":
        tok = build_tokenizer("mistral")  # a BOS-adding tokenizer; the template is what is tested
        tok.chat_template = GEMMA_TEMPLATE
    else:
        tok = build_tokenizer(name)
        if name == "neox":
            tok.chat_template = NEOX_TEMPLATE
    return tok


# The rest of each rendering after the prompt's generation prompt, by hand: (text, trained).
AFTER_PROMPT = {
    "qwen2_5": [
        (CALL_TEXT + "<|im_end|>", 1),
        ("\n<|im_start|>user\n<tool_response>\nsunny\n</tool_response><|im_end|>\n<|im_start|>assistant\n", 0),
        ("It is sunny.<|im_end|>", 1),
        ("\n", 0)],
    "llama3_2": [
        ('{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|>', 1),
        ('<|start_header_id|>ipython<|end_header_id|>\n\n"sunny"<|eot_id|>'
         "<|start_header_id|>assistant<|end_header_id|>\n\n", 0),
        ("It is sunny.<|eot_id|>", 1)],
    "chatml": [
        (CALL_TEXT + "<|im_end|>", 1),
        ("\n<|im_start|>tool\nsunny<|im_end|>\n<|im_start|>assistant\n", 0),
        ("It is sunny.<|im_end|>", 1),
        ("\n", 0)],
    "llama3": [
        (CALL_TEXT + "<|eot_id|>", 1),
        ("<|start_header_id|>tool<|end_header_id|>\n\nsunny<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
         "\n\n", 0),
        ("It is sunny.<|eot_id|>", 1)],
    # Mistral v0.1's [INST] template has no tool turn: it writes a tool message like an assistant's reply
    # (" sunny</s>"), and that is not the model's to learn.
    "mistral": [
        (" " + CALL_TEXT + "</s>", 1),
        (" sunny</s>", 0),
        (" It is sunny.</s>", 1)],
    "neox": [
        (CALL_TEXT + "<|endoftext|>", 1),
        ("\n<|tool|>\nsunny<|endoftext|>\n<|assistant|>\n", 0),
        ("It is sunny.<|endoftext|>", 1),
        ("\n", 0)],
}
STRUCTURED = ("qwen2_5", "llama3_2")  # the templates with a tool_calls branch and a tool list


def conversation(name: str):
    call = CALL if name in STRUCTURED else CALL_IN_CONTENT
    messages = [USER, {**call, "content": call.get("content", "")}, RESULT, ANSWER]
    return Conversation(messages, [WEATHER] if name in STRUCTURED else None)


def by_hand(tok, name: str) -> tuple[list[int], list[int]]:
    messages = conversation(name)
    head = render_text(tok, [USER], True, messages.tools)
    pieces = [(head, 0)] + AFTER_PROMPT[name]
    assert "".join(text for text, _ in pieces) == render_text(tok, list(messages), False, messages.tools)
    ids, mask = [], []
    for text, trained in pieces:
        piece = encode_text(tok, text)
        ids, mask = ids + piece, mask + [trained] * len(piece)
    return ids, mask


@pytest.mark.parametrize("name", list(AFTER_PROMPT))
def test_the_loss_falls_on_the_tool_call_and_the_answer_and_not_on_the_tool_result(name):
    tok = tokenizer(name)
    assert conversation_ids(tok, conversation(name)) == by_hand(tok, name)


@pytest.mark.parametrize("name", STRUCTURED)
def test_the_tool_list_is_in_the_untrained_prompt(name):
    tok = tokenizer(name)
    ids, mask = conversation_ids(tok, conversation(name))
    untrained = tok.decode([t for t, m in zip(ids, mask) if not m], skip_special_tokens=False)
    assert '"name": "get_weather"' in untrained and "The weather in a city today." in untrained


def test_a_trl_row_whose_tool_call_has_no_content_trains_on_the_call(tmp_path):
    """TRL's conversational rows write an assistant tool call with no `content` (or null) and its arguments as
    an object or a JSON string; the template writes the call."""
    data = tmp_path / "sft.jsonl"
    call = {"role": "assistant", "tool_calls": [{"type": "function", "function": {
        "name": "get_weather", "arguments": json.dumps({"city": "Paris"})}}]}
    rows = [{"messages": [USER, call, RESULT, ANSWER], "tools": [WEATHER]},
            {"messages": [USER, {**call, "content": None}, RESULT, ANSWER], "tools": json.dumps([WEATHER])}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    tok = tokenizer("qwen2_5")
    expected = by_hand(tok, "qwen2_5")
    assert [tuple(r) for r in tokenize_demos(tok, read_sft(data), 4096)] == [expected, expected]


@pytest.mark.parametrize("calls, message", [
    ([], "tool_calls must be a non-empty list"),
    ([{"function": {"arguments": {}}}], "tool_calls[0] must be {function: {name, arguments}} with a name"),
    ([{"function": {"name": "f", "arguments": 3}}], "arguments must be an object or a JSON string of one"),
    ([{"function": {"name": "f", "arguments": "{not json"}}], "tool_calls[0] (f): arguments are a string but not JSON"),
])
def test_malformed_tool_calls_are_one_line_naming_the_row(calls, message, tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps({"messages": [USER, {"role": "assistant", "tool_calls": calls}, ANSWER]}) + "\n",
                    encoding="utf-8")
    with pytest.raises(UserError) as err:
        read_sft(data)
    assert str(err.value).startswith(f"{data}:1: messages[1]: ") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_gemma_cannot_render_a_tool_message_and_says_so_in_one_line():
    with pytest.raises(UserError, match=r"cannot render tool messages \(role 'tool'\): Conversation roles must "
                                        "alternate") as err:
        conversation_ids(tokenizer("gemma"), [USER, CALL_IN_CONTENT, RESULT, ANSWER])
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("messages, tools, what", [
    ([USER, ANSWER], [WEATHER], "does not render tools"),           # Gemma has no tool list
    ([USER, {**CALL, "content": ""}], None, "does not render tool calls"),  # nor a tool_calls branch
])
def test_a_template_that_would_drop_tools_or_calls_is_refused(messages, tools, what):
    for name in ("gemma", "chatml"):
        with pytest.raises(UserError, match=what):
            conversation_ids(tokenizer(name), Conversation(messages, tools))
