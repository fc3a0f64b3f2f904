"""Issue 32 item 4: one name per idea. PPO iterations are `ppo_steps` and samples per prompt `num_generations`
in `rlhf ppo`, `demo`, `loop` and `compare`; the old names (`--steps`, `--rl-steps`, `--rloo-k`, `--group-size`)
are still accepted for one release as flags, TOML keys and `--set` keys, with one line on stderr, and a run
directory saved under them still resumes."""

import argparse
import ast
import dataclasses
import inspect
import textwrap

import pytest

from rlhfkit.config import add_arguments, build_config, from_args, to_toml
from rlhfkit.errors import UserError
from rlhfkit.recipes.configs import CompareConfig, DemoConfig, LoopConfig
from rlhfkit.runtime.directory import check_same_config
from rlhfkit.train.configs import DPOConfig, PPOConfig, RewardConfig, SFTConfig, SupervisedOptions, samples_per_prompt
from tests.conftest import run_cli
from tests.train.test_checkpoint import _metrics
from tests.train.test_ppo import _reward_dir

REQUIRED = ["--policy", "p", "--prompts", "x.jsonl", "--out", "o", "--reward", "rm"]


def parse(cls, argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser, cls)
    return from_args(cls, parser.parse_args(argv))


@pytest.mark.parametrize("old, new, value", [("--steps", "ppo_steps", 7), ("--rloo-k", "num_generations", 2),
                                             ("--group-size", "num_generations", 8)])
def test_an_old_ppo_flag_sets_the_new_key_with_one_line_on_stderr(old, new, value, capsys):
    cfg = parse(PPOConfig, [*REQUIRED, old, str(value)])
    assert getattr(cfg, new) == value
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and old in err[0] and "--" + new.replace("_", "-") in err[0] and "deprecated" in err[0]


def test_the_new_flags_say_nothing(capsys):
    cfg = parse(PPOConfig, [*REQUIRED, "--ppo-steps", "3", "--num-generations", "2", "--advantage", "grpo"])
    assert (cfg.ppo_steps, samples_per_prompt(cfg)) == (3, 2)
    assert capsys.readouterr().err == ""


def test_compare_takes_rl_steps_and_rloo_k_as_its_new_names(capsys):
    cfg = parse(CompareConfig, ["--world", "w", "--out", "o", "--rl-steps", "5", "--rloo-k", "2"])
    assert (cfg.ppo_steps, cfg.num_generations) == (5, 2)
    assert (cfg.settings().ppo_steps, cfg.settings().num_generations) == (5, 2)
    assert len(capsys.readouterr().err.strip().splitlines()) == 2


def test_old_keys_in_a_toml_file_and_in_set_are_read_with_a_note(tmp_path, capsys):
    path = tmp_path / "ppo.toml"
    path.write_text('policy = "p"\nprompts = "x.jsonl"\nout = "o"\nsteps = 9\ngroup_size = 2\n', encoding="utf-8")
    cfg = build_config(PPOConfig, toml_path=path, sets=["rloo_k=8"])
    assert (cfg.ppo_steps, cfg.num_generations) == (9, 8)  # --set comes after the file
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all("deprecated" in line for line in err)
    assert str(path) in err[0] and "'steps'" in err[0] and "'ppo_steps'" in err[0]
    assert "'rl_steps'" in build_config_err(["rl_steps=4"], capsys)


def build_config_err(sets, capsys):
    cfg = build_config(CompareConfig, flags={"world": "w", "out": "o"}, sets=sets)
    assert cfg.ppo_steps == 4
    return capsys.readouterr().err


def test_the_saved_config_has_the_new_names_only():
    text = to_toml(PPOConfig(policy="p", prompts="x", out="o", ppo_steps=3, num_generations=2))
    keys = {line.split(" = ")[0] for line in text.splitlines()}
    assert {"ppo_steps", "num_generations"} <= keys and not {"steps", "rloo_k", "group_size"} & keys


def old_saved_config(tmp_path, cfg: PPOConfig, rloo_k: int, group_size: int):
    """config.toml as a run made before the rename wrote it: `steps`, `rloo_k`, `group_size`."""
    lines = [line for line in to_toml(cfg).splitlines() if not line.startswith("num_generations =")]
    text = "\n".join(lines).replace("ppo_steps =", "steps =") + f"\nrloo_k = {rloo_k}\ngroup_size = {group_size}\n"
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("advantage, rloo_k, group_size, k", [("rloo", 2, 4, 2), ("grpo", 4, 2, 2), ("gae", 4, 4, 4)])
def test_a_run_saved_under_the_old_names_resumes(tmp_path, advantage, rloo_k, group_size, k):
    cfg = PPOConfig(policy="p", prompts="x", out="o", ppo_steps=6, advantage=advantage, num_generations=k)
    path = old_saved_config(tmp_path, cfg, rloo_k, group_size)
    check_same_config(path, cfg)  # the same run: no error
    changed = PPOConfig(policy="p", prompts="x", out="o", ppo_steps=7, advantage=advantage, num_generations=k)
    with pytest.raises(UserError, match=r"ppo_steps \(6 -> 7\)"):
        check_same_config(path, changed)


def test_rlhf_ppo_resumes_a_run_directory_written_under_the_old_names(micro_world, tmp_path, capsys):
    """End to end: a run whose config.toml has `steps`, `rloo_k`, `group_size` (as runs before the rename wrote
    it), killed before its end, continues with `--resume` and the old flag `--steps`, to the numbers of a whole run."""
    rm = _reward_dir(tmp_path, micro_world / "base")
    args = ["ppo", "--policy", micro_world / "base", "--reward", rm, "--prompts", micro_world / "prompts/train.jsonl",
            "--batch-size", "4", "--minibatch-size", "4", "--ppo-epochs", "1", "--max-new-tokens", "4",
            "--threads", "1"]
    whole, old = tmp_path / "whole", tmp_path / "old"
    assert run_cli([*args, "--ppo-steps", "2", "--out", whole], capsys)[0] == 0
    old.mkdir()
    saved = (whole / "config.toml").read_text(encoding="utf-8").splitlines()
    assert "ppo_steps = 2" in saved and "num_generations = 4" in saved
    saved = [line.replace("ppo_steps =", "steps =") for line in saved if not line.startswith("num_generations")]
    (old / "config.toml").write_text("\n".join([*saved, "rloo_k = 4", "group_size = 4"]) + "\n", encoding="utf-8")
    (old / "metrics.jsonl").write_text('{"step": 1, "rm_score": 99.0}\n')  # killed before its first checkpoint
    code, _, err = run_cli([*args, "--steps", "2", "--out", old, "--resume"], capsys)
    assert code == 0, err
    assert "'--steps' is deprecated, use '--ppo-steps'" in err
    assert _metrics(old) == _metrics(whole)
    code, _, err = run_cli([*args, "--steps", "3", "--out", old, "--resume"], capsys)
    assert code == 2 and "cannot resume with a different config: ppo_steps (2 -> 3)" in err


COMMANDS = (SFTConfig, RewardConfig, DPOConfig, PPOConfig, DemoConfig, CompareConfig, LoopConfig)


def _declared(cls) -> list[tuple[str, str]]:
    """(field, help) of each field written out in the class's own body with its help as text: `default_of`
    carries a base's help instead of writing it again."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    helps = {f.name: f.metadata.get("help") for f in dataclasses.fields(cls)}  # the help as built (f-strings too)
    return [(node.target.id, helps[node.target.id]) for node in body
            if isinstance(node, ast.AnnAssign) and isinstance(node.value, ast.Call) and len(node.value.args) > 1
            and getattr(node.value.func, "id", "") in ("option", "required")]


def test_no_field_of_a_trainer_or_a_composite_command_is_declared_twice():
    """The composite commands take the trainers' and each other's fields from shared mixins, and SFT, RM and DPO
    theirs from SupervisedOptions, instead of declaring the same field with the same help again."""
    classes = {base for cls in COMMANDS for base in cls.__mro__ if dataclasses.is_dataclass(base)}
    where: dict[tuple[str, str], list[str]] = {}
    for cls in classes:
        for key in _declared(cls):
            where.setdefault(key, []).append(cls.__name__)
    assert {key: names for key, names in where.items() if len(names) > 1} == {}
    assert SupervisedOptions in SFTConfig.__mro__ and SupervisedOptions in DPOConfig.__mro__


@pytest.mark.parametrize("cls, defaults", [
    (SFTConfig, (0.05, 3, 32, 5e-4, 0.0, 0.05, None, 1.0, 10)),
    (RewardConfig, (0.1, 1, 16, 1e-4, 0.0, 0.05, None, 1.0, 10)),
    (DPOConfig, (0.1, 1, 16, 1e-4, 0.0, 0.1, None, 1.0, 10))])
def test_each_supervised_trainer_keeps_its_defaults(cls, defaults):
    keys = ("eval_fraction", "epochs", "batch_size", "lr", "weight_decay", "warmup_ratio", "max_length", "grad_clip",
            "log_every")
    assert tuple(getattr(cls(), k) for k in keys) == defaults
