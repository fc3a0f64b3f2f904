"""Bad input gives one line `path:line: what is wrong` (or the config key), exit code 2, nothing written."""

import pytest

from tests.conftest import run_cli

GOOD = '{"prompt": "list two fruits .", "completion": "apple pear"}\n'


@pytest.mark.parametrize("content, expected", [
    (GOOD + '{"prompt": "x", \n', "demos.jsonl:2: invalid JSON"),
    (GOOD + '{"prompt": "list two fruits ."}\n', "demos.jsonl:2: missing field 'completion'"),
    ('{"prompt": 3, "completion": "x"}\n', "demos.jsonl:1: field 'prompt' must be a string, got a number"),
    ('["prompt", "completion"]\n', "demos.jsonl:1: expected a JSON object, got an array"),
    (GOOD + '{"prompt": "p", "completion": "  "}\n', "demos.jsonl:2: field 'completion' is empty"),
    ("", "demos.jsonl: file is empty"),
    ("\n\n", "demos.jsonl: file is empty"),
    (b"\xff\xfe{}".decode("latin-1"), "demos.jsonl:1:"),
])
def test_sft_rejects_bad_demonstrations(content, expected, tiny_gpt2, tmp_path, capsys):
    data = tmp_path / "demos.jsonl"
    data.write_text(content, encoding="latin-1" if "\xff" in content else "utf-8")
    code, out, err = run_cli(["sft", "--model", tiny_gpt2, "--data", data, "--out", tmp_path / "run"], capsys)
    assert code == 2
    assert expected in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("model, data, extra, expected", [
    ("{tmp}/nope", None, [], "nope: no such model directory"),
    (None, "{tmp}/missing.jsonl", [], "missing.jsonl: no such file"),
    (None, None, ["--set", "learning_rate=3"], "unknown config key 'learning_rate'"),
    (None, None, ["--set", "epochs=three"], "config key 'epochs' expects int, got 'three'"),
    (None, None, ["--set", "epochs"], "expected key=value"),
    (None, None, ["--epochs", "2.5"], "config key 'epochs' expects int"),
    (None, None, ["--config", "{tmp}/bad.toml"], "bad.toml: invalid TOML"),
    (None, None, ["--config", "{tmp}/typed.toml"], "typed.toml: config key 'lr' expects float, got 'fast'"),
    (None, None, ["--config", "{tmp}/unknown.toml"], "unknown.toml: unknown config key 'lrr'"),
    (None, None, ["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
])
def test_sft_rejects_bad_arguments_and_config(model, data, extra, expected, tiny_gpt2, tmp_path, capsys):
    (tmp_path / "demos.jsonl").write_text(GOOD)
    (tmp_path / "bad.toml").write_text("epochs = = 3\n")
    (tmp_path / "typed.toml").write_text('lr = "fast"\n')
    (tmp_path / "unknown.toml").write_text("lrr = 0.1\n")
    fill = lambda a: a.format(tmp=tmp_path)  # noqa: E731
    cmd = ["sft", "--model", fill(model) if model else tiny_gpt2, "--data",
           fill(data) if data else tmp_path / "demos.jsonl", "--out", tmp_path / "run", *map(fill, extra)]
    code, out, err = run_cli(cmd, capsys)
    assert code == 2, err
    assert expected in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_missing_required_flag_names_it(tmp_path, capsys):
    code, _, err = run_cli(["sft", "--data", tmp_path / "d.jsonl", "--out", tmp_path / "run"], capsys)
    assert code == 2 and "missing required --model" in err


def test_model_directory_without_config_is_rejected(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "d.jsonl").write_text(GOOD)
    code, _, err = run_cli(["sft", "--model", tmp_path / "empty", "--data", tmp_path / "d.jsonl",
                            "--out", tmp_path / "run"], capsys)
    assert code == 2 and "not a model directory (no config.json" in err


def test_existing_run_directory_is_not_overwritten_by_default(tiny_gpt2, tmp_path, capsys):
    (tmp_path / "d.jsonl").write_text(GOOD)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("mine")
    code, _, err = run_cli(["sft", "--model", tiny_gpt2, "--data", tmp_path / "d.jsonl", "--out", tmp_path / "run"],
                           capsys)
    assert code == 2 and "pass --overwrite" in err
    assert (tmp_path / "run" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("args, expected", [
    (["world", "build", "--out", "{tmp}/w", "--preset", "huge"], "unknown preset 'huge'"),
    (["world", "build", "--out", "{tmp}/w", "--arch", "rnn"], "unknown architecture 'rnn'"),
    (["eval", "gold", "--model", "{tmp}", "--world", "{tmp}/nowhere"], "not a world directory"),
    (["eval", "winrate", "--a", "{tmp}/x", "--b", "{tmp}/y", "--world", "{tmp}"], "not a world directory"),
    (["nonsense"], "unknown command 'nonsense'"),
])
def test_other_commands_reject_bad_input(args, expected, tmp_path, capsys):
    code, _, err = run_cli([a.format(tmp=tmp_path) for a in args], capsys)
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "w").exists()


def test_eval_rejects_missing_model_of_a_real_world(micro_world, tmp_path, capsys):
    code, _, err = run_cli(["eval", "gold", "--model", tmp_path / "gone", "--world", micro_world], capsys)
    assert code == 2 and "gone: no such model directory" in err


@pytest.mark.parametrize("args", [
    ["label", "invite", "--db", "{tmp}/labels.db", "--project", "p\udcff", "--name", "bob"],
    ["label", "invite", "--db", "{tmp}/labels.db", "--project", "p", "--set", "name=b\udcffob"],
])
def test_a_flag_that_is_not_utf8_is_one_line_and_writes_nothing(args, tmp_path, capsys):
    """`--project $'p\\xff'`: the shell passes a byte that is not UTF-8, which Python decodes as a lone surrogate;
    it reached the database and raised UnicodeEncodeError there."""
    code, _, err = run_cli([a.replace("{tmp}", str(tmp_path)) for a in args], capsys)
    assert code == 2 and "not valid UTF-8" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "labels.db").exists()
