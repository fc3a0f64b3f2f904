"""Lengths against the model's position limit, via the CLI (issue 16): one line, exit 2, no run directory — where
GPT-2 used to raise IndexError and RoPE models ran past their positions in silence."""

import json

import pytest

from rlhfkit.models.scalar import ScalarModel
from tests.conftest import run_cli
from tests.tokenizers_zoo import save_tiny_model

LONG = "The cat reads the book? " * 40  # ~200 tokens: beyond the tiny models' 128 positions


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def model_dir(request, tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp(request.param) / "model", "chatml", request.param)


def demos(tmp_path, long: bool = True):
    path = tmp_path / "demos.jsonl"
    rows = [{"prompt": "The cat reads the book?", "completion": " The cat likes the book."}] * 6
    if long:
        rows.append({"prompt": LONG, "completion": " Yes."})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("command", ["sft", "dpo", "rm"])
def test_max_length_beyond_the_position_limit_is_refused(command, model_dir, tmp_path, capsys):
    data = demos(tmp_path, long=False)
    if command != "sft":
        data = tmp_path / "pairs.jsonl"
        data.write_text(json.dumps({"prompt": "The cat?", "chosen": " Yes.", "rejected": " No."}) + "\n")
    model_flag = "--policy" if command == "dpo" else "--model"
    code, _, err = run_cli([command, model_flag, model_dir, "--data", data, "--out", tmp_path / "run",
                            "--max-length", "512", "--eval-fraction", "0"], capsys)
    line = one_line(err)
    assert code == 2 and "--max-length 512" in line and "position limit of 128" in line
    assert not (tmp_path / "run").exists()


def test_ppo_prompt_plus_new_tokens_beyond_the_limit_is_refused(model_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "The cat?"}) + "\n")
    ScalarModel.from_backbone(model_dir).save_pretrained(tmp_path / "rm")  # a reward model on the same transformer
    code, _, err = run_cli(["ppo", "--policy", model_dir, "--reward", tmp_path / "rm", "--prompts", prompts,
                            "--out", tmp_path / "run", "--max-prompt-length", "64", "--max-new-tokens", "100"],
                           capsys)
    line = one_line(err)
    assert code == 2 and "--max-prompt-length 64 + --max-new-tokens 100" in line and "limit of 128" in line
    assert not (tmp_path / "run").exists()


def test_long_rows_are_refused_with_truncation_error(model_dir, tmp_path, capsys):
    code, _, err = run_cli(["sft", "--model", model_dir, "--data", demos(tmp_path), "--out", tmp_path / "run",
                            "--eval-fraction", "0", "--truncation", "error"], capsys)
    line = one_line(err)
    assert code == 2 and "demos.jsonl: record 7:" in line and "longer than max_length 128" in line
    assert not (tmp_path / "run").exists()


def test_long_rows_are_truncated_and_counted(model_dir, tmp_path, capsys):
    """The default: the model's limit (128 < the default 256) bounds the rows; the long one is cut, once counted."""
    code, out, err = run_cli(["sft", "--model", model_dir, "--data", demos(tmp_path), "--out", tmp_path / "run",
                              "--eval-fraction", "0", "--epochs", "1", "--batch-size", "7"], capsys)
    assert code == 0, err
    assert "sft: 1 rows longer than max_length 128 were truncated" in err
    assert "max_length = 128" in (tmp_path / "run" / "config.toml").read_text()
