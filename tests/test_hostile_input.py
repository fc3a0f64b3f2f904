"""Property tests: random bytes, random JSON and wrong types fed to every reader and config loader.

Whatever comes in, the outcome is a validated record or a `UserError` (one line, `path:line: ...`), and
through the CLI exit code 2 with one line on stderr — never a traceback.
"""

import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlhfkit.config import build_config
from rlhfkit.data.jsonl import read_jsonl
from rlhfkit.data.pairs import read_preferences
from rlhfkit.data.schemas import candidate_record, demo_record, pair_record, prompt_record, ranking_record
from rlhfkit.errors import UserError
from rlhfkit.train.sft import SFTConfig
from tests.conftest import run_cli

VALIDATORS = [prompt_record, demo_record, candidate_record, ranking_record, pair_record]
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
field_names = st.sampled_from(["id", "prompt", "completion", "completions", "ranking", "labeler", "likert", "flags",
                               "notes", "chosen", "rejected", "group", "text", "source", "finished", "task"])
records = st.dictionaries(field_names, json_values, max_size=7)


def _check_reader(path, validator):
    try:
        out = read_jsonl(path, validator)
    except UserError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith(str(path))
        return None
    assert isinstance(out, list) and out
    return out


@SETTINGS
@given(data=st.binary(max_size=300))
def test_random_bytes(tmp_path, data):
    path = tmp_path / "in.jsonl"
    path.write_bytes(data)
    for validator in VALIDATORS:
        _check_reader(path, validator)


@SETTINGS
@given(lines=st.lists(json_values, min_size=1, max_size=4))
def test_random_json_values(tmp_path, lines):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(v) + "\n" for v in lines))
    for validator in VALIDATORS:
        _check_reader(path, validator)


@SETTINGS
@given(lines=st.lists(records, min_size=1, max_size=4))
def test_right_fields_wrong_types(tmp_path, lines):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(v) + "\n" for v in lines))
    for validator in VALIDATORS:
        _check_reader(path, validator)
    try:
        groups = read_preferences(path)
    except UserError as exc:
        assert "\n" not in str(exc)
    else:
        for g in groups:
            assert all(0 <= i < len(g["completions"]) for pair in g["pairs"] for i in pair)


@SETTINGS
@given(k=st.integers(2, 6), ranking=json_values)
def test_random_rankings_are_validated(tmp_path, k, ranking):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"id": 1, "prompt": "p", "completions": ["x"] * k, "ranking": ranking}) + "\n")
    out = _check_reader(path, ranking_record)
    if out:  # accepted: every index exactly once
        flat = sorted(i for group in out[0]["ranking"] for i in group)
        assert flat == list(range(k))


toml_text = st.text(alphabet=string.printable, max_size=80)
keys = st.sampled_from(["lr", "epochs", "batch_size", "seed", "eval_data", "tensorboard", "model", "nope", "a.b", ""])


@SETTINGS
@given(text=toml_text)
def test_random_toml_config(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text)
    try:
        build_config(SFTConfig, toml_path=path, flags={"model": "m", "data": "d", "out": "o"})
    except UserError as exc:
        assert "\n" not in str(exc)


@SETTINGS
@given(key=keys, value=st.text(max_size=12) | json_values.map(json.dumps))
def test_random_set_overrides(key, value):
    try:
        cfg = build_config(SFTConfig, flags={"model": "m", "data": "d", "out": "o"}, sets=[f"{key}={value}"])
    except UserError as exc:
        assert "\n" not in str(exc)
    else:
        assert isinstance(cfg.lr, float) and isinstance(cfg.epochs, int) and isinstance(cfg.tensorboard, bool)


@SETTINGS
@given(key=keys, value=json_values)
def test_random_typed_toml_values(tmp_path, key, value):
    path = tmp_path / "c.toml"
    if not key or value is None:
        return
    path.write_text(f"{key} = {json.dumps(value)}\n" if not isinstance(value, (dict,)) else f"[{key}]\n")
    try:
        cfg = build_config(SFTConfig, toml_path=path, flags={"model": "m", "data": "d", "out": "o"})
    except UserError as exc:
        assert "\n" not in str(exc)
    else:
        assert isinstance(cfg.epochs, int) and not isinstance(cfg.epochs, bool)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=200) | st.lists(records, min_size=1, max_size=3).map(
    lambda rs: "".join(json.dumps(r) + "\n" for r in rs).encode()))
def test_cli_answers_hostile_files_with_one_line_and_exit_2(tmp_path, capsys, tiny_gpt2, data):
    path = tmp_path / "demos.jsonl"
    path.write_bytes(data)
    try:
        valid = bool(read_jsonl(path, demo_record))
    except UserError:
        valid = False
    if valid:
        return  # a valid file would start training: not what this test is about
    code, out, err = run_cli(["sft", "--model", tiny_gpt2, "--data", path, "--out", tmp_path / "run"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", [
    ["eval", "gold", "--model", "{f}", "--world", "{f}"],
    ["data", "pairs", "{f}", "--out", "{d}/pairs.jsonl"],
    ["world", "build", "--out", "{d}/w", "--config", "{f}"],
])
def test_other_commands_answer_a_binary_file_with_one_line(command, tmp_path, capsys):
    f = tmp_path / "junk.bin"
    f.write_bytes(bytes(range(256)))
    code, _, err = run_cli([c.format(f=f, d=tmp_path) for c in command], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
