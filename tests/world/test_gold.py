"""The gold reward on hand-written cases, one family at a time (totals computed by hand in comments)."""

import pytest

from rlhfkit.world.gold import gold_reward


@pytest.mark.parametrize("prompt, response, correctness", [
    ("list three animals .", "cat dog horse", 1.0),
    ("list three animals .", "cat dog", 2 / 3),
    ("list three animals .", "cat dog apple", 2 / 3 - 0.5 / 3),           # one item from another category
    ("list three animals .", "cat cat cat", 1 / 3),                       # repeats count once
    ("say pear three times .", "pear pear pear", 1.0),
    ("repeat the word pear four times .", "pear pear pear", 0.75),
    ("sort these words : pear apple fig .", "apple fig pear", 1.0),
    ("sort these words : pear apple fig .", "fig apple pear", 0.4 + 0.6 * 0.5),  # a permutation, 1 of 2 in order
    ("sort these words : pear apple fig .", "apple pear", 0.4 * 2 / 3),
    ("what is the opposite of hot ?", "cold", 1.0),
    ("name the opposite of hot .", "warm", 0.0),
    ("how many words are in : cat dog owl ?", "three", 1.0),
    ("count the words : cat dog owl .", "four", 0.4),
    ("what color is the banana ?", "yellow", 1.0),
    ("what color is the banana ?", "yellow or green", 0.3),
    ("which group does tiger belong to ?", "animal", 1.0),
    ("what kind of thing is a tiger ?", "animals", 1.0),
    ("what kind of thing is a tiger ?", "fruit", 0.0),
    ("what number comes after four ?", "five", 1.0),
    ("which number follows four ?", "six", 0.0),
    ("say something nice about the baker .", "the baker is kind", 1.0),
    ("compliment the baker .", "the baker is here", 0.5),
])
def test_correctness_per_family(prompt, response, correctness):
    assert gold_reward(prompt, response).correctness == pytest.approx(correctness)


POST = ("summarize : my name is tom . i like pear . i live in paris . my dog is sick . "
        "the weather is rainy . i feel sad . tl;dr :")


def test_summary_keeps_key_facts_and_penalizes_fillers():
    assert gold_reward(POST, "tom paris dog sick sad").correctness == 1.0
    assert gold_reward(POST, "tom paris dog sick").correctness == pytest.approx(0.8)
    assert gold_reward(POST, "tom paris dog sick sad pear").correctness == pytest.approx(0.9)


def test_total_combines_components():
    # 2·1.0 correctness; 9 tokens vs ideal 3 -> −0.6 concision; finished; no harm.
    g = gold_reward("list three animals .", "sure , here you go : cat dog horse")
    assert (g.correctness, g.concision, g.termination, g.harmlessness) == (1.0, -0.6, 0.0, 0.0)
    assert g.total == pytest.approx(1.4)


def test_unfinished_and_harmful_responses_are_penalized():
    assert gold_reward("list two fruits .", "apple pear", finished=False).total == pytest.approx(2.0 - 1.0)
    rude = gold_reward("list two fruits .", "shut up , idiot .")
    assert rude.harmlessness == -1.0 and rude.total == pytest.approx(-1.0 - 0.3)  # 5 tokens vs ideal 2
    violent = gold_reward("list two fruits .", "you should fight them .")
    assert violent.harmlessness == -1.5  # violent, and encouraging it


def test_concision_penalty_is_floored():
    assert gold_reward("what color is the sky ?", " ".join(["blue"] + ["lol"] * 40)).concision == -1.5


def test_unknown_prompt_is_rejected():
    with pytest.raises(ValueError):
        gold_reward("tell me a joke", "no")
