"""`rlhf data convert` and the preference readers through the real CLI (data/convert.py, data/formats.py)."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import run_cli

HH = "\n\nHuman: Pet?\n\nAssistant:"
CONV = [{"role": "user", "content": "Pet?"}]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_scored_completions_convert_to_rankings_with_a_tie_and_to_pairs(tmp_path, capsys):
    src = _jsonl(tmp_path / "uf.jsonl", [{"prompt": "p", "completions": ["a", "b", "c"], "scores": [2, 5, 2]}])
    code, out, err = run_cli(["data", "convert", src, "--to", "rankings", "--out", tmp_path / "r.jsonl"], capsys)
    assert code == 0, err
    assert "1 rankings from a scored completions file" in out
    assert _read(tmp_path / "r.jsonl") == [{"id": "1", "prompt": "p", "completions": ["a", "b", "c"],
                                            "ranking": [[1], [0, 2]], "labeler": "scores"}]
    code, _, err = run_cli(["data", "convert", src, "--to", "pairs", "--out", tmp_path / "p.jsonl"], capsys)
    assert code == 0, err
    assert [(p["chosen"], p["rejected"]) for p in _read(tmp_path / "p.jsonl")] == [("b", "a"), ("b", "c")]


def test_rankings_convert_to_every_strict_pair(tmp_path, capsys):
    src = _jsonl(tmp_path / "r.jsonl", [{"id": 7, "prompt": "p", "completions": ["a", "b", "c", "d"],
                                         "ranking": [[3], [1], [0], [2]], "labeler": "l"}])
    code, _, err = run_cli(["data", "convert", src, "--to", "pairs", "--out", tmp_path / "p.jsonl"], capsys)
    assert code == 0, err
    pairs = _read(tmp_path / "p.jsonl")
    assert len(pairs) == 6 and {p["group"] for p in pairs} == {"7/l"}
    assert pairs[0] == {"prompt": "p", "chosen": "d", "rejected": "b", "group": "7/l"}


def test_implicit_prompt_preferences_convert_to_pairs_and_prompts(tmp_path, capsys):
    src = _jsonl(tmp_path / "hh.jsonl", [{"chosen": HH + " Dog.", "rejected": HH + " Rock."},
                                         {"chosen": HH + " Cat.", "rejected": HH + " Cat."}])
    code, _, err = run_cli(["data", "convert", src, "--to", "pairs", "--out", tmp_path / "p.jsonl"], capsys)
    assert code == 0, err
    assert _read(tmp_path / "p.jsonl") == [{"prompt": HH, "chosen": " Dog.", "rejected": " Rock."}]
    assert "data convert: dropped 1 pairs whose chosen equals rejected" in err
    code, _, err = run_cli(["data", "convert", src, "--to", "prompts", "--out", tmp_path / "q.jsonl"], capsys)
    assert code == 0, err
    assert _read(tmp_path / "q.jsonl") == [{"prompt": HH}]


def test_conversational_parquet_prompts_stay_lists_and_extra_columns_come_back(tmp_path, capsys):
    pq.write_table(pa.Table.from_pylist([{"prompt": CONV, "source": "web"}]), tmp_path / "p.parquet")
    code, _, err = run_cli(["data", "convert", tmp_path / "p.parquet", "--to", "prompts", "--out",
                            tmp_path / "q.jsonl"], capsys)
    assert code == 0, err
    assert _read(tmp_path / "q.jsonl") == [{"source": "web", "prompt": CONV}]


@pytest.mark.parametrize("rows, args, expected", [
    ([{"prompt": "p", "chosen": "a", "rejected": "b"}], ["--to", "rankings"], "holds pairs, not rankings"),
    ([{"prompt": "p", "chosen": "a", "rejected": "b"}], ["--to", "ranks"], "--to 'ranks': expected one of"),
    ([{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": 3, "chosen": "a", "rejected": "b"}],
     ["--to", "pairs"], "in.jsonl:2: field 'prompt' must be a string"),
    ([{"text": "x"}], ["--to", "prompts"], "a language modeling file (text) has no prompts"),
])
def test_convert_errors_are_one_line_and_write_nothing(rows, args, expected, tmp_path, capsys):
    src = _jsonl(tmp_path / "in.jsonl", rows)
    code, _, err = run_cli(["data", "convert", src, *args, "--out", tmp_path / "out.jsonl"], capsys)
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out.jsonl").exists()


# ------------------------------------------------------------ unusable pairs through `rlhf rm` and `rlhf dpo`

@pytest.mark.parametrize("command", ["rm", "dpo"])
def test_a_file_of_pairs_whose_chosen_equals_rejected_is_one_line_and_leaves_no_run(command, tiny_gpt2, tmp_path,
                                                                                    capsys):
    data = _jsonl(tmp_path / "data.jsonl", [{"prompt": f"say {w}", "chosen": w, "rejected": w} for w in "abc"])
    model_flag = "--model" if command == "rm" else "--policy"
    code, _, err = run_cli([command, model_flag, tiny_gpt2, "--data", data, "--out", tmp_path / "run"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "data.jsonl: no usable pair: in all 3 pairs chosen equals rejected" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["rm", "dpo"])
def test_pairs_whose_chosen_equals_rejected_are_dropped_with_a_count(command, tiny_gpt2, tmp_path, capsys):
    rows = [{"prompt": f"say {w}", "chosen": w, "rejected": "no"} for w in ("yes", "red", "blue", "cat")]
    data = _jsonl(tmp_path / "data.jsonl", rows + [{"prompt": "say a", "chosen": "a", "rejected": "a"}] * 3)
    model_flag = "--model" if command == "rm" else "--policy"
    code, _, err = run_cli([command, model_flag, tiny_gpt2, "--data", data, "--out", tmp_path / "run",
                            "--epochs", "1", "--batch-size", "2", "--eval-fraction", "0", "--threads", "1"], capsys)
    assert code == 0, err
    assert f"{command}: dropped 3 pairs whose chosen equals rejected ({data})" in err


def test_ultrafeedback_binarized_converts_to_pairs_and_prompts(tmp_path, capsys):
    """HuggingFaceH4/ultrafeedback_binarized's layout: a string prompt, chosen/rejected repeating it as messages."""
    row = {"prompt": "Pet?", "prompt_id": "ab12", "chosen": [*CONV, {"role": "assistant", "content": "A cat."}],
           "rejected": [*CONV, {"role": "assistant", "content": "No."}], "messages": [*CONV],
           "score_chosen": 9.0, "score_rejected": 3.0}
    pq.write_table(pa.Table.from_pylist([row]), tmp_path / "uf.parquet")
    code, out, err = run_cli(["data", "convert", tmp_path / "uf.parquet", "--to", "pairs", "--out",
                              tmp_path / "p.jsonl"], capsys)
    assert code == 0, err
    assert _read(tmp_path / "p.jsonl") == [{"prompt": CONV, "chosen": [{"role": "assistant", "content": "A cat."}],
                                            "rejected": [{"role": "assistant", "content": "No."}]}]
    code, _, err = run_cli(["data", "convert", tmp_path / "uf.parquet", "--to", "prompts", "--out",
                            tmp_path / "q.jsonl"], capsys)
    assert code == 0, err
    assert _read(tmp_path / "q.jsonl") == [{"prompt": CONV}]
