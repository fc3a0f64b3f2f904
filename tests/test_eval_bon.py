"""`rlhf eval bon` picks the best of n by a reward model, by reward functions (`--reward-fn`), or by their sum."""

import json

import numpy as np
import pytest
import torch

from rlhfkit.eval import commands
from rlhfkit.eval.bon import best_of_n
from rlhfkit.models.loading import load_causal_lm, load_tokenizer
from rlhfkit.models.reward_model import RewardModel
from rlhfkit.models.scalar import ScalarModel
from rlhfkit.rewards.combine import Rewards
from rlhfkit.rewards.functions import load_reward_function
from tests.conftest import run_cli
from tests.train.test_packing import _counting_packs, _packs_inside
from tests.train.test_reward import PROMPTS

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


def _reward_dir(tmp_path, policy_dir):
    """A reward model of the policy's architecture (random head), saved with its tokenizer: the user's own RM."""
    out = tmp_path / "rm"
    ScalarModel.from_backbone(policy_dir).save_pretrained(out)
    load_tokenizer(policy_dir).save_pretrained(out)
    return out


def test_eval_bon_scores_your_own_prompts_with_your_rm_without_a_world(micro_world, tmp_path, capsys):
    """--prompts instead of --world: the picks are reported by RM reward (no gold: there is none outside the toy
    world), on the prompts of the file, sampled on --device with --threads as every trainer takes them."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["list three animals .", "name a color ."]))
    out = tmp_path / "bon.json"
    code, stdout, err = run_cli(["eval", "bon", "--policy", micro_world / "base", "--prompts", prompts,
                                 "--reward", _reward_dir(tmp_path, micro_world / "base"), "--n", "2",
                                 "--max-new-tokens", "6", "--device", "cpu", "--threads", "1", "--json-out", out],
                                capsys)
    assert code == 0, err
    result = json.loads(out.read_text())
    assert result["prompts"] == 2 and [row["n"] for row in result["curve"]] == [1, 2]
    assert all(set(row) == {"n", "kl", "rm"} for row in result["curve"])  # RM reward, no gold column
    assert "gold" not in stdout and "on 2 " in stdout


def test_eval_bon_needs_a_world_or_prompts(micro_world, tmp_path, capsys):
    code, _, err = run_cli(["eval", "bon", "--policy", micro_world / "base", "--reward-fn",
                            "rlhfkit.world.verify:verify"], capsys)
    assert code == 2 and "give --world" in err and "--prompts" in err and err.count("\n") == 1


def test_eval_rm_takes_device_and_threads(micro_world, tmp_path, capsys):
    """`rlhf eval rm --device --threads`, as every trainer (they were refused as unknown arguments)."""
    data = tmp_path / "rankings.jsonl"
    data.write_text("".join(json.dumps({"id": str(i), "prompt": "list three animals .", "labeler": "a",
                                        "completions": ["cat dog owl", "cat"], "ranking": [[0], [1]]}) + "\n"
                            for i in range(3)))
    threads = torch.get_num_threads()
    try:
        code, stdout, err = run_cli(["eval", "rm", "--rm", _reward_dir(tmp_path, micro_world / "base"), "--data",
                                     data, "--device", "cpu", "--threads", "1"], capsys)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert code == 0, err
    assert "held-out accuracy" in stdout and "3 comparisons" in stdout
    code, _, err = run_cli(["eval", "rm", "--rm", tmp_path / "rm", "--data", data, "--device", "cuda:99"], capsys)
    assert code == 2 and "config key 'device'" in err


@pytest.mark.parametrize("command", ["eval rm", "eval bon"])
def test_eval_rm_and_bon_score_packed_under_packing(command, micro_world, tmp_path, capsys, monkeypatch):
    """`rlhf eval rm` and `rlhf eval bon` take --packing as the trainers do (on by default): the RM's held-out
    accuracy, loss and gold measurements, and best-of-n's RM scores of the samples (and a judge RM's), are computed
    packed — `pk.pack` called inside each — and with --no-packing padded; the figures agree to float rounding.
    Completions of 1 to 6 words after prompts of uneven lengths. Before, both always ran padded (and refused
    --packing as an unknown argument)."""
    calls = _counting_packs(monkeypatch)
    rm = _reward_dir(tmp_path, micro_world / "base")
    if command == "eval rm":
        inside = _packs_inside(monkeypatch, calls, commands, ("pairwise_accuracy", "gold_measurements"))
        data = tmp_path / "rankings.jsonl"
        outs = ["the cat", "a dog runs fast and slow", "one", "the pig runs"]
        data.write_text("".join(json.dumps({"id": f"q{i}", "prompt": PROMPTS[i % len(PROMPTS)], "labeler": "a",
                                            "completions": outs[i % 2:],
                                            "ranking": [[0], [1], [2]] if i % 2 else [[0], [1, 2], [3]]}) + "\n"
                                for i in range(6)))
        args = ["eval", "rm", "--rm", rm, "--data", data, "--world", micro_world]
        keys = ["heldout_accuracy", "heldout_loss", "spearman_gold", "rm_score_mean"]
    else:
        inside = _packs_inside(monkeypatch, calls, RewardModel, ("score_texts",))
        (tmp_path / "judge").mkdir()
        judge = _reward_dir(tmp_path / "judge", micro_world / "base")
        args = ["eval", "bon", "--policy", micro_world / "base", "--world", micro_world, "--reward", rm, "--n", "2",
                "--limit", "3", "--judge", judge]
        keys = ["rm", "gold", "kl", "judge_rm"]
    figures = {}
    for packing in ("--no-packing", "--packing"):
        inside.clear()
        code, _, err = run_cli([*args, "--threads", "1", packing, "--json-out", tmp_path / f"{packing}.json"], capsys)
        assert code == 0, err
        assert inside and all((n > 0) == (packing == "--packing") for counts in inside.values() for n in counts), (
            packing, inside)
        result = json.loads((tmp_path / f"{packing}.json").read_text())
        if command == "eval bon":  # each n's mean RM score, gold and KL of the picks; the judge RM's on them
            result = {k: [row[k] for row in result["curve"]] for k in keys[:3]} | result["judges"][str(judge)]
        figures[packing] = result
    for key in keys:  # rounded to 4 decimals in the JSON
        assert figures["--packing"][key] == pytest.approx(figures["--no-packing"][key], abs=1.5e-4), key
