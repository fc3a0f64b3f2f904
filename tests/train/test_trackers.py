"""`--report-to`: the trackers get what metrics.jsonl gets, under TRL's names, and metrics.jsonl is unchanged.

Read back from each tracker's own store: trackio's SQLite file (through trackio, in a process of its own that
opens TRACKIO_DIR), W&B's offline run file (OUT/wandb/offline-run-*/run-ID.wandb: records of wandb's own protobuf
`Record` in the LevelDB log framing wandb-core writes), TensorBoard's event files (through TensorBoard's reader).
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from wandb.proto.wandb_internal_pb2 import Record

from rlhfkit.runtime.trackers import TRL_NAMES, reporting, trl_name
from tests.conftest import run_cli
from tests.train.test_ppo import _reward_dir

WANDB_BLOCK = 32768  # the LevelDB log format: 32 KiB blocks of chunks, each with a 7-byte header
WANDB_HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)  # the file's header: ident, magic, version
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def wandb_history(run_file: Path) -> dict[int, dict[str, float]]:
    """{step: {key: value}} of the history records of a .wandb file."""
    data = run_file.read_bytes()
    assert data[:7] == WANDB_HEADER
    history, pos, parts = {}, 7, b""
    while pos + 7 <= len(data):
        left = WANDB_BLOCK - pos % WANDB_BLOCK
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack_from("<IHB", data, pos)
        parts += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (FULL, LAST):
            record = Record.FromString(parts)
            parts = b""
            if record.WhichOneof("record_type") == "history":
                items = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item}
                history[record.history.step.num] = {k: v for k, v in items.items() if not k.startswith("_")}
    return history


def trackio_logs(trackio_dir: Path, project: str, run: str) -> dict[int, dict[str, float]]:
    """{step: {key: value}} of a trackio run, read by trackio in a fresh process (trackio fixes TRACKIO_DIR when it
    is first imported)."""
    script = textwrap.dedent(f"""
        import json
        from trackio.sqlite_storage import SQLiteStorage
        print(json.dumps(SQLiteStorage.get_logs({project!r}, {run!r})))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                          env={"TRACKIO_DIR": str(trackio_dir), "PATH": "/usr/bin:/bin", "HOME": str(trackio_dir)})
    logs = {}
    for row in json.loads(done.stdout):  # two records of one step (SFT's last: train, then held-out) merged
        logs.setdefault(row["step"], {}).update({k: v for k, v in row.items() if k not in ("step", "timestamp")})
    return logs


def expected(run_dir: Path, table: dict) -> dict[int, dict[str, float]]:
    """What the trackers should hold: each metrics.jsonl record's numbers under TRL's names (two records of one
    step as one, the later one's values last, as W&B's history row holds them)."""
    want = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        want.setdefault(record["step"], {}).update({trl_name(table, k): v for k, v in record.items() if k != "step"
                                                    and isinstance(v, (int, float)) and not isinstance(v, bool)})
    return want


def metrics_without_time(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "time_s"}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """W&B offline with no account, and its and trackio's files under tmp_path."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))
    return tmp_path


def _sft(micro_world, out, capsys, *extra):
    code, _, err = run_cli(["sft", "--model", micro_world / "base", "--data", micro_world / "demos.jsonl",
                            "--out", out, "--epochs", "1", "--batch-size", "16", "--log-every", "4", *extra], capsys)
    assert code == 0, err


def test_sft_reports_to_trackio_and_wandb_offline_under_trl_names(micro_world, offline, capsys):
    _sft(micro_world, offline / "plain", capsys)
    out = offline / "tracked"
    _sft(micro_world, out, capsys, "--report-to", "trackio,wandb")
    # metrics.jsonl is the one a run without trackers writes (the clock apart)
    assert metrics_without_time(out) == metrics_without_time(offline / "plain")
    want = expected(out, TRL_NAMES["SFTConfig"])
    assert len(want) >= 3 and {"loss", "learning_rate", "eval_loss"} <= set().union(*want.values())
    assert not {"train_loss", "lr"} & set().union(*want.values())
    (run_file,) = out.glob("wandb/offline-run-*/run-*.wandb")
    want = {step: pytest.approx(metrics) for step, metrics in want.items()}
    assert wandb_history(run_file) == want
    assert trackio_logs(offline / "trackio", "rlhfkit", str(out)) == want


def test_ppo_reports_trls_ppo_names_to_tensorboard(micro_world, tmp_path, capsys):
    out = tmp_path / "ppo"
    code, _, err = run_cli(["ppo", "--policy", micro_world / "base", "--reward",
                            _reward_dir(tmp_path, micro_world / "base"), "--prompts",
                            micro_world / "prompts/train.jsonl", "--out", out, "--ppo-steps", "2", "--batch-size", "4",
                            "--minibatch-size", "2", "--max-new-tokens", "6", "--report-to", "tensorboard"], capsys)
    assert code == 0, err
    events = EventAccumulator(str(out / "tensorboard")).Reload()
    logged = {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}
    for ours, trl in [("kl", "objective/kl"), ("score", "objective/scores"), ("reward", "objective/rlhf_reward"),
                      ("policy_loss", "loss/policy_avg"), ("value_loss", "loss/value_avg"),
                      ("clipfrac", "policy/clipfrac_avg"), ("approx_kl", "policy/approxkl_avg"),
                      ("entropy", "policy/entropy_avg"), ("episodes", "episode")]:
        assert trl in logged and ours not in logged
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged["objective/kl"] == pytest.approx({r["step"]: r["kl"] for r in rows}, rel=1e-6)
    assert logged["rm_score"] == pytest.approx({r["step"]: r["rm_score"] for r in rows}, rel=1e-6)  # no TRL twin


def test_trl_names_map_a_family_and_keep_names_trl_lacks():
    ppo = TRL_NAMES["PPOConfig"]
    assert trl_name(ppo, "reward/verifier") == "rewards/verifier/mean"
    assert trl_name(ppo, "kl_k3") == "kl_k3" and trl_name(ppo, "reward") == "objective/rlhf_reward"
    assert trl_name(TRL_NAMES["DPOConfig"], "train_accuracy") == "rewards/accuracies"
    assert trl_name(TRL_NAMES["RewardConfig"], "train_accuracy") == "accuracy"


@pytest.mark.parametrize("report_to, message", [
    ("mlflow", "--report-to: unknown tracker 'mlflow' (one or more of tensorboard, wandb, trackio, comma-separated, "
               "or none)"),
    ("none,wandb", "--report-to: 'none' cannot be combined with a tracker (got none,wandb)"),
])
def test_an_unknown_tracker_is_one_line_and_exit_2(micro_world, tmp_path, capsys, report_to, message):
    out = tmp_path / "sft"
    code, _, err = run_cli(["sft", "--model", micro_world / "base", "--data", micro_world / "demos.jsonl",
                            "--out", out, "--report-to", report_to], capsys)
    assert code == 2 and err.strip().splitlines() == [f"rlhf sft: error: {message}"] and not out.exists()


def test_a_tracker_whose_package_is_missing_is_one_line_and_exit_2(micro_world, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # how Python blocks an import: `import wandb` fails as if absent
    monkeypatch.delitem(sys.modules, "rlhfkit.runtime.trackers.wandb", raising=False)
    out = tmp_path / "sft"
    code, _, err = run_cli(["sft", "--model", micro_world / "base", "--data", micro_world / "demos.jsonl",
                            "--out", out, "--report-to", "trackio,wandb"], capsys)
    assert code == 2 and not out.exists()
    assert err.strip().splitlines() == ["rlhf sft: error: --report-to wandb: the wandb package is not installed "
                                        "(pip install 'rlhfkit[track]')"]


def test_a_trainer_inside_a_composite_command_reports_where_the_command_does(micro_world, tmp_path, capsys):
    """What `rlhf demo/compare/loop --report-to X` does around the trainers they run (runtime/trackers `reporting`)."""
    out = tmp_path / "sft"
    with reporting(["tensorboard"]):
        _sft(micro_world, out, capsys)
    assert 'report_to = ["tensorboard"]' in (out / "config.toml").read_text()
    events = EventAccumulator(str(out / "tensorboard")).Reload()
    assert {"loss", "learning_rate", "eval_loss"} <= set(events.Tags()["scalars"])
    _sft(micro_world, tmp_path / "after", capsys)  # the scope ended with the command
    assert not (tmp_path / "after" / "tensorboard").exists()


@pytest.mark.parametrize("command", [["demo"], ["compare", "--world", "w"], ["loop"]])
def test_composite_commands_refuse_an_unknown_tracker_in_one_line(tmp_path, capsys, command):
    code, _, err = run_cli([*command, "--out", tmp_path / "out", "--report-to", "mlflow"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--report-to: unknown tracker 'mlflow'" in err
    assert not (tmp_path / "out").exists()
