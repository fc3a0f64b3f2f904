"""Instruction families of the toy world.

Each family makes prompts from a template, parses a prompt back into its task (so the gold reward can
score any text a policy writes for any prompt of the world), writes an expert's content words (right,
or with the family's typical mistake), and scores the correctness of a response's words in [0, 1] with
partial credit. `ideal_length` is the number of tokens a concise, complete answer needs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from rlhfkit.world import vocab as V

ITEM_CATEGORY = {item: cat for cat, items in V.CATEGORIES.items() for item in items}
ALL_ITEMS = sorted(ITEM_CATEGORY)
CATEGORY_NAMES = {**{c: c for c in V.CATEGORIES}, **{p: c for c, p in V.PLURALS.items()}}
OPPOSITES: dict[str, set[str]] = {}
for _a, _b in V.OPPOSITE_PAIRS:
    OPPOSITES.setdefault(_a, set()).add(_b)
    OPPOSITES.setdefault(_b, set()).add(_a)
ADJECTIVES = sorted(OPPOSITES)


@dataclass(frozen=True)
class Task:
    family: str
    prompt: str
    args: tuple


def _n(word: str) -> int | None:
    return V.NUMBER_VALUE.get(word)


def match(tokens: list[str], template: str) -> dict[str, object] | None:
    """Slots of `template` ('{x}' one word, '{*}' one or more words) filled by `tokens`, or None."""
    parts = template.split()
    if "{*}" in parts:
        i = parts.index("{*}")
        head, tail = parts[:i], parts[i + 1:]
        middle = tokens[i:len(tokens) - len(tail)]
        if len(tokens) < len(parts) or not middle:
            return None
        slots = match(tokens[:i] + tokens[len(tokens) - len(tail):], " ".join(head + tail))
        return None if slots is None else {**slots, "*": middle}
    if len(parts) != len(tokens):
        return None
    slots: dict[str, object] = {}
    for part, token in zip(parts, tokens):
        if part.startswith("{") and part.endswith("}"):
            slots[part[1:-1]] = token
        elif part != token:
            return None
    return slots


class Family:
    """A family of instructions. Several phrasings (`templates`) share one task: held-out prompts are new
    phrasings or new contents, while the knowledge behind them is the world's."""
    name = ""
    templates: tuple[str, ...] = ()

    def sample(self, rng: random.Random) -> Task: ...
    def slots(self, args: tuple) -> dict: ...
    def args_from(self, slots: dict) -> tuple | None: ...
    def answer(self, args: tuple, rng: random.Random, mistake: bool = False) -> list[str]: ...
    def correctness(self, args: tuple, words: list[str]) -> float: ...
    def ideal_length(self, args: tuple) -> int: ...

    def task(self, rng: random.Random, *args) -> Task:
        slots = self.slots(tuple(args))
        if "*" in slots:
            slots["*"] = " ".join(slots["*"])
        return Task(self.name, rng.choice(self.templates).format(**slots), tuple(args))

    def parse(self, tokens: list[str]) -> tuple | None:
        for template in self.templates:
            slots = match(tokens, template)
            if slots is not None:
                try:
                    args = self.args_from(slots)
                except (KeyError, ValueError, TypeError):
                    args = None
                if args is not None:
                    return args
        return None


class ListItems(Family):
    """'list three animals .' -> three distinct animals."""
    name = "list"
    templates = ("list {n} {c} .", "name {n} {c} .", "give me {n} {c} .")

    def sample(self, rng):
        return self.task(rng, rng.randint(2, 5), rng.choice(list(V.CATEGORIES)))

    def slots(self, args):
        return {"n": V.NUMBERS[args[0]], "c": V.PLURALS[args[1]]}

    def args_from(self, s):
        n = _n(s["n"])
        if n and 2 <= n <= 9 and s["c"] in V.PLURALS.values():
            return n, CATEGORY_NAMES[s["c"]]

    def answer(self, args, rng, mistake=False):
        n, cat = args
        items = rng.sample(V.CATEGORIES[cat], n)
        if mistake:
            kind = rng.random()
            if kind < 0.4:
                items = items[:-1]
            elif kind < 0.7:
                items.append(rng.choice([i for i in V.CATEGORIES[cat] if i not in items]))
            else:
                other = rng.choice([c for c in V.CATEGORIES if c != cat])
                items[rng.randrange(n)] = rng.choice(V.CATEGORIES[other])
        return items

    def correctness(self, args, words):
        n, cat = args
        hits = {w for w in words if ITEM_CATEGORY.get(w) == cat}
        wrong = sum(1 for w in words if w in ITEM_CATEGORY and ITEM_CATEGORY[w] != cat)
        score = min(len(hits), n) / n - 0.5 * max(0, len(hits) - n) / n - 0.5 * wrong / n
        return max(0.0, score)

    def ideal_length(self, args):
        return args[0]


class Repeat(Family):
    """'repeat the word pear four times .' -> 'pear pear pear pear'."""
    name = "repeat"
    templates = ("repeat the word {w} {n} times .", "say {w} {n} times .", "write the word {w} {n} times .")

    def sample(self, rng):
        return self.task(rng, rng.choice(ALL_ITEMS), rng.randint(2, 6))

    def slots(self, args):
        return {"w": args[0], "n": V.NUMBERS[args[1]]}

    def args_from(self, s):
        n = _n(s["n"])
        if n and s["w"] in ITEM_CATEGORY:
            return s["w"], n

    def answer(self, args, rng, mistake=False):
        word, n = args
        if mistake:
            n = max(1, n + rng.choice([-1, 1]))
        return [word] * n

    def correctness(self, args, words):
        word, n = args
        return max(0.0, 1.0 - abs(words.count(word) - n) / n)

    def ideal_length(self, args):
        return args[1]


class Sort(Family):
    """'sort these words : pear apple fig .' -> 'apple fig pear' (alphabetical)."""
    name = "sort"
    templates = ("sort these words : {*} .", "put these words in alphabetical order : {*} .")

    def sample(self, rng):
        return self.task(rng, *rng.sample(ALL_ITEMS, rng.randint(3, 5)))

    def slots(self, args):
        return {"*": list(args)}

    def args_from(self, s):
        words = s["*"]
        if len(words) >= 2 and all(w in ITEM_CATEGORY for w in words) and len(set(words)) == len(words):
            return tuple(words)

    def answer(self, args, rng, mistake=False):
        out = sorted(args)
        if mistake:
            i = rng.randrange(len(out) - 1)
            out[i], out[i + 1] = out[i + 1], out[i]
        return out

    def correctness(self, args, words):
        given = [w for w in words if w in args]
        if sorted(given) == sorted(args):  # a permutation of the input: credit for order
            in_order = sum(a < b for a, b in zip(given, given[1:])) / (len(args) - 1)
            return 0.4 + 0.6 * in_order
        return 0.4 * len(set(given)) / len(args) * (0.5 if len(given) > len(set(given)) else 1.0)

    def ideal_length(self, args):
        return len(args)


class Opposite(Family):
    """'what is the opposite of hot ?' -> 'cold'."""
    name = "opposite"
    templates = ("what is the opposite of {w} ?", "give the opposite of {w} .", "name the opposite of {w} .")

    def sample(self, rng):
        return self.task(rng, rng.choice(ADJECTIVES))

    def slots(self, args):
        return {"w": args[0]}

    def args_from(self, s):
        if s["w"] in OPPOSITES:
            return (s["w"],)

    def answer(self, args, rng, mistake=False):
        if mistake:
            return [rng.choice([a for a in ADJECTIVES if a not in OPPOSITES[args[0]] and a != args[0]])]
        return [rng.choice(sorted(OPPOSITES[args[0]]))]

    def correctness(self, args, words):
        right = any(w in OPPOSITES[args[0]] for w in words)
        others = any(w in OPPOSITES and w not in OPPOSITES[args[0]] for w in words)
        return (1.0 if right else 0.0) * (0.5 if others else 1.0)

    def ideal_length(self, args):
        return 1


class Count(Family):
    """'how many words are in : red cat sky ?' -> 'three'."""
    name = "count"
    templates = ("how many words are in : {*} ?", "count the words : {*} .")

    def sample(self, rng):
        return self.task(rng, *rng.sample(ALL_ITEMS, rng.randint(2, 7)))

    def slots(self, args):
        return {"*": list(args)}

    def args_from(self, s):
        if len(s["*"]) < len(V.NUMBERS):
            return tuple(s["*"])

    def answer(self, args, rng, mistake=False):
        n = len(args) + (rng.choice([-1, 1]) if mistake else 0)
        return [V.NUMBERS[n]]

    def correctness(self, args, words):
        said = [V.NUMBER_VALUE[w] for w in words if w in V.NUMBER_VALUE]
        if not said:
            return 0.0
        off = abs(said[0] - len(args))
        score = 1.0 if off == 0 else 0.4 if off == 1 else 0.0
        return score * (0.5 if len(set(said)) > 1 else 1.0)

    def ideal_length(self, args):
        return 1


class Color(Family):
    """'what color is the banana ?' -> 'yellow'."""
    name = "color"
    templates = ("what color is the {x} ?", "what is the color of the {x} ?", "tell me the color of the {x} .")

    def sample(self, rng):
        return self.task(rng, rng.choice(sorted(V.COLOR_OF)))

    def slots(self, args):
        return {"x": args[0]}

    def args_from(self, s):
        if s["x"] in V.COLOR_OF:
            return (s["x"],)

    def answer(self, args, rng, mistake=False):
        right = V.COLOR_OF[args[0]]
        return [rng.choice([c for c in V.CATEGORIES["color"] if c != right]) if mistake else right]

    def correctness(self, args, words):
        colors = {w for w in words if ITEM_CATEGORY.get(w) == "color"}
        right = V.COLOR_OF[args[0]]
        if right not in colors:
            return 0.0
        return 1.0 if len(colors) == 1 else 0.3

    def ideal_length(self, args):
        return 1


class Category(Family):
    """'which group does tiger belong to ?' -> 'animal'."""
    name = "category"
    templates = ("which group does {x} belong to ?", "what kind of thing is a {x} ?", "name the group of {x} .")

    def sample(self, rng):
        return self.task(rng, rng.choice(ALL_ITEMS))

    def slots(self, args):
        return {"x": args[0]}

    def args_from(self, s):
        if s["x"] in ITEM_CATEGORY:
            return (s["x"],)

    def answer(self, args, rng, mistake=False):
        right = ITEM_CATEGORY[args[0]]
        return [rng.choice([c for c in V.CATEGORIES if c != right]) if mistake else right]

    def correctness(self, args, words):
        named = {CATEGORY_NAMES[w] for w in words if w in CATEGORY_NAMES}
        if ITEM_CATEGORY[args[0]] not in named:
            return 0.0
        return 1.0 if len(named) == 1 else 0.3

    def ideal_length(self, args):
        return 1


class NextNumber(Family):
    """'what number comes after four ?' -> 'five'."""
    name = "next"
    templates = ("what number comes after {n} ?", "which number follows {n} ?", "say the number after {n} .")

    def sample(self, rng):
        return self.task(rng, rng.randint(0, len(V.NUMBERS) - 2))

    def slots(self, args):
        return {"n": V.NUMBERS[args[0]]}

    def args_from(self, s):
        n = _n(s["n"])
        if n is not None and n < len(V.NUMBERS) - 1:
            return (n,)

    def answer(self, args, rng, mistake=False):
        n = args[0] + 1 + (rng.choice([-1, 1]) if mistake else 0)
        return [V.NUMBERS[max(0, min(n, len(V.NUMBERS) - 1))]]

    def correctness(self, args, words):
        said = [V.NUMBER_VALUE[w] for w in words if w in V.NUMBER_VALUE and w != V.NUMBERS[args[0]]]
        if not said:
            return 0.0
        return (1.0 if said[0] == args[0] + 1 else 0.0) * (0.5 if len(set(said)) > 1 else 1.0)

    def ideal_length(self, args):
        return 1


class Summarize(Family):
    """The TL;DR task: a short post -> its key facts (who, where, whose pet, what is wrong, how they feel).

    Filler sentences (weather, likes, sightings) are not key facts; a summary that repeats them is worse.
    """
    name = "summarize"
    FILLERS = ("the weather is {w} .", "i like {f} .", "yesterday i saw a {v} .")

    PREFIXES = (["summarize", ":"], ["post", ":"])

    def render(self, name, city, pet, problem, feeling, fillers, order, prefix=0):
        facts = [f"my name is {name} .", f"i live in {city} .", f"my {pet} is {problem} .", f"i feel {feeling} ."]
        sentences = [facts[0]] + [(facts[1:] + list(fillers))[i] for i in order]
        return " ".join(self.PREFIXES[prefix]) + " " + " ".join(sentences) + " tl;dr :"

    def sample(self, rng):
        fillers = [s.format(w=rng.choice(V.WEATHER), f=rng.choice(V.CATEGORIES["fruit"]),
                            v=rng.choice(V.CATEGORIES["vehicle"])) for s in rng.sample(self.FILLERS, 2)]
        order = list(range(5))
        rng.shuffle(order)
        prompt = self.render(rng.choice(V.NAMES), rng.choice(V.CITIES), rng.choice(V.PETS), rng.choice(V.PROBLEMS),
                             rng.choice(V.FEELINGS), tuple(fillers), tuple(order), rng.randrange(2))
        return Task(self.name, prompt, self.parse(prompt.split()))

    def parse(self, t):
        if len(t) < 8 or t[:2] not in self.PREFIXES or t[-2:] != ["tl;dr", ":"]:
            return None
        text = " ".join(t[2:-2])
        sentences = [s.split() for s in text.split(" .") if s.strip()]
        facts, fillers = {}, []
        for s in sentences:
            if s[:3] == ["my", "name", "is"] and len(s) == 4:
                facts["name"] = s[3]
            elif s[:3] == ["i", "live", "in"] and len(s) == 4:
                facts["city"] = s[3]
            elif s[0] == "my" and len(s) == 4 and s[2] == "is":
                facts["pet"], facts["problem"] = s[1], s[3]
            elif s[:2] == ["i", "feel"] and len(s) == 3:
                facts["feeling"] = s[2]
            else:
                fillers.append(s[-1])
        if len(facts) != 5:
            return None
        return (facts["name"], facts["city"], facts["pet"], facts["problem"], facts["feeling"], tuple(fillers))

    def answer(self, args, rng, mistake=False):
        name, city, pet, problem, feeling, fillers = args
        style = rng.randrange(4)
        if style == 0:
            words = f"{name} , {city} , {pet} {problem} , {feeling}"
        elif style == 1:
            words = f"{name} in {city} , {pet} is {problem} , feels {feeling}"
        elif style == 2:
            words = f"{name} from {city} feels {feeling} because the {pet} is {problem}"
        else:
            words = f"{name} {city} {pet} {problem} {feeling}"
        words = words.split()
        if mistake:
            if rng.random() < 0.5:
                drop = rng.choice([city, feeling, problem])
                words = [w for w in words if w != drop]
            else:
                words += ["and", "likes" if rng.random() < 0.5 else "saw", fillers[0]]
        return words

    def correctness(self, args, words):
        name, city, pet, problem, feeling, fillers = args
        present = sum(w in words for w in (name, city, pet, problem, feeling)) / 5
        return max(0.0, present - 0.1 * sum(w in words for w in fillers))

    def ideal_length(self, args):
        return 8


class Polite(Family):
    """'say something nice about the baker .' -> 'the baker is kind .'"""
    name = "polite"
    templates = ("say something nice about the {p} .", "compliment the {p} .", "write a kind word about the {p} .")

    def sample(self, rng):
        return self.task(rng, rng.choice(V.PEOPLE))

    def slots(self, args):
        return {"p": args[0]}

    def args_from(self, s):
        if s["p"] in V.PEOPLE:
            return (s["p"],)

    def answer(self, args, rng, mistake=False):
        person = args[0]
        nice = rng.choice(V.NICE)
        if mistake:
            return (["the", rng.choice([p for p in V.PEOPLE if p != person]), "is", nice] if rng.random() < 0.5
                    else ["the", person, "is", "here"])
        return rng.choice([["the", person, "is", nice], [person, "is", "very", nice], ["a", nice, person]])

    def correctness(self, args, words):
        return 0.5 * (args[0] in words) + 0.5 * any(w in V.NICE for w in words)

    def ideal_length(self, args):
        return 5


FAMILIES: dict[str, Family] = {f.name: f for f in (
    ListItems(), Repeat(), Sort(), Opposite(), Count(), Color(), Category(), NextNumber(), Summarize(), Polite())}


def parse_prompt(prompt: str) -> Task | None:
    """Recover the task behind a prompt of the world, or None for text that is not one of its prompts."""
    tokens = prompt.split()
    for family in FAMILIES.values():
        args = family.parse(tokens)
        if args is not None:
            return Task(family.name, prompt, args)
    return None


def sample_task(rng: random.Random, families: list[str] | None = None) -> Task:
    names = families or list(FAMILIES)
    return FAMILIES[rng.choice(names)].sample(rng)
