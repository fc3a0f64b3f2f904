"""A scripted environment and a tiny Qwen2 that has learned to use it, for the multi-turn tests (issue 35).

`Lookup` answers `lookup(key)` from a fixed table. `CONVERSATION` is the 3-turn trajectory of its tests: the policy
looks up "a", then "b", then answers their sum; `policy_that_calls_tools(path)` saves a tiny random Qwen2 (tests/
arch_zoo.py) with the chatml tokenizer (tests/tokenizers_zoo.py) and Qwen2.5-Instruct's real chat template, trained on
that conversation until greedy decoding writes its three assistant turns — a real model, sampled by the real engine,
whose turns are known in advance."""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from rlhfkit.data.chat import conversation_ids
from rlhfkit.data.schemas import Conversation
from rlhfkit.environments import load_environment
from rlhfkit.models.loading import load_tokenizer
from tests.arch_zoo import arch_config
from tests.tokenizers_zoo import real_template, save_tiny_model

TABLE = {"a": "7", "b": "9"}


class Lookup:
    """The scripted environment: a table lookup, a per-turn reward (0.5 for a turn whose lookups all succeeded) and
    a final reward (1 when the last turn says the sum)."""

    def reset(self, **row) -> str | None:
        self.looked_up, self.turn_ok, self.row = [], True, row
        return None

    def lookup(self, key: str) -> str:
        """Look a key up in the table.

        Args:
            key: the key to look up
        """
        self.looked_up.append(key)
        return TABLE[key]

    def get_turn_reward(self) -> float:
        return 0.5 if self.looked_up else 0.0

    def get_reward(self) -> float:
        return 1.0 if len(self.looked_up) == 2 else 0.0


class Raising(Lookup):
    """`lookup` raises."""

    def lookup(self, key: str) -> str:
        """Look a key up in the table.

        Args:
            key: the key to look up
        """
        raise KeyError(f"no such key: {key}")


class Stalling(Lookup):
    """`lookup` waits for `release` (set by the test once the timeout has answered)."""

    release = threading.Event()

    def lookup(self, key: str) -> str:
        """Look a key up in the table.

        Args:
            key: the key to look up
        """
        self.release.wait()
        return TABLE[key]


def answered(prompts, completions, turn, **kwargs) -> list[float]:
    """A reward function per turn (--turn-reward-fn): 0.25 for a turn that answers (calls no tool)."""
    return [0.0 if c[0].get("tool_calls") else 0.25 for c in completions]


def call(key: str) -> str:
    """An assistant turn that calls lookup(key), as Qwen2.5 writes a tool call."""
    return "<tool_call>\n" + json.dumps({"name": "lookup", "arguments": {"key": key}}) + "\n</tool_call>"


PROMPT = [{"role": "system", "content": "Use the tool."}, {"role": "user", "content": "What is a + b?"}]
ANSWER = "16"
CONVERSATION = PROMPT + [
    {"role": "assistant", "content": call("a")}, {"role": "tool", "name": "lookup", "content": TABLE["a"]},
    {"role": "assistant", "content": call("b")}, {"role": "tool", "name": "lookup", "content": TABLE["b"]},
    {"role": "assistant", "content": ANSWER},
]


LEARNED = math.log(0.9)  # each assistant token's log-prob once learned: greedy writes it, as does sampling at T 0.1


def policy_that_calls_tools(path: Path, steps: int = 600, config=None) -> Path:
    """A tiny Qwen2 in `path` that writes CONVERSATION's three assistant turns after its prompt (with Lookup's tool
    schema in the system turn), greedily or at a low temperature: trained on the conversation (loss on the assistant
    turns, `conversation_ids`) until each of their tokens has probability 0.9. `config`: another tiny Qwen2 shape
    (default tests/arch_zoo.py's)."""
    config = config or arch_config("qwen2")
    config.max_position_embeddings = 1024  # Qwen2.5's tool prompt alone is ~530 tokens of the tiny vocabulary
    save_tiny_model(path, "chatml", config=config)
    tokenizer = load_tokenizer(path)
    tokenizer.chat_template = real_template("qwen2_5")
    tokenizer.save_pretrained(path)
    ids, mask = conversation_ids(tokenizer, with_tools(CONVERSATION))
    ids, mask = torch.tensor([ids]), torch.tensor([mask])
    model = AutoModelForCausalLM.from_pretrained(path)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    targets, weights = ids[:, 1:], mask[:, 1:].bool()
    for _ in range(steps):
        logits = model(input_ids=ids).logits[:, :-1]
        logp = -torch.nn.functional.cross_entropy(logits[weights], targets[weights], reduction="none")
        if bool((logp > LEARNED).all()):
            break
        loss = -logp.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    else:
        raise AssertionError("the tiny Qwen2 did not learn the conversation")
    model.save_pretrained(path)
    return path


def with_tools(messages: list[dict]):
    """The messages as a conversation rendered with Lookup's tool schema (what a rollout's prompt carries)."""
    return Conversation(messages, tools=list(load_environment(f"{__name__}:Lookup").schemas))


_TRAINED: dict[str, Path] = {}


def trained_policy(tmp_path_factory) -> Path:
    """`policy_that_calls_tools`, trained once per test session (the multi-turn test files share it)."""
    if "policy" not in _TRAINED:
        _TRAINED["policy"] = policy_that_calls_tools(tmp_path_factory.mktemp("tool-policy") / "qwen2")
    return _TRAINED["policy"]
