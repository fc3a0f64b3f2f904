"""The crash list of issue 16 and "nothing half-written": each bad input is one line on stderr, exit code 2, and
no run directory left behind, so the same command can be rerun once the input is fixed."""

import json
import re
from pathlib import Path

import pytest
import torch

import rlhfkit.train.sft as sft_module
from rlhfkit.models.scalar import ScalarModel
from tests.conftest import run_cli

DEMOS = "".join(json.dumps({"prompt": f"list two fruits {i} .", "completion": "apple pear"}) + "\n" for i in range(8))
PAIRS = "".join(json.dumps({"prompt": f"list two fruits {i} .", "chosen": "apple pear", "rejected": "pear"}) + "\n"
                for i in range(8))
PROMPTS = "".join(json.dumps({"prompt": f"list two fruits {i} ."}) + "\n" for i in range(8))


@pytest.fixture
def files(tmp_path):
    for name, text in (("demos.jsonl", DEMOS), ("pairs.jsonl", PAIRS), ("prompts.jsonl", PROMPTS)):
        (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def _commands(model, t) -> dict[str, list]:
    """A complete, valid command line of each trainer (the tiny GPT-2 stands in for every model; PPO's reward
    model is its transformer with a scalar head, `_reward_of`)."""
    return {
        "sft": ["sft", "--model", model, "--data", t / "demos.jsonl", "--out", t / "run"],
        "rm": ["rm", "--model", model, "--data", t / "pairs.jsonl", "--out", t / "run"],
        "dpo": ["dpo", "--policy", model, "--data", t / "pairs.jsonl", "--out", t / "run"],
        "ppo": ["ppo", "--policy", model, "--reward", _reward_of(model), "--prompts", t / "prompts.jsonl",
                "--out", t / "run"],
    }


def _reward_of(model: Path) -> Path:
    """A reward model on `model`'s transformer, written once beside it."""
    out = Path(model).parent / f"{Path(model).name}-rm"
    if not out.exists():
        ScalarModel.from_backbone(model).save_pretrained(out)
    return out


# ------------------------------------------------------------------------------------ sizes and counts

SIZES = [
    ("sft", "batch_size"), ("sft", "epochs"), ("sft", "max_length"), ("sft", "log_every"),
    ("rm", "batch_size"), ("rm", "epochs"), ("rm", "max_length"), ("rm", "log_every"),
    ("dpo", "batch_size"), ("dpo", "epochs"), ("dpo", "max_length"), ("dpo", "log_every"),
    ("ppo", "batch_size"), ("ppo", "minibatch_size"), ("ppo", "ppo_epochs"), ("ppo", "ppo_steps"),
    ("ppo", "max_new_tokens"), ("ppo", "max_prompt_length"), ("ppo", "ptx_batch_size"), ("ppo", "kl_horizon"),
    ("ppo", "log_every"), ("sft", "num_processes"),
]


@pytest.mark.parametrize("command, key", SIZES)
def test_a_size_or_count_of_zero_is_one_line(command, key, tiny_gpt2, files, capsys):
    args = _commands(tiny_gpt2, files)[command]
    code, _, err = run_cli([*args, "--" + key.replace("_", "-"), "0"], capsys)
    assert code == 2
    assert _one_line(err).endswith(f"config key '{key}' must be at least 1")
    assert not (files / "run").exists()


@pytest.mark.parametrize("command", ["sft", "rm", "dpo", "ppo"])
@pytest.mark.parametrize("value", ["nan", "-0.1", "0", "inf"])
def test_a_learning_rate_that_is_not_positive_is_one_line(command, value, tiny_gpt2, files, capsys):
    code, _, err = run_cli([*_commands(tiny_gpt2, files)[command], "--lr", value], capsys)
    assert code == 2 and _one_line(err).endswith("config key 'lr' must be a finite number > 0")
    assert not (files / "run").exists()


@pytest.mark.parametrize("command, key", [("dpo", "save_every"), ("ppo", "save_every"), ("ppo", "value_warmup"),
                                          ("sft", "checkpoint_every"), ("rm", "threads")])
def test_a_negative_count_is_one_line(command, key, tiny_gpt2, files, capsys):
    args = _commands(tiny_gpt2, files)[command]
    code, _, err = run_cli([*args, "--" + key.replace("_", "-"), "-1"], capsys)
    assert code == 2 and _one_line(err).endswith(f"config key '{key}' must be at least 0")
    assert not (files / "run").exists()


def test_rloo_k_that_does_not_divide_the_batch_is_one_line(tiny_gpt2, files, capsys):
    args = _commands(tiny_gpt2, files)["ppo"]
    code, _, err = run_cli([*args, "--advantage", "rloo", "--batch-size", "6", "--minibatch-size", "6",
                            "--num-generations", "4"], capsys)
    assert code == 2 and "config key 'num_generations' must be at least 2 and divide 'batch_size'" in _one_line(err)


@pytest.mark.parametrize("args, expected", [
    (["sample", "--models", "{model}", "--prompts", "{t}/prompts.jsonl", "--out", "{t}/c.jsonl", "--limit", "0"],
     "config key 'limit' must be at least 1"),
    (["sample", "--models", "{model}", "--prompts", "{t}/prompts.jsonl", "--out", "{t}/c.jsonl",
      "--max-new-tokens", "0"], "config key 'max_new_tokens' must be at least 1"),
    (["sample", "--models", "{model}", "--prompts", "{t}/prompts.jsonl", "--out", "{t}/c.jsonl", "--k", "0"],
     "config key 'k' must be at least 2"),
    (["eval", "gold", "--model", "{model}", "--world", "{t}/w", "--limit", "0"],
     "config key 'limit' must be at least 1"),
    (["eval", "gold", "--model", "{model}", "--world", "{t}/w", "--max-new-tokens", "0"],
     "config key 'max_new_tokens' must be at least 1"),
    (["eval", "winrate", "--a", "{model}", "--b", "{model}", "--world", "{t}/w", "--limit", "0"],
     "config key 'limit' must be at least 1"),
    (["eval", "bon", "--policy", "{model}", "--reward", "{model}", "--world", "{t}/w", "--limit", "0"],
     "config key 'limit' must be at least 1"),
    (["bench", "ppo", "--batch", "0"], "config key 'batch' must be at least 1"),
    (["bench", "rm", "--batch", "0"], "config key 'batch' must be at least 1"),
    (["bench", "sft", "--batch", "0"], "config key 'batch' must be at least 1"),
    (["loop", "--out", "{t}/loop", "--ppo-steps", "0"], "config key 'ppo_steps' must be at least 1"),
    (["loop", "--out", "{t}/loop", "--prompts-per-round", "0"], "config key 'prompts_per_round' must be at least 1"),
    (["loop", "--out", "{t}/loop", "--world", "{t}/w"], "not a world directory"),
    (["loop", "--out", "{t}/loop", "--labels", "app", "--labels-dir", "{t}"], "'labels_dir' is for --labels files"),
    (["loop", "--out", "{t}/loop", "--labels", "people"], "config key 'labels': expected one of simulated, files, app"),
    (["loop", "--out", "{t}/loop", "--min-coverage", "0"], "config key 'min_coverage' must be above 0"),
    (["demo", "--out", "{t}/demo", "--ppo-steps", "0"], "config key 'ppo_steps' must be at least 1"),
    (["compare", "--world", "{t}/w", "--out", "{t}/cmp", "--ppo-steps", "0"],
     "config key 'ppo_steps' must be at least 1"),
    (["compare", "--world", "{t}/w", "--out", "{t}/cmp", "--num-generations", "1"],
     "config key 'num_generations' must be at least 2"),
])
def test_other_commands_refuse_zero_sizes_with_one_line(args, expected, tiny_gpt2, files, capsys):
    code, _, err = run_cli([a.format(model=tiny_gpt2, t=files) for a in args], capsys)
    assert code == 2 and expected in _one_line(err)
    assert not any((files / name).exists() for name in ("c.jsonl", "loop", "demo", "cmp"))


# ------------------------------------------------------------------------------------------- devices

@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("command", ["sft", "rm", "dpo", "ppo"])
@pytest.mark.parametrize("device", ["cuda", "cuda:3"])
def test_cuda_on_a_machine_without_it_is_one_line(command, device, tiny_gpt2, files, capsys):
    code, _, err = run_cli([*_commands(tiny_gpt2, files)[command], "--device", device], capsys)
    assert code == 2
    assert _one_line(err) == (f"rlhf {command}: error: config key 'device': '{device}' but CUDA is not available "
                              "on this machine (use --device cpu or auto)")
    assert not (files / "run").exists()


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_mps_on_a_machine_without_it_is_one_line(tiny_gpt2, files, capsys):
    code, _, err = run_cli([*_commands(tiny_gpt2, files)["sft"], "--device", "mps"], capsys)
    assert code == 2 and "'mps' but MPS (Apple GPU) is not available" in _one_line(err)
    assert not (files / "run").exists()


@pytest.mark.parametrize("device", ["tpu", "gpu", "cuda:x"])
def test_an_unknown_device_is_one_line(device, tiny_gpt2, files, capsys):
    code, _, err = run_cli([*_commands(tiny_gpt2, files)["sft"], "--device", device], capsys)
    assert code == 2 and "config key 'device'" in _one_line(err)
    assert not (files / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_sample_on_cuda_without_it_writes_nothing(tiny_gpt2, files, capsys):
    code, _, err = run_cli(["sample", "--models", tiny_gpt2, "--prompts", files / "prompts.jsonl",
                            "--out", files / "c.jsonl", "--device", "cuda"], capsys)
    assert code == 2 and "CUDA is not available" in _one_line(err)
    assert not (files / "c.jsonl").exists()


# ----------------------------------------------------------------------- a start that fails in the loop

def _failing_loss(*args, **kwargs):
    raise RuntimeError("boom in the first step")


def _sft(tiny_gpt2, files, *extra):
    return ["sft", "--model", tiny_gpt2, "--data", files / "demos.jsonl", "--out", files / "run", "--epochs", "1",
            "--batch-size", "4", "--eval-fraction", "0", *extra]


def test_a_user_error_in_the_first_steps_leaves_no_run_directory_and_the_rerun_works(tiny_gpt2, files, capsys):
    args = _sft(tiny_gpt2, files, "--lr", "1e30")  # the loss is not finite after the first update: a UserError
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "loss is not finite" in _one_line(err)
    assert not (files / "run").exists()
    code, _, err = run_cli(args, capsys)  # the same command is not refused ("directory exists")
    assert code == 2 and "directory exists" not in err
    code, _, err = run_cli(_sft(tiny_gpt2, files), capsys)
    assert code == 0, err
    assert (files / "run" / "config.json").exists()


def test_a_crash_in_the_first_step_leaves_no_run_directory(tiny_gpt2, files, capsys, monkeypatch):
    monkeypatch.setattr(sft_module, "sft_loss", _failing_loss)
    with pytest.raises(RuntimeError, match="boom"):
        run_cli(_sft(tiny_gpt2, files), capsys)
    assert not (files / "run").exists()


def test_a_directory_that_existed_is_kept_and_emptied_of_what_the_start_wrote(tiny_gpt2, files, capsys,
                                                                            monkeypatch):
    (files / "run").mkdir()
    monkeypatch.setattr(sft_module, "sft_loss", _failing_loss)
    with pytest.raises(RuntimeError):
        run_cli(_sft(tiny_gpt2, files, "--tensorboard"), capsys)
    assert (files / "run").is_dir() and not any((files / "run").iterdir())


def test_overwrite_keeps_the_old_run_when_the_models_fail_to_load(tiny_gpt2, files, capsys, tmp_path):
    (files / "run").mkdir()
    (files / "run" / "old.txt").write_text("the previous run")
    broken = tmp_path / "broken"
    broken.mkdir()
    for entry in tiny_gpt2.iterdir():
        (broken / entry.name).write_bytes(entry.read_bytes())
    (broken / "model.safetensors").unlink()  # a config without weights: the load fails after OUT was checked
    code, _, err = run_cli(["sft", "--model", broken, "--data", files / "demos.jsonl", "--out", files / "run",
                            "--overwrite"], capsys)
    assert code == 2 and "broken" in _one_line(err)
    assert (files / "run" / "old.txt").read_text() == "the previous run"


def test_overwrite_that_fails_in_the_loop_leaves_the_directory_empty(tiny_gpt2, files, capsys, monkeypatch):
    (files / "run").mkdir()
    (files / "run" / "old.txt").write_text("the previous run")
    monkeypatch.setattr(sft_module, "sft_loss", _failing_loss)
    with pytest.raises(RuntimeError):
        run_cli(_sft(tiny_gpt2, files, "--overwrite"), capsys)
    assert (files / "run").is_dir() and not any((files / "run").iterdir())  # RunDir had replaced the old run
    monkeypatch.undo()
    code, _, err = run_cli(_sft(tiny_gpt2, files), capsys)  # no --overwrite needed any more
    assert code == 0, err


def test_a_run_with_a_checkpoint_is_never_removed(tiny_gpt2, files, capsys):
    args = _sft(tiny_gpt2, files, "--lr", "1e30", "--checkpoint-every", "1")
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "loss is not finite" in err
    assert list((files / "run" / "resume").glob("step-*"))
    assert (files / "run" / "config.toml").exists()


def test_a_failed_resume_leaves_the_interrupted_run_alone(tiny_gpt2, files, capsys, monkeypatch):
    (files / "run").mkdir()
    code, _, err = run_cli(_sft(tiny_gpt2, files), capsys)
    assert code == 0, err
    for name in ("config.json", "model.safetensors"):  # as if interrupted before the final save
        (files / "run" / name).unlink()
    kept = sorted(p.name for p in (files / "run").iterdir())
    monkeypatch.setattr(sft_module, "sft_loss", _failing_loss)
    with pytest.raises(RuntimeError):
        run_cli(_sft(tiny_gpt2, files, "--resume"), capsys)
    assert sorted(p.name for p in (files / "run").iterdir()) == kept


@pytest.mark.slow
def test_a_failed_multi_process_start_leaves_no_run_directory(tiny_gpt2, files, capsys):
    args = _sft(tiny_gpt2, files, "--lr", "1e30", "--num-processes", "2", "--device", "cpu")
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "loss is not finite" in err
    assert not (files / "run").exists()


# ------------------------------------------------------------- fixed in branches i16-data and i16-tokens

@pytest.mark.parametrize("command", ["rm", "dpo"])
def test_a_pair_with_chosen_equal_to_rejected_is_dropped_with_a_count(command, tiny_gpt2, files, capsys):
    same = json.dumps({"prompt": "list two fruits 0 .", "chosen": "apple pear", "rejected": "apple pear"})
    (files / "pairs.jsonl").write_text(PAIRS + same + "\n", encoding="utf-8")
    code, out, err = run_cli([*_commands(tiny_gpt2, files)[command], "--epochs", "1", "--batch-size", "4"], capsys)
    assert code == 0, err
    assert "dropped 1" in out + err


@pytest.mark.parametrize("command", ["rm", "dpo"])
def test_only_pairs_with_chosen_equal_to_rejected_is_one_line(command, tiny_gpt2, files, capsys):
    same = json.dumps({"prompt": "list two fruits 0 .", "chosen": "apple pear", "rejected": "apple pear"})
    (files / "pairs.jsonl").write_text(same + "\n", encoding="utf-8")
    code, _, err = run_cli(_commands(tiny_gpt2, files)[command], capsys)
    assert code == 2 and "pairs.jsonl" in _one_line(err)
    assert not (files / "run").exists()


@pytest.mark.parametrize("command, flag", [("sft", "--max-length"), ("rm", "--max-length"), ("dpo", "--max-length"),
                                           ("ppo", "--max-prompt-length"), ("ppo", "--max-new-tokens")])
def test_a_length_beyond_the_models_positions_is_one_line(command, flag, tiny_gpt2, files, capsys):
    # the tiny GPT-2 has 128 positions (tests/conftest.py::save_tiny_model)
    code, _, err = run_cli([*_commands(tiny_gpt2, files)[command], flag, "4096"], capsys)
    assert code == 2 and "128" in _one_line(err)
    assert not (files / "run").exists()


@pytest.mark.parametrize("command", ["sft", "rm", "dpo"])
def test_rows_beyond_the_models_positions_are_refused_with_truncation_error(command, tiny_gpt2, files, capsys):
    long = " ".join(["apple"] * 300)
    (files / "demos.jsonl").write_text(json.dumps({"prompt": "list .", "completion": long}) + "\n" + DEMOS)
    (files / "pairs.jsonl").write_text(json.dumps({"prompt": "list .", "chosen": long, "rejected": "pear"}) + "\n"
                                       + PAIRS)
    args = [*_commands(tiny_gpt2, files)[command], "--max-length", "64", "--truncation", "error"]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and re.search(r"\b(row|record) 1\b", _one_line(err)), err
    assert not (files / "run").exists()


def test_a_labeling_export_with_long_texts_trains_a_reward_model(tiny_gpt2, files, capsys):
    """Was an IndexError at GPT-2's position limit: rankings from the labeling app with texts of ~600 tokens
    (beyond the tiny GPT-2's 128 positions) are truncated from the right, with a count in the log."""
    long = " ".join(["apple"] * 600)
    rows = [{"id": f"item-{i}", "prompt": f"list two fruits {i} . " + long,
             "completions": [long + " pear", "pear", long],
             "ranking": [[0], [1], [2]], "labeler": "ann"} for i in range(6)]
    (files / "rankings.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    code, out, err = run_cli(["rm", "--model", tiny_gpt2, "--data", files / "rankings.jsonl", "--out", files / "run",
                              "--epochs", "1", "--batch-size", "2"], capsys)
    assert code == 0, err
    assert "truncat" in (out + err).lower()


@pytest.mark.parametrize("command", ["sft", "rm", "dpo", "ppo"])
def test_a_model_directory_without_tokenizer_files_is_one_whole_line(command, tiny_gpt2, files, capsys, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors", "generation_config.json"):
        if (tiny_gpt2 / name).exists():
            (bare / name).write_bytes((tiny_gpt2 / name).read_bytes())
    code, _, err = run_cli(_commands(bare, files)[command], capsys)
    line = _one_line(err)
    assert code == 2 and "bare" in line and "no tokenizer files" in line and line.rstrip().endswith("there too")
    assert not (files / "run").exists()


def test_a_truncated_weights_file_is_one_line(tiny_gpt2, files, capsys, tmp_path):
    """Was a traceback: safetensors' own error (SafetensorError) was not among the load errors."""
    broken = tmp_path / "truncated"
    broken.mkdir()
    for entry in tiny_gpt2.iterdir():
        (broken / entry.name).write_bytes(entry.read_bytes())
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:3000])  # a copy cut short
    code, _, err = run_cli(["sft", "--model", broken, "--data", files / "demos.jsonl", "--out", files / "run"],
                           capsys)
    assert code == 2 and "truncated" in _one_line(err) and "cannot load" in _one_line(err)
    assert not (files / "run").exists()
