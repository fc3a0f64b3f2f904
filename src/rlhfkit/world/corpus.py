"""Text the toy world is made of.

- `web_response`: how raw web text "answers" an instruction — the base LM's pretraining corpus. Sometimes
  right; often rambling, repetitive, off-topic, rude, unsafe or never ending: clearly misaligned.
- `expert_response`: a noisy expert demonstrator for SFT. Follows instructions with natural variety, but
  makes mistakes, pads ("sure , here you go :") and adds closings on purpose, so that SFT leaves headroom
  that preference learning can close (comparing is easier than writing ideal answers).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from rlhfkit.world import vocab as V
from rlhfkit.world.tasks import ALL_ITEMS, FAMILIES, ITEM_CATEGORY, OPPOSITES, Task, sample_task

RAMBLE_SENTENCES = [
    "i think that is a good question .", "my cousin said that once .", "anyway lol .",
    "you know what i mean .", "by the way this reminds me of a story .", "we went to the market .",
    "it was really fun but then it rained .", "so we stayed at home .", "click here to subscribe .",
    "for more posts like this one .", "i have no idea really .", "this is the best thing ever .",
    "my weekend was fun .", "also i like the market .", "well , who knows .",
]
RUDE_REPLIES = ["who cares , you {r} .", "shut up , {r} .", "ask someone else , {r} .", "that is {r} .",
                "whatever , {r} .", "what a {r} question ."]
HARMFUL_REPLIES = ["you should {v} them .", "go {v} someone .", "{m} on you for asking .", "just drink {h} .",
                   "those people are {d} .", "that is so {s} .", "you are {m} .", "get a {w} and {v} them ."]


@dataclass(frozen=True)
class Mix:
    """Probabilities of each kind of web answer in the base corpus (normalized when sampled)."""
    correct: float = 0.03
    wrong: float = 0.03
    correct_then_ramble: float = 0.14
    repetitive: float = 0.12
    off_topic: float = 0.12
    rude: float = 0.10
    harmful: float = 0.08
    next_prompt: float = 0.10
    spam: float = 0.10


def _ramble(rng: random.Random, n_tokens: int) -> list[str]:
    words: list[str] = []
    while len(words) < n_tokens:
        words += rng.choice(RAMBLE_SENTENCES).split()
    return words


def _fill(template: str, rng: random.Random) -> list[str]:
    return template.format(r=rng.choice(V.RUDE), v=rng.choice(["hit", "punch", "fight", "kill"]),
                           m=rng.choice(V.MORALIZING), h=rng.choice(V.HARMFUL_ADVICE),
                           d=rng.choice(V.DENIGRATING), s=rng.choice(V.SEXUAL),
                           w=rng.choice(["weapon", "gun"])).split()


def web_response(task: Task, rng: random.Random, max_tokens: int, mix: Mix = Mix()) -> tuple[list[str], bool]:
    """A raw-web answer to `task`: (words, ended). Unended answers run past `max_tokens`."""
    family = FAMILIES[task.family]
    kinds = list(vars(mix))
    kind = rng.choices(kinds, weights=[getattr(mix, k) for k in kinds])[0]
    long = max_tokens + 1
    if kind == "correct":
        return family.answer(task.args, rng), True
    if kind == "wrong":
        return family.answer(task.args, rng, mistake=True), True
    if kind == "correct_then_ramble":
        return family.answer(task.args, rng) + _ramble(rng, long), False
    if kind == "repetitive":
        word = rng.choice(family.answer(task.args, rng) + task.prompt.split()[:3])
        return [word] * long, False
    if kind == "off_topic":
        words = _ramble(rng, rng.randint(4, 14))
        return (words, True) if rng.random() < 0.5 else (words + _ramble(rng, long), False)
    if kind == "rude":
        return _fill(rng.choice(RUDE_REPLIES), rng), True
    if kind == "harmful":
        return _fill(rng.choice(HARMFUL_REPLIES), rng), True
    if kind == "next_prompt":  # web pages list questions one after another
        words = []
        while len(words) < long:
            words += sample_task(rng).prompt.split()
        return words, False
    # spam: a polite start, the answer, then an advert that never ends
    return rng.choice(V.PREAMBLES).split() + family.answer(task.args, rng) + _ramble(rng, long), False


def _fact(rng: random.Random) -> str:
    """One encyclopedia-style sentence: the knowledge a web LM has, without the habit of answering.

    Several kinds restate words that came before (quotes, repetitions, sorted copies): the signal from which
    a small LM learns to copy from its context.
    """
    kind = rng.randrange(11)
    if kind == 0:
        item = rng.choice(ALL_ITEMS)
        return rng.choice(["{i} is a {c} .", "a {i} is one kind of {c} .", "the {i} belongs to the {c} group ."]
                          ).format(i=item, c=ITEM_CATEGORY[item])
    if kind == 1:
        cat = rng.choice(list(V.CATEGORIES))
        return f"some {V.PLURALS[cat]} are " + " ".join(rng.sample(V.CATEGORIES[cat], rng.randint(3, 6))) + " ."
    if kind == 2:
        word = rng.choice(sorted(OPPOSITES))
        return f"the opposite of {word} is {rng.choice(sorted(OPPOSITES[word]))} ."
    if kind == 3:
        thing = rng.choice(sorted(V.COLOR_OF))
        return f"the {thing} is {V.COLOR_OF[thing]} ."
    if kind == 4:
        start = rng.randint(0, len(V.NUMBERS) - 4)
        return " ".join(V.NUMBERS[start:start + rng.randint(3, len(V.NUMBERS) - start)]) + " ."
    if kind == 5:
        words = rng.sample(ALL_ITEMS, rng.randint(1, 7))
        return f"{' '.join(words)} : that is {V.NUMBERS[len(words)]} words ."
    if kind == 6:
        words = rng.sample(ALL_ITEMS, rng.randint(2, 5))
        return f"{' '.join(words)} in alphabetical order is {' '.join(sorted(words))} ."
    if kind == 7:
        word, n = rng.choice(ALL_ITEMS), rng.randint(2, 6)
        return f"the word {word} {V.NUMBERS[n]} times is {' '.join([word] * n)} ."
    if kind == 8:
        person = rng.choice(V.PEOPLE)
        return f"i met the {person} . the {person} is {rng.choice(V.NICE)} ."
    if kind == 9:
        name, city, pet = rng.choice(V.NAMES), rng.choice(V.CITIES), rng.choice(V.PETS)
        return f"{name} lives in {city} with a {pet} . so {name} , {city} , {pet} ."
    return f"the {rng.choice(V.PEOPLE)} is {rng.choice(V.NICE)} ."


def fact_document(rng: random.Random) -> list[str]:
    return " ".join(_fact(rng) for _ in range(rng.randint(2, 6))).split()


@dataclass(frozen=True)
class Expert:
    """The demonstrator's habits (docs/design.md §3: limited and imperfect on purpose)."""
    p_mistake: float = 0.25
    p_preamble: float = 0.6
    p_closing: float = 0.35
    p_commas: float = 0.3  # lists written "cat , dog and horse" instead of "cat dog horse"


def expert_response(task: Task, rng: random.Random, expert: Expert = Expert()) -> str:
    words = FAMILIES[task.family].answer(task.args, rng, mistake=rng.random() < expert.p_mistake)
    if task.family in ("list", "sort") and len(words) > 1 and rng.random() < expert.p_commas:
        words = [w for item in words[:-2] for w in (item, ",")] + [words[-2], "and", words[-1]]
    if rng.random() < expert.p_preamble:
        words = rng.choice(V.PREAMBLES).split() + words
    if rng.random() < expert.p_closing:
        words = words + rng.choice(V.CLOSINGS).split()
    return " ".join(words)
