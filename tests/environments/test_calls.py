"""Tool calls read from a model's turn in each template family's format (environments/calls.py)."""

import json

import pytest

from rlhfkit.environments.calls import ToolCall, answer_content, parse_tool_calls


def test_qwen_blocks_are_read_in_order_with_the_text_around_them():
    text = ('Let me look.\n<tool_call>\n{"name": "lookup", "arguments": {"key": "a"}}\n</tool_call>\n'
            '<tool_call>\n{"name": "add", "arguments": "{\\"x\\": 1}"}\n</tool_call>')
    assert parse_tool_calls(text) == [ToolCall("lookup", {"key": "a"}), ToolCall("add", {"x": 1})]
    assert answer_content(text) == "Let me look."


def test_llama_json_turn_and_mistral_list_are_calls():
    llama = '<|python_tag|>{"name": "lookup", "parameters": {"key": "b"}}'
    assert parse_tool_calls(llama) == [ToolCall("lookup", {"key": "b"})]
    mistral = '[TOOL_CALLS] [{"name": "lookup", "arguments": {"key": "a"}}, {"name": "now", "arguments": {}}]'
    assert parse_tool_calls(mistral) == [ToolCall("lookup", {"key": "a"}), ToolCall("now", {})]
    assert answer_content(llama) == "" and answer_content(mistral) == ""


@pytest.mark.parametrize("text", ["The answer is 16.", '{"answer": 16}', "I would call <tool> but no."])
def test_a_turn_without_a_call_is_an_answer(text):
    assert parse_tool_calls(text) == []
    assert answer_content(text) == text


@pytest.mark.parametrize("text, message", [
    ('<tool_call>\n{"name": "lookup", "arguments": {"key": \n</tool_call>', "not valid JSON"),
    ("<tool_call>\n[1, 2]\n</tool_call>", "a JSON object with a name"),
    ('<tool_call>\n{"name": "lookup", "arguments": [1]}\n</tool_call>', "must be a JSON object"),
    ('<tool_call>\n{"name": "lookup", "arguments": {"key": "a"}}', None),  # cut before </tool_call>: still read
    ("[TOOL_CALLS] [{oops", "not valid JSON"),
])
def test_a_call_that_cannot_be_read_carries_its_error(text, message):
    calls = parse_tool_calls(text)
    assert len(calls) == 1
    if message is None:
        assert calls[0] == ToolCall("lookup", {"key": "a"})
    else:
        assert calls[0].error.startswith("error: ") and message in calls[0].error


def test_a_call_is_written_as_transformers_reads_tool_calls():
    part = ToolCall("lookup", {"key": "a"}).as_message_part()
    assert part == {"type": "function", "function": {"name": "lookup", "arguments": {"key": "a"}}}
    assert json.loads(json.dumps(part)) == part
