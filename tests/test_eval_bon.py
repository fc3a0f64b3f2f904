"""`rlhf eval bon` picks the best of n by a reward model, by reward functions (`--reward-fn`), or by their sum."""

import json

import numpy as np
import pytest

from rlhfkit.eval.bon import best_of_n
from rlhfkit.models.loading import load_causal_lm, load_tokenizer
from rlhfkit.rewards.combine import Rewards
from rlhfkit.rewards.functions import load_reward_function
from tests.conftest import run_cli

SHORTEST = '''
def shortest(prompts, completions, **kw):
    return [-float(len(c.split())) for c in completions]
'''


def test_reward_functions_pick_the_best_of_n(micro_world, tmp_path):
    (tmp_path / "rf.py").write_text(SHORTEST)
    tokenizer = load_tokenizer(micro_world / "base")
    policy = load_causal_lm(micro_world / "base", tokenizer).eval()
    rewards = Rewards(None, 1.0, [load_reward_function(f"{tmp_path}/rf.py:shortest")])
    prompts = ["list three animals .", "count the words : cat dog owl ."]
    bon = best_of_n(policy, tokenizer, rewards, prompts, n=4, max_new_tokens=8, missing_eos_penalty=None)
    lengths = np.array([[len(t.split()) for t in row] for row in bon.texts])
    assert np.array_equal(bon.rm, -lengths)  # each sample's score is the function's value
    assert np.array_equal(lengths[np.arange(2), bon.chosen(4)], lengths.min(axis=1))  # the shortest is kept


def test_eval_bon_by_the_world_verifier_alone(micro_world, tmp_path, capsys):
    out = tmp_path / "bon.json"
    code, stdout, err = run_cli(["eval", "bon", "--policy", micro_world / "base", "--world", micro_world,
                                 "--reward-fn", "rlhfkit.world.verify:verify", "--n", "2", "--limit", "4",
                                 "--judge", "world:gold,rlhfkit.world.verify:verify", "--json-out", out], capsys)
    assert code == 0, err
    result = json.loads(out.read_text())
    assert result["reward"] is None and result["reward_fn"] == ["rlhfkit.world.verify:verify"]
    assert [row["n"] for row in result["curve"]] == [1, 2] and "verify" in stdout
    # the judges report on the kept samples: world:gold's mean is the curve's gold at n = 2
    assert result["judges"]["world:gold"]["gold"] == pytest.approx(result["curve"][-1]["gold"], abs=1e-4)
    assert set(result["judges"]["rlhfkit.world.verify:verify"]) == {"judge/rlhfkit.world.verify:verify"}
