"""Reward functions (TRL's convention) loaded from module:function or file.py:function, their answers checked, and
their weighted sum with a reward model."""

import math
import subprocess
import sys

import pytest
import torch

from rlhfkit.errors import UserError
from rlhfkit.generation import Samples
from rlhfkit.rewards.combine import RewardBatch, Rewards, completions_of
from rlhfkit.rewards.functions import call_reward_function, load_reward_function
from rlhfkit.rewards.sources import load_judge

FUNCTIONS = '''
def length(prompts, completions, **kw):
    return [float(len(c.split())) for c in completions]

def shout(prompts, completions, **kw):
    return [1.0 if c.isupper() else None for c in completions]

def nan(prompts, completions, **kw):
    return [float("nan")] * len(completions)

def short(prompts, completions, **kw):
    return [0.0]

def words(prompts, completions, **kw):
    return ["good"] * len(completions)

def picky(prompts, completions, n, **kw):
    if 17 in n:
        raise ValueError("row 17 is bad")
    return [0.0] * len(completions)
'''


@pytest.fixture
def rf(tmp_path):
    path = tmp_path / "rf.py"
    path.write_text(FUNCTIONS)
    return lambda name: load_reward_function(f"{path}:{name}")


def test_module_and_file_specs_load_and_bad_specs_are_one_line(tmp_path, rf):
    assert load_reward_function("rlhfkit.world.verify:verify").name == "rlhfkit.world.verify:verify"
    assert rf("length").name == "rf:length"
    for spec, words in (("nocolon", "module:function"), (f"{tmp_path}/none.py:f", "no such file"),
                        ("no_such_module_x:f", "no module named"), ("rlhfkit.world.verify:nothing", "no function")):
        with pytest.raises(UserError, match=words):
            load_reward_function(spec)


def test_answers_are_checked_and_errors_name_the_function_and_the_row(rf):
    where = [f"p.jsonl: prompt {i + 1}" for i in range(3)]
    prompts, completions = ["a", "b", "c"], ["x y", "z", "Q"]
    assert call_reward_function(rf("length"), prompts, completions, {}, where) == [2.0, 1.0, 1.0]
    assert call_reward_function(rf("shout"), prompts, completions, {}, where) == [None, None, 1.0]
    with pytest.raises(UserError, match=r"rf:nan returned nan for p.jsonl: prompt 1"):
        call_reward_function(rf("nan"), prompts, completions, {}, where)
    with pytest.raises(UserError, match=r"rf:short returned 1 values for 3 completions"):
        call_reward_function(rf("short"), prompts, completions, {}, where)
    with pytest.raises(UserError, match=r"rf:words returned 'good' \(str, not a float\) for p.jsonl: prompt 1"):
        call_reward_function(rf("words"), prompts, completions, {}, where)
    # the batch call raises; the row that raises alone is the one named
    with pytest.raises(UserError, match=r"rf:picky raised ValueError: row 17 is bad on p.jsonl: prompt 3$"):
        call_reward_function(rf("picky"), prompts, completions, {"n": [5, 9, 17]}, where)


class _RM:
    def score_samples(self, samples):
        return torch.tensor([0.5, -1.0])


def _samples(prompts, texts):
    ids = torch.zeros(2, 2, dtype=torch.long)
    return Samples(ids, torch.ones_like(ids), ids, torch.ones_like(ids), torch.tensor([True, False]), texts, prompts)


def test_weighted_sum_of_the_rm_and_the_functions_none_adds_nothing(rf):
    rewards = Rewards(_RM(), 2.0, [rf("length"), rf("shout")], (0.5, 3.0))
    batch = RewardBatch(_samples(["p", "q"], ["a b c d", "HI"]), [{}, {}], ["row 1", "row 2"])
    total, columns = rewards.score(batch)
    # row 1: 2·0.5 + 0.5·4 + 3·(None -> 0) = 3.0; row 2: 2·(−1) + 0.5·1 + 3·1 = 1.5
    assert total.tolist() == [3.0, 1.5]
    assert columns["rm"].tolist() == [0.5, -1.0] and columns["rf:length"].tolist() == [4.0, 1.0]
    assert math.isnan(columns["rf:shout"][0]) and columns["rf:shout"][1] == 1.0
    assert rewards.take_time() >= 0.0 and rewards.take_time() == 0.0


def test_conversational_completions_are_assistant_messages():
    conversation = [{"role": "user", "content": "hi"}]
    assert completions_of([conversation, "plain"], ["hello", "x"]) == [
        [{"role": "assistant", "content": "hello"}], "x"]


def test_world_gold_is_a_named_judge_and_a_function_can_judge_too(rf):
    gold = load_judge("world:gold").score(["sort these words : pear apple fig ."], ["apple fig pear"], [True],
                                          [{}], ["row 1"])
    assert gold == {"gold": [2.0], "gold_correctness": [1.0]}
    with pytest.raises(UserError, match="unknown judge"):
        load_judge("world:silver")
    judged = load_judge("rlhfkit.world.verify:verify").score(["count the words : cat dog owl ."], ["three"], [True],
                                                             [{}], ["row 1"])
    assert judged == {"judge/rlhfkit.world.verify:verify": [1.0]}


def test_world_gold_loads_by_name_in_a_process_that_never_imported_the_world():
    """`world:gold` is resolved through the reward functions' loader when named, not registered as a side effect of
    importing `rlhfkit.world.gold` (which the lazy CLI no longer does): a fresh interpreter that imported only the
    judges' module scores with it."""
    code = ("import sys\nfrom rlhfkit.rewards.sources import load_judge, world_judge\n"
            "assert 'rlhfkit.world.gold' not in sys.modules\n"
            "print(load_judge('world:gold').score(['sort these words : pear apple fig .'], ['apple fig pear'], [True], "
            "[{}], ['row 1']))\n"
            "print(world_judge('.').reward('sort these words : pear apple fig .', 'apple fig pear').total)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["{'gold': [2.0], 'gold_correctness': [1.0]}", "2.0"]
