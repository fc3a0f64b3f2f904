"""The whole loop in one command, on the micro preset: report keys, HTML, plots, PPO beating SFT by gold."""

import json

from tests.conftest import run_cli

KEYS = {"preset", "seed", "wall_s", "win_rates", "gold", "rm", "ppo", "labelers"}


def test_demo_micro_writes_the_report_and_ppo_beats_sft(micro_world, tmp_path, capsys):
    out = tmp_path / "demo"
    code, stdout, err = run_cli(["demo", "--preset", "micro", "--world", micro_world, "--out", out,
                                 "--methods", "dpo,rloo"], capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
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
