"""The environment interface (environments/interface.py): loaded like a reward function, its methods as tools with
transformers' JSON schemas, its mistakes one line (exit 2), its tools' failures tool messages."""

import threading

import pytest

from rlhfkit.environments import call_tool, load_environment
from rlhfkit.environments.interface import read_reward
from rlhfkit.errors import UserError
from tests.trajectories_zoo import Lookup, Raising, Stalling


def test_public_methods_are_tools_with_schemas_and_reward_methods_are_not():
    spec = load_environment("tests.trajectories_zoo:Lookup")
    assert spec.tools == ("lookup",) and spec.rewards == ("get_reward", "get_turn_reward")
    assert spec.schemas == ({"type": "function", "function": {
        "name": "lookup", "description": "Look a key up in the table.",
        "parameters": {"type": "object", "properties": {"key": {"type": "string", "description": "the key to look up"}},
                       "required": ["key"]}, "return": {"type": "string"}}},)
    assert isinstance(spec.make(), Lookup) and spec.make() is not spec.make()  # one instance per trajectory


def test_an_environment_from_a_file(tmp_path):
    path = tmp_path / "env.py"
    path.write_text("class Echo:\n    def reset(self, **row):\n        return 'hi'\n\n"
                    "    def echo(self, text: str) -> str:\n        '''Echo.\n\n        Args:\n"
                    "            text: what to echo\n        '''\n        return text\n", encoding="utf-8")
    spec = load_environment(f"{path}:Echo")
    assert spec.tools == ("echo",) and spec.rewards == ()


@pytest.mark.parametrize("source, spec, message", [
    (None, "nosuchmodule:Env", "no module named 'nosuchmodule'"),
    (None, "tests.trajectories_zoo:Missing", "has no function 'Missing'"),
    (None, "Lookup", "expected module:function"),
    (None, "tests.trajectories_zoo:TABLE", "is not a class"),
    ("class Env:\n    def __init__(self, size):\n        pass\n", "env.py:Env", "building it raised TypeError"),
    ("class Env:\n    pass\n", "env.py:Env", "has no reset(**row) method"),
    ("class Env:\n    def reset(self, **row):\n        pass\n\n    def tool(self, x):\n        return x\n",
     "env.py:Env", "tool 'tool' has no JSON schema"),
])
def test_a_bad_environment_is_one_line(tmp_path, monkeypatch, source, spec, message):
    monkeypatch.chdir(tmp_path)
    if source:
        (tmp_path / "env.py").write_text(source, encoding="utf-8")
    with pytest.raises(UserError) as error:
        load_environment(spec)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert str(error.value).startswith("--environment ")


def test_a_tool_that_raises_or_is_unknown_or_misused_answers_with_an_error():
    env = Raising()
    env.reset()
    assert call_tool(env, "lookup", {"key": "a"}, 5.0) == ("error: KeyError: 'no such key: a'", True)
    assert call_tool(env, "reset", {}, 5.0) == ("error: unknown tool 'reset' (tools: lookup)", True)
    content, error = call_tool(env, "lookup", {"wrong": 1}, 5.0)
    assert error and content.startswith("error: TypeError: ") and "wrong" in content
    assert call_tool(env, "lookup", ["a"], 5.0) == ('error: the arguments of lookup must be a JSON object, got ["a"]',
                                                    True)


def test_a_tool_that_runs_past_the_timeout_answers_with_an_error():
    Stalling.release = threading.Event()
    env = Stalling()
    env.reset()
    try:
        assert call_tool(env, "lookup", {"key": "b"}, 0.05) == ("error: tool lookup timed out after 0.05 s", True)
    finally:
        Stalling.release.set()  # the abandoned call may end now


def test_a_tool_value_is_the_message_content():
    env = Lookup()
    env.reset()
    assert call_tool(env, "lookup", {"key": "a"}, 5.0) == ("7", False)


def test_a_reward_that_is_not_a_number_is_one_line():
    class Bad(Lookup):
        def get_reward(self):
            return "high"
    spec = load_environment("tests.trajectories_zoo:Lookup")
    with pytest.raises(UserError, match=r"get_reward returned 'high' on row 3 \(a finite float or None\)"):
        read_reward(spec, Bad(), "get_reward", "row 3")
