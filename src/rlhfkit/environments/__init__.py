"""Environments: user code the policy talks to during a multi-turn rollout (`rlhf ppo --environment module:Class`).

The interface is TRL's `environment_factory` convention (GRPOTrainer, TRL 1.x) where it has one:

    class Calculator:
        def reset(self, **row) -> str | None:       # called once per trajectory with the dataset row's fields
            self.answer = row.get("answer")            # (`id`, `task` and the `extra` fields of a prompts file);
            return None                                # a str is appended to the prompt's last message

        def multiply(self, a: int, b: int) -> int:    # every public method is a tool: its name, type hints and
            '''Multiply two integers.                    Google-style docstring become the JSON schema the chat
                                                         template shows the model (transformers' get_json_schema)
            Args:
                a: the first factor
                b: the second factor
            '''
            return a * b

        def get_reward(self) -> float:                # optional (TRL): the trajectory's reward, on its last
            return float(self.answered == self.answer)  # model token, added to r(x, y)

        def get_turn_reward(self) -> float | None:   # optional (rlhfkit): a reward for the turn just taken,
            return None                                # read after its tool calls ran, on that turn's last token

- The class is loaded like a reward function (`rewards/functions.load_object`): `module:Class` or `file.py:Class`;
  one instance per trajectory, built with no arguments (TRL's factory is the class itself).
- Tools: the public methods other than `reset`, `get_reward` and `get_turn_reward`. A tool's return value becomes
  the content of a tool message (a str as is, anything else as JSON, or `str()` where JSON cannot write it).
- A tool that raises, is called with wrong arguments, is not a tool, or runs past `--tool-timeout` seconds gives a
  tool message `error: ...` the model reads on its next turn; the run goes on (`call_tool`). A call the policy wrote
  that cannot be parsed is answered the same way (`calls.py`).
- Reward functions (`--reward-fn`) receive each trajectory's environment as the keyword `environments` (TRL's name).

`calls.py` reads the tool calls out of a model turn (Qwen2.5/Hermes `<tool_call>`, Llama 3.x JSON, Mistral
`[TOOL_CALLS]`); `engines/multiturn.py` runs the rollout.
"""

from rlhfkit.environments.interface import (
    REWARD_METHODS,
    EnvironmentSpec,
    call_tool,
    load_environment,
    tool_message,
)

__all__ = ["REWARD_METHODS", "EnvironmentSpec", "call_tool", "load_environment", "tool_message"]
