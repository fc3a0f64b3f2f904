"""The tool calls in a model's turn, in the formats the chat templates of tests/fixtures teach their models:

- Qwen2.5 / Qwen3 / Hermes:  <tool_call>\\n{"name": "f", "arguments": {...}}\\n</tool_call>   (one block per call)
- Llama 3.1-3.3:             {"name": "f", "parameters": {...}}      the whole turn (after an optional <|python_tag|>)
- Mistral (v0.3 templates):  [TOOL_CALLS] [{"name": "f", "arguments": {...}}, ...]

A turn without any of these is an answer: the trajectory ends there. A call that is marked as one but cannot be read
(broken JSON, no name) is a `ToolCall` with an `error`: the environment answers it with that error as a tool message,
so the model learns from it and the run goes on. Pure Python: no tokenizer, no model.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

TOOL_CALL_BLOCK = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)
MISTRAL_MARK = "[TOOL_CALLS]"
LLAMA_TAG = "<|python_tag|>"


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict = field(default_factory=dict)
    error: str | None = None      # a call that could not be read: what the tool message tells the model

    def as_message_part(self) -> dict:
        """The call as an assistant message's `tool_calls` entry (TRL's and transformers' form)."""
        return {"type": "function", "function": {"name": self.name, "arguments": self.arguments}}


def read_call(obj, source: str) -> ToolCall:
    """One call from a decoded JSON value: {"name", "arguments" | "parameters"}, the arguments an object or a JSON
    string of one (OpenAI's form)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return ToolCall("?", {}, f"error: a tool call is a JSON object with a name, got {source.strip()[:200]!r}")
    arguments = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            pass
    if not isinstance(arguments, dict):
        return ToolCall(obj["name"], {}, f"error: the arguments of {obj['name']} must be a JSON object, got "
                                         f"{json.dumps(arguments)[:200]}")
    return ToolCall(obj["name"], arguments)


def parse_json(text: str):
    """(the JSON value, None) or (None, the error as a tool message would say it)."""
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, (f"error: the tool call is not valid JSON ({exc.msg} at character {exc.pos}): "
                      f"{text.strip()[:200]!r}")


def parse_tool_calls(text: str) -> list[ToolCall]:
    """The calls in one turn's text, in order; [] when the turn is an answer (module docstring)."""
    if "<tool_call>" in text:
        calls = []
        for body in TOOL_CALL_BLOCK.findall(text):
            obj, error = parse_json(body)
            calls.append(ToolCall("?", {}, error) if error else read_call(obj, body))
        return calls
    if MISTRAL_MARK in text:
        body = text.split(MISTRAL_MARK, 1)[1]
        obj, error = parse_json(body)
        if error:
            return [ToolCall("?", {}, error)]
        return [read_call(o, body) for o in (obj if isinstance(obj, list) else [obj])]
    stripped = text.strip().removeprefix(LLAMA_TAG).strip()
    if stripped.startswith("{") and stripped.endswith("}"):
        obj, error = parse_json(stripped)
        if error is None and isinstance(obj, dict) and "name" in obj and ("parameters" in obj or "arguments" in obj):
            return [read_call(obj, stripped)]
    return []


def answer_content(text: str) -> str:
    """The turn's text without its tool calls: what an assistant message's `content` holds beside `tool_calls`."""
    if "<tool_call>" in text:
        return TOOL_CALL_BLOCK.sub("", text).strip()
    if MISTRAL_MARK in text:
        return text.split(MISTRAL_MARK, 1)[0].strip()
    return "" if parse_tool_calls(text) else text
