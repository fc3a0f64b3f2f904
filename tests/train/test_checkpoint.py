"""Crash-safe checkpoints and --resume (docs/design.md §8): a run killed at any step and resumed ends exactly where an
uninterrupted run with the same seed ends (CPU), non-finite losses stop with one line and keep the last good
checkpoint, and a half-written checkpoint never replaces a whole one."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from rlhfkit import storage
from rlhfkit.errors import UserError
from rlhfkit.runtime.directory import RunDir
from rlhfkit.runtime.options import RunOptions
from rlhfkit.train import sft
from rlhfkit.train.checkpoint import STATE_FILE, Checkpoints, checkpoint_dirs
from rlhfkit.train.common import EpochBatches
from rlhfkit.train.distributed import Parallel
from tests.conftest import run_cli
from tests.small_disk import resize, small_disk
from tests.train.test_ppo import _reward_dir
from tests.train.test_reward import _rankings

TIMES = {"time_s", "generation_s", "scoring_s", "update_s"}  # wall-clock fields: the only ones allowed to differ


def _metrics(out):
    return [{k: v for k, v in json.loads(line).items() if k not in TIMES}
            for line in (out / "metrics.jsonl").read_text().splitlines()]


def _lines(path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _cli(args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "rlhfkit.cli", *map(str, args), "--threads", "1"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc):
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    return out


def _kill_when(proc, metrics, lines: int) -> None:
    """SIGKILL the run as soon as its metrics log holds `lines` lines (no cleanup of any kind can run)."""
    while proc.poll() is None and _lines(metrics) < lines:
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.communicate()


def _commands(kind, world, tmp_path):
    """(arguments, total metrics lines) of a short run of each trainer on the micro world."""
    if kind == "sft":
        return ["sft", "--model", world / "base", "--data", world / "demos.jsonl", "--epochs", "2",
                "--batch-size", "48", "--log-every", "1", "--checkpoint-every", "2"], 18
    if kind in ("rm", "dpo"):
        data = _rankings(tmp_path / "rankings.jsonl", n=120)
        model = ["--model" if kind == "rm" else "--policy", world / "base"]
        return [kind, *model, "--data", data, "--batch-size", "6", "--epochs", "1",
                "--log-every", "1", "--checkpoint-every", "2"], 18
    rm = _reward_dir(tmp_path, world / "base")
    return ["ppo", "--policy", world / "base", "--reward", rm, "--prompts", world / "prompts/train.jsonl",
            "--world", world, "--ppo-steps", "6", "--batch-size", "8", "--minibatch-size", "4", "--max-new-tokens", "6",
            "--adaptive-kl-target", "1.0", "--checkpoint-every", "1"], 6


@pytest.mark.parametrize("kind", ["sft", "rm", "ppo", pytest.param("dpo", marks=pytest.mark.slow)])
def test_sigkill_at_a_random_step_then_resume_equals_an_uninterrupted_run(kind, micro_world, tmp_path):
    args, total = _commands(kind, micro_world, tmp_path)
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    reference = _cli([*args, "--out", whole])
    kill_at = random.randint(2, total - 3)
    _kill_when(_cli([*args, "--out", broken]), broken / "metrics.jsonl", kill_at)
    _finish(reference)
    assert checkpoint_dirs(broken), f"killed at line {kill_at} with no checkpoint"
    assert not (broken / "model.safetensors").exists()
    _finish(_cli([*args, "--out", broken, "--resume"]))
    assert _metrics(broken) == _metrics(whole), f"killed when metrics.jsonl had {kill_at} lines"
    assert (broken / "model.safetensors").read_bytes() == (whole / "model.safetensors").read_bytes()


def test_resume_refuses_a_run_with_other_flags(micro_world, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["sft", "--model", micro_world / "base", "--data", micro_world / "demos.jsonl", "--out", out,
            "--epochs", "1", "--batch-size", "64", "--checkpoint-every", "2"]
    assert run_cli(args, capsys)[0] == 0
    code, _, err = run_cli([*args, "--resume", "--lr", "0.1"], capsys)
    assert code == 2 and "cannot resume with a different config: lr" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli([*args, "--resume", "--checkpoint-every", "3", "--tensorboard"], capsys)
    assert code == 0, err  # bookkeeping flags may change


def test_resume_without_a_checkpoint_starts_the_run_over(micro_world, tmp_path, capsys):
    args = ["sft", "--model", micro_world / "base", "--data", micro_world / "demos.jsonl", "--epochs", "1",
            "--batch-size", "64", "--log-every", "1"]
    assert run_cli([*args, "--out", tmp_path / "a"], capsys)[0] == 0
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "config.toml").write_text((tmp_path / "a" / "config.toml").read_text())
    (tmp_path / "b" / "metrics.jsonl").write_text('{"step": 1, "train_loss": 99.0}\n')  # a run killed early
    assert run_cli([*args, "--out", tmp_path / "b", "--resume"], capsys)[0] == 0
    assert _metrics(tmp_path / "b") == _metrics(tmp_path / "a")


def test_resume_of_a_directory_that_is_not_a_run_is_refused(micro_world, tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep")
    code, _, err = run_cli(["sft", "--model", micro_world / "base", "--data", micro_world / "demos.jsonl",
                            "--out", tmp_path, "--resume"], capsys)
    assert code == 2 and "not a run directory" in err
    assert (tmp_path / "mine.txt").read_text() == "keep"


def test_non_finite_loss_stops_with_one_line_and_the_last_checkpoint_intact(micro_world, tmp_path, capsys,
                                                                           monkeypatch):
    args = ["sft", "--model", micro_world / "base", "--data", micro_world / "demos.jsonl", "--epochs", "1",
            "--batch-size", "32", "--log-every", "1", "--checkpoint-every", "3"]
    assert run_cli([*args, "--out", tmp_path / "whole"], capsys)[0] == 0
    healthy, calls = sft.sft_loss, []

    def diverging(model, batch, *packing):  # the 8th step's loss is NaN
        calls.append(1)
        return healthy(model, batch, *packing) * (float("nan") if len(calls) == 8 else 1.0)

    monkeypatch.setattr(sft, "sft_loss", diverging)
    out = tmp_path / "run"
    code, _, err = run_cli([*args, "--out", out], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "step 7: loss is not finite" in err and "Traceback" not in err
    assert [p.name for p in checkpoint_dirs(out)] == ["step-6"]  # saved before the NaN, never after
    state = torch.load(checkpoint_dirs(out)[0] / STATE_FILE, weights_only=False)
    assert all(torch.isfinite(p).all() for p in state["objects"]["model"].values())
    monkeypatch.setattr(sft, "sft_loss", healthy)
    assert run_cli([*args, "--out", out, "--resume"], capsys)[0] == 0  # ... and the run goes on from it
    assert _metrics(out) == _metrics(tmp_path / "whole")


# ------------------------------------------------------------------------------------------ the parts

def _toy(tmp_path, every=1, keep=None):
    options = RunOptions(out=str(tmp_path / "run"), **({"keep_checkpoints": keep} if keep else {}))
    run = RunDir(tmp_path / "run", options)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(0)
    return run, model, Checkpoints(run, Parallel(torch.device("cpu")), every, model=model, optimizer=optimizer,
                                   generator=generator), generator


def test_a_checkpoint_never_holds_non_finite_parameters(tmp_path):
    run, model, checkpoints, _ = _toy(tmp_path)
    checkpoints.save(1)
    with torch.no_grad():
        model.weight[0, 0] = float("inf")
    with pytest.raises(UserError, match="parameters are not finite.*step-1.* is intact"):
        checkpoints.save(2)
    assert [p.name for p in checkpoint_dirs(run.path)] == ["step-1"]


def test_a_save_killed_halfway_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    run, model, checkpoints, generator = _toy(tmp_path)
    checkpoints.save(1)
    weight = model.weight.detach().clone()
    state = generator.get_state()
    with torch.no_grad():
        model.weight.add_(1.0)
    torch.rand(3, generator=generator)

    def dies_while_writing(obj, handle):
        handle.write(b"half a checkpoint")
        raise KeyboardInterrupt  # as good as a kill for the files on disk

    monkeypatch.setattr(torch, "save", dies_while_writing)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save(2)
    monkeypatch.undo()
    assert [p.name for p in checkpoint_dirs(run.path)] == ["step-1"]
    assert checkpoints.restore() == 1
    assert torch.equal(model.weight, weight) and torch.equal(generator.get_state(), state)


def test_a_damaged_checkpoint_is_one_line_not_a_traceback(tmp_path):
    run, _, checkpoints, _ = _toy(tmp_path)
    checkpoints.save(4)
    (checkpoint_dirs(run.path)[0] / STATE_FILE).write_bytes(b"\x80\x04 not a pickle")
    with pytest.raises(UserError, match="cannot read the checkpoint") as info:
        checkpoints.restore()
    assert "\n" not in str(info.value)


def test_epoch_batches_resumed_mid_epoch_hand_out_the_same_batches():
    def batches():
        return EpochBatches(10, 3, 3, torch.Generator().manual_seed(7))
    everything = [(e, list(i)) for e, i in batches()]
    first = batches()
    it = iter(first)
    head = [next(it) for _ in range(5)]  # epoch 1, batch 2 of 4
    saved = json.loads(json.dumps(first.state_dict()))
    gen_state = first.generator.get_state()
    second = batches()
    second.load_state_dict(saved)
    second.generator.set_state(gen_state)
    assert head + [(e, list(i)) for e, i in second] == everything
    assert len(everything) == 12 and sorted(sum((i for e, i in everything if e == 2), [])) == list(range(10))


@pytest.mark.parametrize("kind, sharding", [pytest.param("sft", [], id="sft-ddp", marks=pytest.mark.slow),
                                             pytest.param("sft", ["--fsdp"], id="sft-fsdp", marks=pytest.mark.slow),
                                             pytest.param("ppo", ["--fsdp"], id="ppo-fsdp")])
def test_sigkill_of_a_two_process_run_then_resume_equals_an_uninterrupted_two_process_run(kind, sharding, micro_world,
                                                                                          tmp_path):
    """With --fsdp the shards are gathered into one checkpoint (PPO: policy and value model, and the one optimizer
    of both), and each process takes its shards back."""
    if kind == "sft":
        args = ["sft", "--model", micro_world / "base", "--data", micro_world / "demos.jsonl",
                "--epochs", "2", "--batch-size", "32", "--log-every", "1", "--checkpoint-every", "2"]
        kill_range = (3, 22)
    else:
        args, total = _commands("ppo", micro_world, tmp_path)
        kill_range = (2, total - 2)
    args += ["--num-processes", "2", *sharding]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    _finish(_cli([*args, "--out", whole]))
    kill_at = random.randint(*kill_range)
    _kill_when(_cli([*args, "--out", broken]), broken / "metrics.jsonl", kill_at)  # the launcher; workers follow
    _finish(_cli([*args, "--out", broken, "--resume"]))
    assert _metrics(broken) == _metrics(whole), f"killed when metrics.jsonl had {kill_at} lines"
    assert (broken / "model.safetensors").read_bytes() == (whole / "model.safetensors").read_bytes()
    if kind == "ppo":
        for name in ("model.safetensors", "config.json"):
            assert (broken / "value" / name).read_bytes() == (whole / "value" / name).read_bytes(), name


# ------------------------------------------------------------------------------------------ a full disk

def _sft_args(world, every=3):
    return ["sft", "--model", world / "base", "--data", world / "demos.jsonl", "--epochs", "2", "--batch-size", "48",
            "--log-every", "1", "--checkpoint-every", str(every), "--threads", "1"]


@pytest.mark.parametrize("when", ["checked-before", "during-the-write"])
def test_a_full_disk_at_a_checkpoint_is_one_line_keeps_the_previous_one_and_resume_finishes_the_run(
        when, micro_world, tmp_path, capsys, monkeypatch):
    """The issue's tmpfs run: the second checkpoint cannot fit. `checked-before`: the free space is seen to be
    short before writing; `during-the-write`: that check is switched off, so torch.save fills the disk."""
    args = _sft_args(micro_world)
    whole = tmp_path / "whole"
    assert run_cli([*args, "--out", whole], capsys)[0] == 0
    size = (checkpoint_dirs(whole)[-1] / STATE_FILE).stat().st_size  # every checkpoint of this run: the same size
    disk = tmp_path / "disk"
    # Room for config.toml, metrics.jsonl and one checkpoint (with the margin the check asks for), not two.
    with small_disk(disk, int(1.5 * size) + 256 * 1024):
        out = disk / "run"
        if when == "during-the-write":
            monkeypatch.setattr(storage, "check_space", lambda *args, **kwargs: None)
        code, _, err = run_cli([*args, "--out", out], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert f"{out / 'resume' / 'step-6'}: no space left on the device (needs ~" in err, err
        assert " free); the previous checkpoint " in err and f"{out / 'resume' / 'step-3'} is intact" in err, err
        assert "--resume" in err and "Traceback" not in err
        assert not list((out / "resume").glob(".tmp-*")), "a temporary checkpoint was left behind"
        assert [p.name for p in checkpoint_dirs(out)] == ["step-3"]
        assert torch.load(checkpoint_dirs(out)[0] / STATE_FILE, weights_only=False)["step"] == 3
        assert not (out / "model.safetensors").exists()
        monkeypatch.undo()
        resize(disk, 64 * 1024 * 1024)  # the user frees space
        code, _, err = run_cli([*args, "--out", out, "--resume"], capsys)
        assert code == 0, err
        assert _metrics(out) == _metrics(whole)
        assert (out / "model.safetensors").read_bytes() == (whole / "model.safetensors").read_bytes()


def test_a_full_disk_at_the_final_model_keeps_the_last_checkpoint_to_resume_from(micro_world, tmp_path, capsys):
    args = _sft_args(micro_world, every=15)  # one checkpoint, at step 15 of 16
    whole = tmp_path / "whole"
    assert run_cli([*args, "--out", whole], capsys)[0] == 0
    checkpoint = (checkpoint_dirs(whole)[-1] / STATE_FILE).stat().st_size
    model = (whole / "model.safetensors").stat().st_size
    disk = tmp_path / "disk"
    with small_disk(disk, checkpoint + model // 2 + 256 * 1024):  # the last checkpoint fits, the model does not
        out = disk / "run"
        code, _, err = run_cli([*args, "--out", out], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert f"{out}: no space left on the device" in err and "Traceback" not in err, err
        assert not (out / ".saving").exists() and not (out / "model.safetensors").exists()
        assert [p.name for p in checkpoint_dirs(out)] == ["step-15"]
        resize(disk, 64 * 1024 * 1024)
        assert run_cli([*args, "--out", out, "--resume"], capsys)[0] == 0
        assert (out / "model.safetensors").read_bytes() == (whole / "model.safetensors").read_bytes()


def test_rotation_keeps_the_newest_n_checkpoints_and_resume_takes_the_newest(tmp_path):
    run, model, checkpoints, _ = _toy(tmp_path, keep=3)
    for step in range(1, 7):
        with torch.no_grad():
            model.weight.fill_(step)
        checkpoints.save(step)
    assert [p.name for p in checkpoint_dirs(run.path)] == ["step-4", "step-5", "step-6"]
    with torch.no_grad():
        model.weight.zero_()
    assert checkpoints.restore() == 6 and bool((model.weight == 6).all())


def test_keep_checkpoints_in_a_run_and_a_bad_value_refused_before_anything_is_written(micro_world, tmp_path,
                                                                                     capsys):
    args = _sft_args(micro_world, every=2)
    assert run_cli([*args, "--out", tmp_path / "run", "--keep-checkpoints", "2"], capsys)[0] == 0
    assert [p.name for p in checkpoint_dirs(tmp_path / "run")] == ["step-12", "step-14"]  # 16 steps; not the last
    assert not list((tmp_path / "run" / "resume").glob(".tmp-*"))
    for bad in ("0", "-1"):
        code, _, err = run_cli([*args, "--out", tmp_path / "bad", "--keep-checkpoints", bad], capsys)
        assert code == 2 and "config key 'keep_checkpoints' must be at least 1" in err, err
        assert not (tmp_path / "bad").exists()


def test_a_temporary_checkpoint_left_by_a_killed_run_is_removed_at_the_next_save(tmp_path):
    run, _, checkpoints, _ = _toy(tmp_path)
    stale = run.path / "resume" / ".tmp-step-40"
    stale.mkdir(parents=True)
    (stale / STATE_FILE).write_bytes(b"\0" * 1000)
    checkpoints.save(2)
    assert not stale.exists() and [p.name for p in checkpoint_dirs(run.path)] == ["step-2"]
