"""A verifiable reward for the toy world: a program that checks an answer against what the prompt itself says,
for the families whose answer follows from the prompt (and the world's word lists) by rule —

    sort    the words of the prompt in alphabetical order
    count   the number of words after the colon, as a number word
    repeat  the word, exactly n times
    list    n distinct items of the category
    next    the number after n

1.0 when the response is exactly the right answer (its words, nothing else), 0.0 when not, and None — no reward
from this function — for the families it cannot check (opposites, colours, categories, summaries: knowledge, not
rules). Unlike the gold reward it knows nothing of concision beyond exactness, of harm or of partial credit: the
kind of reward a unit test or an answer checker gives (RL with verifiable rewards: Lambert et al. 2024, Tülu 3;
DeepSeek-AI 2025, R1's accuracy reward).

Use it as `rlhf ppo --reward-fn rlhfkit.world.verify:verify` (TRL's reward-function convention).
"""

from __future__ import annotations

from rlhfkit.world import vocab as V
from rlhfkit.world.tasks import ITEM_CATEGORY, parse_prompt

VERIFIABLE = ("sort", "count", "repeat", "list", "next")
VERIFIER = "rlhfkit.world.verify:verify"  # its --reward-fn spec


def expected_ok(family: str, args: tuple, words: list[str]) -> bool:
    """Is `words` exactly a right answer of the task?"""
    if family == "sort":
        return words == sorted(args)
    if family == "count":
        return words == [V.NUMBERS[len(args)]]
    if family == "repeat":
        word, n = args
        return words == [word] * n
    if family == "list":
        n, category = args
        return len(words) == n == len(set(words)) and all(ITEM_CATEGORY.get(w) == category for w in words)
    if family == "next":
        return words == [V.NUMBERS[args[0] + 1]]
    raise ValueError(f"family {family!r} is not verifiable")


def text_of(completion) -> str:
    """A completion's text (conversational: the assistant message's content)."""
    return completion[-1]["content"] if isinstance(completion, list) else completion


def verify(prompts: list, completions: list, **row_fields) -> list[float | None]:
    """1.0 / 0.0 for each completion of a verifiable prompt, None for any other prompt."""
    out = []
    for prompt, completion in zip(prompts, completions):
        task = parse_prompt(text_of(prompt) if isinstance(prompt, list) else prompt)
        if task is None or task.family not in VERIFIABLE:
            out.append(None)
        else:
            out.append(1.0 if expected_ok(task.family, task.args, text_of(completion).split()) else 0.0)
    return out
