"""`rlhf compare --label-budget`: the label-efficiency experiment (recipes/label_budget.py) and its arithmetic
(eval/label_budget.py)."""

import json
import math
import shutil
from collections import Counter
from pathlib import Path

import pytest

from rlhfkit.data.jsonl import read_jsonl
from rlhfkit.eval.label_budget import efficiency, labels_to_reach, mean_curves, mean_interval
from rlhfkit.recipes import pipeline as stages
from rlhfkit.world.gold import gold_reward
from tests.conftest import run_cli


def sharp_judge(prompts, completions, **_):
    """Stands in for an AI labeler good enough to pass the loop's check against people (the test is about
    counting labels, not about the judge): the gold reward, ×4 so that its confidence σ(|Δs|) is high."""
    return [4 * gold_reward(p, c).total for p, c in zip(prompts, completions)]


# ------------------------------------------------------------------------------------------ arithmetic

def test_mean_interval_by_hand():
    # x = 1, 2, 3: x̄ = 2, s² = (1 + 0 + 1)/2 = 1, half = t_{0.975,2}·s/√3 = 4.303/1.7320508 = 2.48434
    m = mean_interval([1.0, 2.0, 3.0])
    assert m["mean"] == pytest.approx(2.0)
    assert m["low"] == pytest.approx(2 - 2.48434, abs=1e-5) and m["high"] == pytest.approx(2 + 2.48434, abs=1e-5)
    # two values 0.5, 0.7: x̄ = 0.6, s = √(0.02) = 0.141421, half = 12.706·0.141421/√2 = 1.2706
    m = mean_interval([0.5, 0.7])
    assert m["low"] == pytest.approx(0.6 - 1.2706, abs=1e-6) and m["high"] == pytest.approx(0.6 + 1.2706, abs=1e-6)
    assert mean_interval([0.42]) == {"mean": 0.42, "low": 0.42, "high": 0.42, "n": 1}


def test_labels_to_reach_interpolates_linearly():
    # segment (100, 0.6)–(200, 0.8), target 0.7: 100 + (0.7 − 0.6)/(0.8 − 0.6)·100 = 150
    assert labels_to_reach([0, 100, 200], [0.4, 0.6, 0.8], 0.7) == pytest.approx(150.0)
    # the first crossing counts, even if the curve falls again: (0, 0.4)–(100, 0.9) at 0.5 → 0 + 0.1/0.5·100 = 20
    assert labels_to_reach([0, 100, 200], [0.4, 0.9, 0.3], 0.5) == pytest.approx(20.0)
    assert labels_to_reach([0, 100], [0.8, 0.9], 0.7) == 0.0
    assert labels_to_reach([0, 100, 200], [0.4, 0.6, 0.69], 0.7) is None


def test_mean_curves_and_efficiency_by_hand():
    pts = []
    for seed, (g1, g2) in enumerate([(0.5, 0.7), (0.7, 0.9)]):  # random: round means 0.6, 0.8 at 100, 200 labels
        pts += [{"arm": "random", "seed": seed, "round": 1, "human_labels": 100, "judge_labels": 0, "gold": g1,
                 "rm_accuracy": 0.6, "win_vs_sft": 0.6},
                {"arm": "random", "seed": seed, "round": 2, "human_labels": 200, "judge_labels": 0, "gold": g2,
                 "rm_accuracy": None, "win_vs_sft": 0.7}]
    for seed, (h1, g1) in enumerate([(40, 0.7), (60, 0.9)]):  # active: 50 labels, mean gold 0.8 after round 1
        pts.append({"arm": "active", "seed": seed, "round": 1, "human_labels": h1, "judge_labels": 10, "gold": g1,
                    "rm_accuracy": 0.7, "win_vs_sft": 0.7})
    curves = mean_curves(pts)
    assert [r["round"] for r in curves["random"]] == [1, 2]
    assert curves["random"][1]["gold"]["mean"] == pytest.approx(0.8)
    assert curves["random"][1]["rm_accuracy"] is None  # no seed has it
    # gold 0.5, 0.7 → x̄ = 0.6, s = 0.141421, half = 12.706·0.141421/√2 = 1.2706
    assert curves["random"][0]["gold"]["high"] == pytest.approx(0.6 + 1.2706, abs=1e-6)
    assert curves["active"][0]["human_labels"]["mean"] == 50
    # active's curve from SFT (0 labels, gold 0.4) to (50, 0.8) reaches random's final 0.8 at 50 labels: 50/200
    e = efficiency(curves, sft_gold=0.4)
    assert e["active"]["labels_needed"] == pytest.approx(50.0) and e["active"]["ratio"] == pytest.approx(0.25)
    assert e["active"]["at_most_half"]
    # against a target of 0.6 (random's round 1 only): 0 + (0.6 − 0.4)/(0.8 − 0.4)·50 = 25 labels
    e = efficiency({"random": curves["random"][:1], "active": curves["active"]}, sft_gold=0.4)
    assert e["active"]["labels_needed"] == pytest.approx(25.0) and e["active"]["ratio"] == pytest.approx(0.25)


# -------------------------------------------------------------------------------------------- the command

def test_label_budget_runs_end_to_end_and_counts_only_people(micro_world, tmp_path, capsys):
    out = tmp_path / "lb"
    code, stdout, err = run_cli(["compare", "--world", micro_world, "--out", out, "--label-budget",
                                 "random,uncertain+judge", "--rounds", "2", "--seeds", "0", "--prompts-per-round",
                                 "40", "--ppo-steps", "1", "--threads", "1",
                                 "--label-judge", f"{__file__}:sharp_judge", "--label-judge-threshold", "0.6"], capsys)
    assert code == 0, err
    report = json.loads((out / "label_budget.json").read_text())
    assert (out / "label_budget.png").stat().st_size > 0
    assert "| random | 2 |" in (out / "label_budget.txt").read_text() and "| uncertain+judge | 2 |" in stdout
    assert {(p["arm"], p["round"]) for p in report["points"]} == {(a, r) for a in ("random", "uncertain+judge")
                                                                  for r in (1, 2)}
    for p in report["points"]:
        assert {"seed", "human_labels", "judge_labels", "gold", "rm_accuracy", "win_vs_sft", "judge_used"} <= set(p)
        assert math.isfinite(p["gold"]) and 0 <= p["win_vs_sft"] <= 1 and 0 <= p["rm_test_accuracy"] <= 1
    assert len(read_jsonl(out / "seed-0" / "test-rankings.jsonl")) > 0  # the seed's one test set for every RM
    # every arm of the seed started from the one SFT policy: the same SFT gold
    assert len({p["gold_sft"] for p in report["points"]}) == 1
    judged = [p for p in report["points"] if p["arm"] == "uncertain+judge"]
    assert all(p["judge_used"] for p in judged) and judged[-1]["judge_labels"] > 0
    # human labels are people's rankings only: count them in the loop's own files
    rankings = [r for k in (1, 2) for r in read_jsonl(out / "seed-0" / "uncertain-judge" / f"round-{k}" /
                                                      "rankings.jsonl")]
    people = [r for r in rankings if not r["labeler"].startswith("judge:")]
    assert judged[-1]["human_labels"] == len(people)
    assert judged[-1]["judge_labels"] == len(rankings) - len(people)
    random_rows = [p for p in report["points"] if p["arm"] == "random"]
    assert [p["human_labels"] for p in random_rows] == [80, 160] and random_rows[-1]["judge_labels"] == 0
    assert set(report["reach_random_final_gold"]) == {"uncertain+judge"}


def test_a_refused_judge_arm_still_runs_and_says_so(micro_world, tmp_path, capsys):
    # threshold 1: no interval's lower end reaches it, so the loop's check refuses the judge
    code, stdout, err = run_cli(["compare", "--world", micro_world, "--out", tmp_path / "lb", "--label-budget",
                                 "uncertain+judge", "--rounds", "1", "--prompts-per-round", "20", "--ppo-steps", "1",
                                 "--threads", "1", "--label-judge", f"{__file__}:sharp_judge",
                                 "--label-judge-threshold", "1"], capsys)
    assert code == 0, err
    (point,) = json.loads((tmp_path / "lb" / "label_budget.json").read_text())["points"]
    assert point["judge_used"] is False and point["judge_labels"] == 0 and point["human_labels"] > 0
    assert "| uncertain+judge | 1 |" in stdout and "| 0/1 seeds |" in stdout


@pytest.mark.parametrize("extra, expected", [
    (["--label-budget", "random,bogus"], "unknown arm 'bogus'"),
    (["--label-budget", "random,random+judge"], "unknown arm 'random+judge'"),
    (["--label-budget", "random,random"], "an arm is named twice"),
    (["--label-budget", "uncertain+judge", "--label-judge", "world:gold"], "world:gold is the hidden truth"),
    (["--label-budget", "random", "--rounds", "0"], "config key 'rounds' must be at least 1"),
    (["--label-budget", "random", "--label-judge-confidence", "1.5"], "'label_judge_confidence' must be from 0"),
    (["--rounds", "3"], "config key 'rounds' is a setting of --label-budget"),
    (["--label-budget", "uncertain+judge", "--label-judge", "no_such_module_xyz:f"], "no_such_module_xyz"),
])
def test_label_budget_bad_flags_give_one_line(extra, expected, micro_world, tmp_path, capsys):
    code, _, err = run_cli(["compare", "--world", micro_world, "--out", tmp_path / "lb", *extra], capsys)
    assert code == 2, err
    assert expected in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "lb").exists()


def test_compare_help_names_the_label_budget_options(capsys):
    code, out, _ = run_cli(["compare", "--help"], capsys)
    assert code == 0 and "--label-budget" in out and "--label-judge-threshold" in out


# ------------------------------------------------------------------------------------------ --resume

RESUME_FLAGS = ["--rounds", "2", "--seeds", "0", "--prompts-per-round", "20", "--ppo-steps", "1", "--threads", "1"]


def label_budget(world, out, arms: str, capsys, *extra):
    return run_cli(["compare", "--world", world, "--out", out, "--label-budget", arms, *RESUME_FLAGS, *extra], capsys)


@pytest.fixture
def trainings(monkeypatch):
    """Counts the SFT, RM and PPO trainings and the simulated labelings the command starts (the real ones run);
    `stop[name] = n` makes the n-th one of that stage (counted from then on) a Ctrl-C, a user stopping the run."""
    counts, stop = Counter(), {}

    def counting(name, real):
        def counted(*args, **kwargs):
            counts[name] += 1
            if stop.get(name) == counts[name]:
                raise KeyboardInterrupt
            return real(*args, **kwargs)
        return counted

    for name in ("sft", "simulate", "reward_model", "ppo"):
        monkeypatch.setattr(stages, name, counting(name, getattr(stages, name)))
    return counts, stop


def without_walls(report: dict) -> dict:
    """The report but its wall times (a resumed unit's is the time of the invocation that finished it)."""
    report = {k: v for k, v in report.items() if k not in ("wall_s", "runs_wall_s")}
    report["points"] = [{k: v for k, v in p.items() if k != "wall_s"} for p in report["points"]]
    return report


def test_an_interrupted_run_resumes_to_the_same_report_without_retraining(micro_world, tmp_path, capsys, trainings):
    counts, stop = trainings
    whole = tmp_path / "whole"
    assert label_budget(micro_world, whole, "random,uncertain,disagree", capsys)[0] == 0
    assert counts == {"sft": 1, "simulate": 7, "reward_model": 6, "ppo": 6}  # the test set, 3 arms × 2 rounds
    expected = json.loads((whole / "label_budget.json").read_text())

    # stopped at the 3rd PPO: arm random (2 rounds) finished, arm uncertain's round 1 has its RM but no PPO
    counts.clear()
    stop["ppo"] = 3
    out = tmp_path / "lb"
    assert label_budget(micro_world, out, "random,uncertain", capsys)[0] == 130
    assert not (out / "label_budget.json").exists()
    counts.clear()
    stop.clear()
    code, stdout, err = label_budget(micro_world, out, "random,uncertain", capsys, "--resume")
    assert code == 0, err
    # nothing finished is trained again: uncertain's round 1 PPO and its round 2 only
    assert counts == {"simulate": 1, "reward_model": 1, "ppo": 2}
    assert "arm random: finished earlier, reused" in stdout
    assert "arm uncertain: rlhf loop, 2 rounds, continuing" in stdout
    partial = json.loads((out / "label_budget.json").read_text())
    assert partial["arms"] == ["random", "uncertain"]
    assert without_walls(partial)["points"] == [p for p in without_walls(expected)["points"] if p["arm"] != "disagree"]

    # an arm added to the finished run: only it is trained, and the report is the uninterrupted run's
    counts.clear()
    code, _, err = label_budget(micro_world, out, "random,uncertain,disagree", capsys, "--resume")
    assert code == 0, err
    assert counts == {"simulate": 2, "reward_model": 2, "ppo": 2}
    resumed = json.loads((out / "label_budget.json").read_text())
    assert without_walls(resumed) == without_walls(expected)
    assert (out / "label_budget.txt").read_text() == (whole / "label_budget.txt").read_text()

    # an arm left out: the report covers the arms named, from the records, nothing trained
    counts.clear()
    code, stdout, err = label_budget(micro_world, out, "uncertain", capsys, "--resume")
    assert code == 0, err
    assert not counts and json.loads((out / "label_budget.json").read_text())["arms"] == ["uncertain"]


def test_a_run_stopped_in_a_seeds_test_set_resumes_and_takes_a_seed_more(micro_world, tmp_path, capsys, trainings):
    counts, stop = trainings
    out = tmp_path / "lb"
    stop["simulate"] = 1  # seed 0's test set: its SFT and samples are written, not its people's rankings
    assert label_budget(micro_world, out, "random", capsys, "--rounds", "1")[0] == 130
    assert (out / "seed-0" / "test-candidates.jsonl").exists() and not (out / "seed-0" / "test-rankings.jsonl").exists()
    counts.clear()
    stop.clear()
    code, _, err = label_budget(micro_world, out, "random", capsys, "--rounds", "1", "--resume")
    assert code == 0, err
    assert counts == {"simulate": 2, "reward_model": 1, "ppo": 1}  # the test set again, the round; SFT kept
    counts.clear()
    code, _, err = label_budget(micro_world, out, "random", capsys, "--rounds", "1", "--seeds", "0,1", "--resume")
    assert code == 0, err
    assert counts == {"sft": 1, "simulate": 2, "reward_model": 1, "ppo": 1}  # seed 1 only
    whole = tmp_path / "whole"
    assert label_budget(micro_world, whole, "random", capsys, "--rounds", "1", "--seeds", "0,1")[0] == 0
    assert without_walls(json.loads((out / "label_budget.json").read_text())) == \
        without_walls(json.loads((whole / "label_budget.json").read_text()))


def tree(path: Path) -> dict:
    return {str(p.relative_to(path)): (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(path.rglob("*"))}


def test_a_resume_with_other_settings_is_refused_and_writes_nothing(micro_world, tmp_path, capsys):
    world = tmp_path / "world"
    shutil.copytree(micro_world, world)
    out = tmp_path / "lb"
    assert label_budget(world, out, "random", capsys, "--rounds", "1")[0] == 0
    before = tree(out)
    for extra, expected in [
        (["--rounds", "2"], "cannot resume with other settings: rounds (1 -> 2)"),
        (["--rounds", "1", "--prompts-per-round", "30"], "prompts_per_round (20 -> 30)"),
        (["--rounds", "1", "--label-judge-threshold", "0.9"], "label_judge_threshold (0.7 -> 0.9)"),
        (["--rounds", "1", "--label-judge", f"{__file__}:sharp_judge"], "label_judge ("),
        (["--rounds", "1", "--kl-coef", "0.5"], "kl_coef ("),
        (["--rounds", "1", "--overwrite"], "config keys 'resume' and 'overwrite': give one"),
    ]:
        code, _, err = label_budget(world, out, "random", capsys, *extra, "--resume")
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, (extra, err)
        assert tree(out) == before, extra
    # another world: by path, or the same path rebuilt (its world.json changed)
    code, _, err = label_budget(micro_world, out, "random", capsys, "--rounds", "1", "--resume")
    assert code == 2 and "cannot resume with other settings: world (" in err and len(err.strip().splitlines()) == 1
    meta = json.loads((world / "world.json").read_text())
    (world / "world.json").write_text(json.dumps({**meta, "seed": 1}))
    code, _, err = label_budget(world, out, "random", capsys, "--rounds", "1", "--resume")
    assert code == 2 and "this world's world.json is not the one the run used" in err, err
    assert len(err.strip().splitlines()) == 1 and tree(out) == before


def test_resume_is_refused_where_there_is_no_label_budget_run(micro_world, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    code, _, err = label_budget(micro_world, other, "random", capsys, "--resume")
    assert code == 2 and "cannot resume: not a run directory (no config.toml)" in err
    methods = tmp_path / "methods"
    methods.mkdir()
    (methods / "config.toml").write_text('world = "w"\nmethods = ["sft"]\n')
    code, _, err = label_budget(micro_world, methods, "random", capsys, "--resume")
    assert code == 2 and "not a run of `rlhf compare --label-budget`" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in methods.iterdir()) == ["config.toml"]
    # without OUT, --resume starts the run; without --label-budget it is refused
    code, _, err = run_cli(["compare", "--world", micro_world, "--out", tmp_path / "m", "--resume"], capsys)
    assert code == 2 and "config key 'resume' is a setting of --label-budget" in err
