"""A conversation or a trajectory as plain text: what the app stores beside the messages for search and snippets,
and what Label Studio and Argilla (which show strings) get.

A trajectory is a candidate that is a list of messages after the prompt: assistant turns (their `content`, and the
tools they call in `tool_calls`), tool results (role "tool"). Its turns are numbered by their index in that list,
0 first: the `turn` a flag points at.
"""

from __future__ import annotations

import json


def conversation_text(messages: list[dict]) -> str:
    """A conversation as plain text, one "role: content" block a turn (the `item.prompt` of a chat item, the
    `candidate.text` of a trajectory); a tool call reads "name(arguments)"."""
    return "\n\n".join(f"{m['role']}: {turn_text(m)}" for m in messages)


def turn_text(message: dict) -> str:
    """One turn's content, and the tools it calls, as plain text."""
    calls = [c.get("function", c) for c in message.get("tool_calls") or []]
    text = "\n".join(f"{c['name']}({arguments_text(c.get('arguments', {}))})" for c in calls)
    return "\n".join(part for part in (message["content"], text) if part)


def arguments_text(value) -> str:
    """A tool call's arguments as JSON text (they may come as an object or as a JSON string already)."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def call_name(call: dict) -> str:
    return call.get("function", call)["name"]


def call_arguments(call: dict) -> str:
    return arguments_text(call.get("function", call).get("arguments", {}))
