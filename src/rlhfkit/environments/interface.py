"""Loading an environment class, calling its tools and reading its rewards (the interface: `__init__.py`).

What the environment's own code does wrong where the run cannot go on — a class that does not load or build, a
tool without a schema, `reset` or a reward method that raises or returns a non-number — is one line naming the
environment and the dataset row (`errors.UserError`). What goes wrong inside a tool call is the model's business: a
tool message it reads on its next turn (`call_tool`).
"""

from __future__ import annotations

import inspect
import json
import math
import numbers
import threading
from dataclasses import dataclass

from transformers.utils import get_json_schema

from rlhfkit.errors import UserError
from rlhfkit.rewards.functions import load_object

# Methods that are not tools: TRL's `get_reward` (the trajectory's reward) and ours, `get_turn_reward` (each turn's).
REWARD_METHODS = ("get_reward", "get_turn_reward")
NOT_TOOLS = ("reset", *REWARD_METHODS)
_NOTHING = object()


@dataclass(frozen=True)
class EnvironmentSpec:
    """An environment class as loaded: its factory, its tools (method names) and their JSON schemas, in order."""
    spec: str                     # as the user wrote it: `module:Class` or `file.py:Class`
    factory: object               # called with no arguments for each trajectory (TRL: environment_factory)
    tools: tuple[str, ...]
    schemas: tuple[dict, ...]     # what the chat template renders (transformers' get_json_schema of each tool)
    rewards: tuple[str, ...]      # the REWARD_METHODS it defines

    @property
    def name(self) -> str:
        return self.spec.rpartition(":")[2]

    def make(self):
        """A fresh instance for one trajectory."""
        try:
            return self.factory()
        except Exception as exc:
            raise UserError(f"--environment {self.spec}: building it raised {type(exc).__name__}: {exc}") from None


def tool_methods(instance) -> dict:
    """name -> bound method of every public method that is not `reset` or a reward method (TRL's rule)."""
    return {name: member for name, member in inspect.getmembers(instance, predicate=inspect.ismethod)
            if not name.startswith("_") and name not in NOT_TOOLS}


def load_environment(spec: str, flag: str = "--environment") -> EnvironmentSpec:
    """The environment class `spec` names (`module:Class` or `file.py:Class`), built once to read its tools; a bad
    spec, a class without `reset`, or a tool without a schema is one line naming it."""
    factory = load_object(spec, flag)
    if not callable(factory):
        raise UserError(f"{flag} {spec!r}: {spec.rpartition(':')[2]} is not a class (an environment is a class with "
                        "reset(**row) and tools as methods)")
    instance = EnvironmentSpec(spec, factory, (), (), ()).make()
    if not callable(getattr(instance, "reset", None)):
        raise UserError(f"{flag} {spec!r}: the environment has no reset(**row) method (TRL's environment_factory "
                        "convention)")
    tools = tool_methods(instance)
    schemas = []
    for name, method in tools.items():
        try:
            schemas.append(get_json_schema(method))
        except Exception as exc:  # transformers' DocstringParsingException, TypeHintParsingException
            raise UserError(f"{flag} {spec!r}: tool {name!r} has no JSON schema: {str(exc).splitlines()[0]} (a "
                            "tool needs type hints and a Google-style docstring with an Args section)") from None
    rewards = tuple(m for m in REWARD_METHODS if callable(getattr(instance, m, None)))
    return EnvironmentSpec(spec, factory, tuple(tools), tuple(schemas), rewards)


def reset(env_spec: EnvironmentSpec, instance, row: dict, where: str) -> str | None:
    """instance.reset(**row): None or a text to append to the prompt's last message."""
    try:
        observation = instance.reset(**row)
    except Exception as exc:
        raise UserError(f"--environment {env_spec.spec}: reset raised {type(exc).__name__}: {exc} on {where}") from None
    if observation is not None and not isinstance(observation, str):
        raise UserError(f"--environment {env_spec.spec}: reset returned a {type(observation).__name__} on {where} "
                        "(None, or a str appended to the prompt)")
    return observation


def read_reward(env_spec: EnvironmentSpec, instance, method: str, where: str) -> float | None:
    """instance.get_reward() or instance.get_turn_reward(): a finite number, or None (no reward)."""
    if method not in env_spec.rewards:
        return None
    try:
        value = getattr(instance, method)()
    except Exception as exc:
        raise UserError(f"--environment {env_spec.spec}: {method} raised {type(exc).__name__}: {exc} on "
                        f"{where}") from None
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()  # a NumPy or torch scalar
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise UserError(f"--environment {env_spec.spec}: {method} returned {value!r} on {where} (a finite float "
                        "or None)")
    return float(value)


def as_content(value) -> str:
    """A tool's return value as a tool message's content: a str as is, else JSON, else str()."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return str(value)


def call_tool(instance, name: str, arguments, timeout: float) -> tuple[str, bool]:
    """(the tool message's content, whether it is an error) of one call the model made.

    The tool runs in a daemon thread, waited for `timeout` seconds: a tool still running then is answered
    "error: ... timed out" and left behind (a thread cannot be stopped; a daemon thread does not hold the process
    at exit). A tool that raises, an unknown name, or arguments that do not fit give "error: ..." likewise."""
    tools = tool_methods(instance)
    if name not in tools:
        known = ", ".join(tools) or "none"
        return f"error: unknown tool {name!r} (tools: {known})", True
    if not isinstance(arguments, dict):
        return f"error: the arguments of {name} must be a JSON object, got {json.dumps(arguments)}", True
    box = {"value": _NOTHING, "error": None}

    def run():
        try:
            box["value"] = tools[name](**arguments)
        except Exception as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, name=f"tool-{name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return f"error: tool {name} timed out after {timeout:g} s", True
    if box["error"] is not None:
        return f"error: {type(box['error']).__name__}: {box['error']}", True
    if box["value"] is _NOTHING:  # the thread ended without returning (SystemExit, ...)
        return f"error: tool {name} returned nothing", True
    return as_content(box["value"]), False


def tool_message(name: str, content: str) -> dict:
    """A tool's answer as the chat templates read it (TRL's form)."""
    return {"role": "tool", "name": name, "content": content}
