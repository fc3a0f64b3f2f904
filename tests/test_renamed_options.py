"""Issue 32 item 4: one name per idea. PPO iterations are `ppo_steps` and samples per prompt `num_generations`
in `rlhf ppo`, `demo`, `loop` and `compare`; the old names (`--steps`, `--rl-steps`, `--rloo-k`, `--group-size`)
are still accepted for one release as flags, TOML keys and `--set` keys, with one line on stderr, and a run
directory saved under them still resumes."""

import argparse

import pytest

from rlhfkit.config import add_arguments, build_config, from_args, to_toml
from rlhfkit.errors import UserError
from rlhfkit.recipes.configs import CompareConfig
from rlhfkit.runtime.directory import check_same_config
from rlhfkit.train.configs import PPOConfig, samples_per_prompt

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
