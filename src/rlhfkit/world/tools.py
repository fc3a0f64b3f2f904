"""A toy-world family that needs a tool: two-digit arithmetic with a calculator (issue 35, item 4).

    user:       what is 47 plus 38 ?
    assistant:  <tool_call> { "name" : "add" , "arguments" : { "a" : 47 , "b" : 38 } } </tool_call> <eos>
    tool:       <tool_response> 85 </tool_response>
    assistant:  85 <eos>

Every number from 0 to 198 is one word of the vocabulary, so a sum is a lookup in a table of 90 x 90 entries that a
tiny model cannot learn from a thousand demonstrations (in its head it scores about chance), while with the
calculator it only has to copy: the operands into the call, the tool's result into the answer — what attention
does well. The tool world is its own: its own word-level vocabulary (`tool_words`) and chat template
(`TOOL_TEMPLATE`: the world's text, words separated by spaces, with Qwen2.5's `<tool_call>` JSON written word by
word, so the tool-call readers of any chat model read it); the ten families of `tasks.py` and their tokenizer are
untouched.

- `Calculator`: the environment (TRL's `environment_factory` convention: `reset(**row)`, tools as methods with
  docstrings). `correct_answer` is the reward function PPO trains on: 1 when the final answer is the number asked
  for (the environment's verifier, as in RL with verifiable rewards; the tool world has no labelers).
- `tool_gold`: the hidden gold reward, as in `gold.py`: 2·correctness + concision + termination (no harm words
  exist in this vocabulary). Correctness scores the final answer: the first number said.
- `world/tool_build.py` writes the tool world: prompts (train / held out, split by prompt), the noisy expert's
  demonstrations with tool calls (`demos_tools.jsonl`) and without (`demos_direct.jsonl`: the same prompts
  answered in one turn, always right — the no-tool policy's best teacher), the tokenizer and a random-init base LM.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from rlhfkit.world.gold import CONCISION_FLOOR, CONCISION_PER_TOKEN, CORRECTNESS_WEIGHT, UNFINISHED_PENALTY
from rlhfkit.world.tokenizer import EOS, build_tokenizer

LOW, HIGH = 10, 99          # operands: two-digit numbers
NUMBERS = [str(n) for n in range(-HIGH, 2 * HIGH + 1)]  # every sum and difference (a wrong call's too) is a word
OPS = {"plus": "add", "minus": "subtract"}
TEMPLATES = ("what is {a} {op} {b} ?", "compute {a} {op} {b} .", "how much is {a} {op} {b} ?")
PREAMBLES = ("the answer is", "it is", "=")  # the expert's padding (the gold's ideal answer is the number alone)

# Demonstrations: how the noisy expert behaves (shares of its answers; the rest is a right call and answer).
EXPERT_NO_TOOL = 0.15      # answers in its head: a near miss
EXPERT_MISCOPY = 0.10      # copies an operand into the call wrong by one
EXPERT_WRONG_TOOL = 0.05   # calls the other operation
EXPERT_PADDING = 0.30      # writes a preamble before the number

TOOL_TEMPLATE = (
    "{%- if tools %}tools :{% for t in tools %} {{ t.function.name }}{% endfor %} . {% endif %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'user' or m.role == 'system' %}{% if not loop.first %} {% endif %}{{ m.content }}"
    "{%- elif m.role == 'assistant' %}{% if m.content %} {{ m.content }}{% endif %}"
    "{%- for c in m.tool_calls or [] %} <tool_call> { \"name\" : \"{{ c.function.name }}\" , \"arguments\" : "
    "{{ '{' }}"
    "{%- for k, v in c.function.arguments.items() %} \"{{ k }}\" : {{ v }}{% if not loop.last %} ,{% endif %}"
    "{%- endfor %} } } </tool_call>{% endfor %} " + EOS +
    "{%- elif m.role == 'tool' %} <tool_response> {{ m.content }} </tool_response>"
    "{%- endif %}{%- endfor %}")


@dataclass(frozen=True)
class Sum:
    a: int
    op: str   # "plus" or "minus"
    b: int

    @property
    def answer(self) -> int:
        return self.a + self.b if self.op == "plus" else self.a - self.b

    @property
    def tool(self) -> str:
        return OPS[self.op]


def sample_sum(rng: random.Random) -> tuple[Sum, str]:
    """A task and its prompt (a difference is never negative: a >= b)."""
    a, b, op = rng.randint(LOW, HIGH), rng.randint(LOW, HIGH), rng.choice(sorted(OPS))
    if op == "minus" and a < b:
        a, b = b, a
    return Sum(a, op, b), rng.choice(TEMPLATES).format(a=a, op=op, b=b)


def parse_sum(prompt: str) -> Sum | None:
    """The task behind a prompt of the tool world (its first user message), or None."""
    words = prompt.split()
    for template in TEMPLATES:
        parts = template.split()
        if len(parts) != len(words):
            continue
        slots = {}
        for part, word in zip(parts, words):
            if part.startswith("{"):
                slots[part[1:-1]] = word
            elif part != word:
                break
        else:
            if slots["op"] in OPS and slots["a"].isdigit() and slots["b"].isdigit():
                return Sum(int(slots["a"]), slots["op"], int(slots["b"]))
    return None


def user_text(prompt) -> str:
    """The question of a prompt given as text or as messages (its first user message)."""
    if isinstance(prompt, str):
        return prompt
    return next(m["content"] for m in prompt if m["role"] == "user")


def numbers_said(text: str) -> list[int]:
    return [int(w) for w in text.split() if w.removeprefix("-").isdigit()]


def final_answer(text: str) -> str:
    """The last turn of a trajectory's text: what follows its last tool response (the whole text without one)."""
    return text.rsplit("</tool_response>", 1)[-1].replace(EOS, " ")


def correctness(task: Sum, answer: str) -> float:
    """1 when the first number said is the result (0.5 when other numbers follow it), else 0."""
    said = numbers_said(answer)
    if not said or said[0] != task.answer:
        return 0.0
    return 1.0 if len(set(said)) == 1 else 0.5


@dataclass(frozen=True)
class ToolGold:
    total: float
    correctness: float
    concision: float
    termination: float


def tool_gold(prompt, answer: str, finished: bool = True) -> ToolGold:
    """r*(x, y) for the tool world, scored on the final answer (`final_answer`); the ideal answer is one word."""
    task = parse_sum(user_text(prompt))
    if task is None:
        raise ValueError(f"not a prompt of the tool world: {user_text(prompt)[:60]!r}")
    words = answer.split()
    right = correctness(task, answer)
    concision = max(CONCISION_FLOOR, -CONCISION_PER_TOKEN * max(0, len(words) - 1))
    termination = 0.0 if finished else UNFINISHED_PENALTY
    return ToolGold(round(CORRECTNESS_WEIGHT * right + concision + termination, 6), right, round(concision, 6),
                    termination)


class Calculator:
    """The tool world's environment: a calculator for two numbers. TRL's `environment_factory` convention: one
    instance per trajectory, `reset(**row)` with the prompt row's fields, every public method a tool."""

    def reset(self, **row) -> None:
        return None  # stateless: each call stands alone

    def add(self, a: int, b: int) -> int:
        """Add two numbers.

        Args:
            a: the first number
            b: the second number
        """
        return int(a) + int(b)

    def subtract(self, a: int, b: int) -> int:
        """Subtract the second number from the first.

        Args:
            a: the number to subtract from
            b: the number to subtract
        """
        return int(a) - int(b)


def tool_schemas() -> list[dict]:
    """The tools' JSON schemas as a chat template receives them (`tools=`), in the order the prompts list them."""
    return [{"type": "function", "function": {"name": name, "description": doc, "parameters": {
        "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"]}}} for name, doc in (("add", "Add two numbers."),
                                                    ("subtract", "Subtract the second number from the first."))]


def correct_answer(prompts: list, completions: list, **fields) -> list[float]:
    """The reward function PPO trains on: 1.0 when a trajectory's final answer is the result, else 0.0."""
    return [correctness(parse_sum(user_text(p)), final_answer(c if isinstance(c, str) else c[-1]["content"]))
            if parse_sum(user_text(p)) else 0.0 for p, c in zip(prompts, completions)]


# --------------------------------------------------------------------------------------------- the expert

def call_message(tool: str, a: int, b: int) -> dict:
    return {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": tool, "arguments": {"a": a, "b": b}}}]}


def answer_text(value: int, rng: random.Random) -> str:
    return f"{rng.choice(PREAMBLES)} {value}" if rng.random() < EXPERT_PADDING else str(value)


def expert_messages(task: Sum, prompt: str, rng: random.Random) -> list[dict]:
    """A demonstration with the calculator: call, result, answer — with the expert's mistakes (module constants)."""
    user = {"role": "user", "content": prompt}
    kind = rng.random()
    if kind < EXPERT_NO_TOOL:
        guess = min(2 * HIGH, max(0, task.answer + rng.choice([-10, -2, -1, 1, 2, 10])))
        return [user, {"role": "assistant", "content": answer_text(guess, rng)}]
    a, b, tool = task.a, task.b, task.tool
    if kind < EXPERT_NO_TOOL + EXPERT_MISCOPY:
        a = min(HIGH, max(LOW, a + rng.choice([-1, 1])))
    elif kind < EXPERT_NO_TOOL + EXPERT_MISCOPY + EXPERT_WRONG_TOOL:
        tool = "subtract" if tool == "add" else "add"
    result = getattr(Calculator(), tool)(a, b)
    return [user, call_message(tool, a, b), {"role": "tool", "content": str(result)},
            {"role": "assistant", "content": answer_text(result, rng)}]


def tool_words() -> list[str]:
    """The tool world's vocabulary: every word its template, prompts and answers can write."""
    words = set(NUMBERS) | set(OPS) | set(OPS.values()) | {"tools", ":", ".", ",", "{", "}", "-"}
    for template in TEMPLATES:
        words |= {w for w in template.split() if not w.startswith("{")}
    for preamble in PREAMBLES:
        words |= set(preamble.split())
    words |= {"<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", '"name"', '"arguments"',
              '"a"', '"b"', '"add"', '"subtract"', "error"}
    return sorted(words)


def tool_tokenizer():
    """The word-level tokenizer of the tool world, with its chat template."""
    tokenizer = build_tokenizer(tool_words())
    tokenizer.chat_template = TOOL_TEMPLATE
    return tokenizer
