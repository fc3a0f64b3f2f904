"""Property tests: random bytes, random JSON and wrong types fed to every reader and config loader.

Whatever comes in, the outcome is a validated record or a `UserError` (one line, `path:line: ...`), and
through the CLI exit code 2 with one line on stderr — never a traceback. Readers: prompts, demonstrations,
candidates, rankings, pairs, PPO-ptx data (and through the CLI every command that reads one of them); config
loaders: the TOML file and `--set key=value` of every command's config.
"""

import dataclasses
import json
import math
import string
import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlhfkit.cli import COMMANDS
from rlhfkit.config import _unwrap_optional, build_config
from rlhfkit.data.formats import read_prompts, read_sft
from rlhfkit.data.jsonl import read_jsonl
from rlhfkit.data.pairs import read_preference_records, read_preferences
from rlhfkit.data.schemas import candidate_record, demo_record, pair_record, prompt_record, ranking_record
from rlhfkit.errors import UserError
from rlhfkit.label.commands import read_items
from rlhfkit.train.configs import SFTConfig
from rlhfkit.train.ppo_data import ptx_record, read_ptx
from tests.conftest import run_cli

VALIDATORS = [prompt_record, demo_record, candidate_record, ranking_record, pair_record, ptx_record]
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Text with lone UTF-16 surrogates ("\ud800" is valid JSON but no UTF-8 writer takes it) beside ordinary text.
texts = st.text(max_size=20) | st.text(alphabet=st.sampled_from(["\ud800", "\udfff", "\ud83d", "a", " "]), max_size=4)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False) | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
field_names = st.sampled_from(["id", "prompt", "completion", "completions", "ranking", "labeler", "likert", "flags",
                               "notes", "chosen", "rejected", "group", "text", "source", "finished", "task",
                               "judge_draft"])
records = st.dictionaries(field_names, json_values, max_size=7)


def _check_reader(path, validator):
    try:
        out = read_jsonl(path, validator)
    except UserError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith(str(path))
        return None
    assert isinstance(out, list) and out
    json.dumps(out, ensure_ascii=False).encode("utf-8")  # what a reader accepts, every writer can write
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
@given(text=st.text(alphabet=st.sampled_from(["\ud800", "\udfff", "\ud83d", "\ude00", "a"]), min_size=1, max_size=4))
def test_text_that_is_not_unicode_is_rejected_by_every_reader(tmp_path, text):
    """JSON may escape half a surrogate pair ("\\ud800"); such a string is no text and no writer can write it."""
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"id": 1, "prompt": "p " + text, "completion": text, "completions": [text, "b"],
                                "ranking": [[0], [1]], "chosen": text, "rejected": "b", "text": text}) + "\n")
    for validator in VALIDATORS:
        _check_reader(path, validator)


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
        valid = bool(read_sft(path))
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


# ------------------------------------------------------------------------ every command's config loader

def _config_classes():
    found = {}
    for name, cmd in COMMANDS.items():
        found.setdefault(cmd.load_config(), name)
    return sorted(found.items(), key=lambda kv: kv[1])


CONFIGS = _config_classes()
CONFIG_IDS = [name for _, name in CONFIGS]


def _fits(tp, value) -> bool:
    """Does a resolved config value have its field's declared type?"""
    base, optional = _unwrap_optional(tp)
    if value is None:
        return optional
    if typing.get_origin(base) is list:
        (item,) = typing.get_args(base)
        return isinstance(value, list) and all(_fits(item, v) for v in value)
    if base is float:
        return isinstance(value, (float, int)) and not isinstance(value, bool)
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, base)


def _required(cls) -> dict:
    """A value for every required field, as the command line would give it."""
    return {f.name: "x" for f in dataclasses.fields(cls) if f.metadata.get("required")}


def _check_config(cls, **kwargs):
    try:
        cfg = build_config(cls, flags=_required(cls), **kwargs)
    except UserError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        assert _fits(hints[f.name], getattr(cfg, f.name)), (f.name, getattr(cfg, f.name))


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, (int, str)):
        return json.dumps(value)  # JSON strings are TOML basic strings
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value if v is not None) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None) + "}"


def _keys(cls):
    names = [f.name for f in dataclasses.fields(cls)]
    return st.sampled_from(names) | st.sampled_from(["nope", "a.b", f"{names[0]}.x", ""]) | st.text(max_size=6)


@pytest.mark.parametrize("cls", [c for c, _ in CONFIGS], ids=CONFIG_IDS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_config_file_loader_answers_random_toml(cls, tmp_path, data):
    path = tmp_path / "c.toml"
    if data.draw(st.booleans()):  # random text, or well-formed TOML with random keys and values of any type
        path.write_text(data.draw(st.text(alphabet=string.printable, max_size=80)))
    else:
        pairs = data.draw(st.lists(st.tuples(_keys(cls), json_values), max_size=4))
        lines = {json.dumps(k): _toml_value(v) for k, v in pairs if v is not None}  # (TOML forbids a key twice)
        path.write_text("".join(f"{k} = {v}\n" for k, v in lines.items()), encoding="utf-8", errors="surrogatepass")
    _check_config(cls, toml_path=path)


@pytest.mark.parametrize("cls", [c for c, _ in CONFIGS], ids=CONFIG_IDS)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_every_set_override_answers_random_values(cls, data):
    sets = data.draw(st.lists(st.tuples(_keys(cls), texts | json_values.map(json.dumps)), min_size=1, max_size=3))
    _check_config(cls, sets=[f"{k}={v}" for k, v in sets])


def test_a_deeply_nested_toml_file_is_one_line(tmp_path, capsys):
    path = tmp_path / "deep.toml"
    path.write_text("lr = " + "[" * 5000)
    code, _, err = run_cli(["sft", "--model", "m", "--data", "d", "--out", tmp_path / "o", "--config", path], capsys)
    assert code == 2 and "nested too deeply" in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------- every reader, through its command

def _prompts_ok(path):
    read_prompts(path)


def _preferences_ok(path):
    read_preference_records(path)


def _ptx_ok(path):
    read_ptx(path)


def _demos_ok(path):
    read_jsonl(path, demo_record)


def _sft_ok(path):
    read_sft(path)


def _candidates_ok(path):
    read_items(path, "rank")


GOOD_DEMOS = '{"prompt": "list two fruits .", "completion": "apple pear"}\n'
GOOD_RANKINGS = '{"id": 1, "prompt": "p", "completions": ["a", "b"], "ranking": [[0], [1]]}\n'
READER_COMMANDS = {  # command line with {f}: the hostile file, and the reader that would accept a valid one
    "sft --data": (["sft", "--model", "{m}", "--data", "{f}", "--out", "{d}/run"], _sft_ok),
    "sft --eval-data": (["sft", "--model", "{m}", "--data", "{good_demos}", "--eval-data", "{f}", "--out", "{d}/run"],
                        _sft_ok),
    "rm --data": (["rm", "--model", "{m}", "--data", "{f}", "--out", "{d}/run"], _preferences_ok),
    "rm --demos": (["rm", "--model", "{m}", "--data", "{good_rankings}", "--demos", "{f}", "--out", "{d}/run"],
                   _demos_ok),
    "dpo --data": (["dpo", "--policy", "{m}", "--data", "{f}", "--out", "{d}/run"], _preferences_ok),
    "ppo --prompts": (["ppo", "--policy", "{m}", "--reward", "{m}", "--prompts", "{f}", "--out", "{d}/run"],
                      _prompts_ok),
    "ppo --ptx-data": (["ppo", "--policy", "{m}", "--reward", "{m}", "--prompts", "{good_demos}", "--ptx-data", "{f}",
                        "--out", "{d}/run"], _ptx_ok),
    "sample --prompts": (["sample", "--models", "{m}", "--prompts", "{f}", "--out", "{d}/c.jsonl"], _prompts_ok),
    "data pairs": (["data", "pairs", "{f}", "--out", "{d}/pairs.jsonl"], None),
    "label import": (["label", "import", "{f}", "--db", "{d}/db.sqlite", "--project", "p"], _candidates_ok),
}


@pytest.mark.parametrize("reader", sorted(READER_COMMANDS))
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=200) | st.lists(records, min_size=1, max_size=3).map(
    lambda rs: "".join(json.dumps(r) + "\n" for r in rs).encode()))
def test_every_reader_answers_hostile_files_through_its_command(reader, tmp_path, capsys, tiny_gpt2, data):
    args, accepts = READER_COMMANDS[reader]
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(data)
    (tmp_path / "good_demos.jsonl").write_text(GOOD_DEMOS)
    (tmp_path / "good_rankings.jsonl").write_text(GOOD_RANKINGS)
    if accepts is not None:
        try:
            accepts(path)
            return  # valid input would start the command's work: not what this test is about
        except UserError:
            pass
    fill = dict(f=path, d=tmp_path, m=tiny_gpt2, good_demos=tmp_path / "good_demos.jsonl",
                good_rankings=tmp_path / "good_rankings.jsonl")
    code, _, err = run_cli([a.format(**fill) for a in args], capsys)
    if accepts is None and code == 0:
        return  # data pairs wrote the pairs of a valid rankings file
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("content", [b"\xff\xfe\x00", b"[]", b"{\"model_type\": 3}", b"[" * 5000, b"{}"])
def test_damaged_model_and_world_descriptions_are_one_line(content, tmp_path, capsys, tiny_gpt2):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_bytes(content)
    (tmp_path / "d.jsonl").write_text(GOOD_DEMOS)
    code, _, err = run_cli(["sft", "--model", tmp_path / "model", "--data", tmp_path / "d.jsonl", "--out",
                            tmp_path / "run"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    (tmp_path / "world").mkdir()
    (tmp_path / "world" / "world.json").write_bytes(content)
    code, _, err = run_cli(["eval", "gold", "--model", tiny_gpt2, "--world", tmp_path / "world"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
