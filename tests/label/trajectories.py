"""Trajectories to judge (issue 35, item 5): K multi-turn answers with tool calls and tool results, as `rlhf sample`
or an agent's rollouts would write them for `rlhf label import`."""

from __future__ import annotations

import json
from pathlib import Path

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city today.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TOOLS = [WEATHER]


def call(city: str) -> dict:
    return {"role": "assistant", "content": "",
            "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": city}}}]}


def result(text: str) -> dict:
    return {"role": "tool", "name": "get_weather", "content": text}


def answer(text: str) -> dict:
    return {"role": "assistant", "content": text}


def trajectories(city: str) -> list[list[dict]]:
    """K = 3: the right call and answer (3 turns), a call for the wrong city (its turn 0 is the one to flag),
    and no call at all (1 turn)."""
    return [
        [call(city), result(f"{city}: 22 C, sunny"), answer(f"It is 22 C and sunny in {city}.")],
        [call("Oslo"), result("Oslo: 3 C, snow"), answer(f"It is 3 C and snowing in {city}.")],
        [answer("I cannot look up the weather.")],
    ]


def write_trajectories(path: Path, cities=("Paris", "Lima")) -> Path:
    rows = [{"id": f"w{i}", "prompt": [{"role": "user", "content": f"What is the weather in {c}?"}], "tools": TOOLS,
             "completions": [{"text": t, "source": f"policy-{j}"} for j, t in enumerate(trajectories(c))]}
            for i, c in enumerate(cities)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
