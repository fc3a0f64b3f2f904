"""The whole loop in one command, on the micro preset: report keys, HTML, plots, PPO beating SFT by gold."""

import json
import re
import tomllib

import pytest

from rlhfkit.recipes.demo import use_bf16
from tests.conftest import run_cli

KEYS = {"preset", "seed", "wall_s", "win_rates", "gold", "rm", "ppo", "labelers"}


def test_demo_micro_writes_the_report_and_ppo_beats_sft(micro_world, tmp_path, capsys):
    out = tmp_path / "demo"
    code, stdout, err = run_cli(["demo", "--world", micro_world, "--out", out, "--methods", "dpo,rloo"], capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["preset"] == "micro"  # no --preset: the plan of the --world's own preset, not the default tiny
    for policy in ("sft", "ppo"):  # the table shows right answers beside the win rates
        shown = f"{report['components'][policy]['gold_correctness']:.3f}"
        assert re.search(rf"gold correctness: {policy.upper()}\s+{shown}", stdout), stdout
    assert KEYS <= set(report)
    for name in ("sft_vs_base", "ppo_vs_sft", "ppo_vs_bon"):
        assert set(report["win_rates"][name]) >= {"rate", "ci_low", "ci_high", "n"}
    assert set(report["gold"]) >= {"base", "sft", "bon", "ppo"}
    assert set(report["rm"]) >= {"heldout_accuracy", "noise_ceiling", "n_pairs"}
    assert sum(row["n_pairs"] for row in report["rm"]["by_component"].values()) == report["rm"]["n_pairs"]
    assert set(report["ppo"]) >= {"kl", "steps", "episodes"}
    assert "pairwise_agreement" in report["labelers"]
    assert report["gold"]["ppo"] > report["gold"]["sft"]
    assert set(report["methods"]) == {"sft", "bon", "dpo", "ppo", "rloo"}  # `--methods`' comparison table in the report
    for row in report["methods"].values():
        assert {"gold", "rm", "kl", "wall_s"} <= set(row) and set(row["win_vs_sft"]) >= {"rate", "ci_low", "n"}
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "<script" not in html
    for png in ("ppo_curves.png", "reward_vs_sqrt_kl.png", "win_rates.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "PPO beats SFT" in stdout and "Methods on the same preferences" in html
    assert "s] precision: float32 (" in stdout and report["bf16"] is False  # the header says which, and why


def test_bf16_auto_means_bf16_only_where_native():
    assert [use_bf16(choice, native) for choice in ("auto", "yes", "no") for native in (True, False)] == \
        [True, False, True, True, False, False]


def test_demo_refuses_an_unknown_bf16_choice(tmp_path, capsys):
    code, _, err = run_cli(["demo", "--preset", "micro", "--out", tmp_path / "d", "--bf16", "maybe"], capsys)
    assert code == 2 and "config key 'bf16' must be one of auto, yes, no" in err and not (tmp_path / "d").exists()


@pytest.mark.slow
def test_demo_bf16_yes_trains_sft_rm_and_ppo_under_bf16(micro_world, tmp_path, capsys):
    out = tmp_path / "demo"
    code, stdout, err = run_cli(["demo", "--preset", "micro", "--world", micro_world, "--out", out, "--bf16", "yes"],
                                capsys)
    assert code == 0, err
    assert "precision: bfloat16 autocast" in stdout and json.loads((out / "report.json").read_text())["bf16"] is True
    for stage in ("sft", "rm", "ppo"):
        assert tomllib.loads((out / "seed-0" / stage / "config.toml").read_text())["bf16"] is True, stage
