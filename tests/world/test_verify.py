"""The toy world's verifier: 1 for exactly the right answer, 0 otherwise, None where the prompt cannot be checked."""

import random

import pytest

from rlhfkit.world.tasks import FAMILIES
from rlhfkit.world.verify import VERIFIABLE, verify


@pytest.mark.parametrize("family", VERIFIABLE)
def test_the_expert_answer_verifies_and_its_typical_mistake_does_not(family):
    rng = random.Random(0)
    for _ in range(30):
        task = FAMILIES[family].sample(rng)
        right = " ".join(FAMILIES[family].answer(task.args, rng))
        wrong = " ".join(FAMILIES[family].answer(task.args, rng, mistake=True))
        assert verify([task.prompt], [right]) == [1.0], (task.prompt, right)
        assert verify([task.prompt], [wrong + " extra"]) == [0.0]


def test_hand_checked_answers():
    prompts = ["sort these words : pear apple fig .", "count the words : cat dog owl .",
               "repeat the word pear four times .", "which number follows four ?", "list two fruits ."]
    assert verify(prompts, ["apple fig pear", "three", "pear pear pear pear", "five", "apple apple"]) == [
        1.0, 1.0, 1.0, 1.0, 0.0]  # the list repeats an item
    assert verify(prompts[:2], ["apple pear fig", "three words"]) == [0.0, 0.0]


def test_families_it_cannot_check_and_foreign_prompts_get_none():
    assert verify(["what is the opposite of hot ?", "what color is the banana ?", "hello there"],
                  ["cold", "yellow", "hi"]) == [None, None, None]
