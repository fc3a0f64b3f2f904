"""`rlhf compare` on the micro world: every method on the same SFT model, rankings and held-out prompts."""

import json
import math

import pytest
import torch

from rlhfkit.recipes.compare import combine, mean_curves
from tests.conftest import run_cli

METHODS = ("sft", "bon", "dpo", "ppo", "rloo")


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_compare_micro_reports_every_method_with_win_rates_and_curves(micro_world, tmp_path, capsys):
    out = tmp_path / "cmp"
    code, stdout, err = run_cli(["compare", "--world", micro_world, "--methods", "ppo,sft,bon,dpo,rloo", "--out", out,
                                 "--bon-n", "4", "--curve-points", "2", "--ppo-steps", "2", "--threads", "1"], capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert list(report["methods"]) == list(METHODS)  # the table's order, whatever order was asked for
    for name, m in report["methods"].items():
        assert {"gold", "rm", "kl", "wall_s", "episodes", "win_vs_sft"} <= set(m), name
        assert set(m["win_vs_sft"]) == {"rate", "ci_low", "ci_high", "n"}
        assert m["win_vs_sft"]["n"] == 64  # the micro world's held-out prompts
        assert m["win_vs_sft"]["ci_low"] <= m["win_vs_sft"]["rate"] <= m["win_vs_sft"]["ci_high"]
    methods = report["methods"]
    assert methods["sft"]["kl"] == 0.0  # SFT against itself
    assert methods["bon"]["kl"] == pytest.approx(math.log(4) - 3 / 4, abs=1e-4)  # KL_BoN = log n − (n−1)/n
    assert methods["ppo"]["episodes"] == methods["rloo"]["episodes"] == 2 * 16  # the micro plan's batch
    assert methods["dpo"]["episodes"] == 0
    curves = report["curves"]
    assert [p["n"] for p in curves["bon"]] == [1, 2, 3, 4]
    for name in ("dpo", "ppo", "rloo"):  # SFT, the checkpoints saved along the run, the final policy
        assert curves[name][0] == {"step": 0, **{k: curves["sft"][0][k] for k in ("kl", "gold", "rm")}}
        assert len(curves[name]) >= 3 and curves[name][-1]["step"] == "final", name
        assert curves[name][-1]["gold"] == methods[name]["gold"]
    seed_dir = out / "seed-0"
    assert not (seed_dir / "rloo" / "value").exists() and (seed_dir / "ppo" / "value").exists()
    for png in ("reward_vs_sqrt_kl.png", "win_rates.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "rloo" in html
    assert "win vs SFT" in stdout and "rloo" in stdout


def test_unknown_method_exits_2_before_anything_runs(micro_world, tmp_path, capsys):
    code, _, err = run_cli(["compare", "--world", micro_world, "--methods", "sft,sac", "--out", tmp_path / "c"],
                           capsys)
    assert code == 2 and "sac" in err
    assert not (tmp_path / "c").exists()


def _seed(seed, gold_ppo, reference, rate):
    row = {"gold": float(sum(gold_ppo)) / len(gold_ppo), "rm": 1.0 + seed, "kl": 2.0 * (seed + 1), "wall_s": 10.0,
           "episodes": 64, "win_vs_sft": {"rate": rate, "ci_low": 0.0, "ci_high": 1.0, "n": len(gold_ppo)}}
    curve = [{"step": 0, "kl": 0.0, "gold": 0.0, "rm": 0.0}, {"step": 2, "kl": 1.0 + seed, "gold": 0.5, "rm": 1.0},
             {"step": "final", "kl": 2.0 * (seed + 1), "gold": 1.0 + seed, "rm": 2.0}]
    return {"seed": seed, "methods": {"ppo": row}, "curves": {"ppo": curve},
            "golds": {"ppo": gold_ppo, "reference": reference}}


def test_several_seeds_give_mean_std_and_a_win_rate_pooled_over_seeds_and_prompts():
    # seed 0: PPO wins 2 of 2 prompts; seed 1: it wins 1 and ties 1 -> pooled (1 + 1 + 1 + ½) / 4 = 0.875
    seeds = [_seed(0, [1.0, 1.0], [0.0, 0.0], 1.0), _seed(1, [1.0, 0.0], [0.0, 0.0], 0.75)]
    ppo = combine(seeds, ["ppo"])["ppo"]
    assert ppo["gold"] == pytest.approx(0.75)                     # mean of 1.0 and 0.5
    assert ppo["across_seeds"]["gold"]["std"] == pytest.approx(0.3536, abs=1e-4)  # |1.0 − 0.5| / √2
    assert ppo["across_seeds"]["kl"]["values"] == [2.0, 4.0] and ppo["kl"] == 3.0
    assert ppo["across_seeds"]["win_rate"]["mean"] == pytest.approx(0.875)
    assert ppo["win_vs_sft"]["rate"] == pytest.approx(0.875) and ppo["win_vs_sft"]["n"] == 4
    curve = mean_curves(seeds, "ppo")
    assert [p["kl"] for p in curve] == [0.0, 1.5, 3.0] and curve[-1]["step"] == "final"


def test_one_seed_reports_its_own_figures_without_a_spread():
    seeds = [_seed(0, [1.0, 1.0], [0.0, 0.0], 1.0)]
    ppo = combine(seeds, ["ppo"])["ppo"]
    assert ppo == seeds[0]["methods"]["ppo"] and "across_seeds" not in ppo


def test_rl_methods_on_the_rm_the_verifier_and_both_judged_by_gold(micro_world, tmp_path, capsys):
    out = tmp_path / "cmp"
    code, stdout, err = run_cli(["compare", "--world", micro_world, "--methods", "sft,rloo,grpo", "--trained-on",
                                 "rm,fn,rm+fn", "--out", out, "--curve-points", "1", "--ppo-steps", "1",
                                 "--threads", "1"], capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    runs = ["sft", "rloo", "rloo-fn", "rloo-rm+fn", "grpo", "grpo-fn", "grpo-rm+fn"]
    assert list(report["methods"]) == runs
    seed_dir = out / "seed-0"
    for run in runs[1:]:
        config = (seed_dir / run / "config.toml").read_text()
        assert 'judge = ["world:gold"]' in config, run  # judged by gold, never trained on it
        trained_on_fn = 'reward_fn = ["rlhfkit.world.verify:verify"]' in config
        assert trained_on_fn == ("fn" in run), run
        assert ("reward = " in config) == (run.split("-")[-1] != "fn"), run
        metrics = json.loads((seed_dir / run / "metrics.jsonl").read_text().splitlines()[-1])
        assert "gold" in metrics and ("reward/rlhfkit.world.verify:verify" in metrics) == trained_on_fn
    assert "grpo-rm+fn" in stdout


def test_an_unknown_reward_source_or_reward_function_exits_2_before_anything_runs(micro_world, tmp_path, capsys):
    code, _, err = run_cli(["compare", "--world", micro_world, "--methods", "grpo", "--trained-on", "gold",
                            "--out", tmp_path / "c"], capsys)
    assert code == 2 and "trained_on" in err
    code, _, err = run_cli(["compare", "--world", micro_world, "--methods", "grpo", "--trained-on", "fn",
                            "--reward-fn", "nowhere_module:f", "--out", tmp_path / "c"], capsys)
    assert code == 2 and "nowhere_module" in err
    assert not (tmp_path / "c").exists()
