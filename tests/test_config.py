"""Configs: required fields say `X | None` and are checked; each config's `check()` rejects bad values."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from rlhfkit.config import build_config, check_required, required, to_toml
from rlhfkit.data.configs import PairsConfig
from rlhfkit.errors import UserError
from rlhfkit.eval.configs import EvalBoNConfig, EvalGoldConfig, EvalWinrateConfig
from rlhfkit.recipes.configs import CompareConfig, DemoConfig, LoopConfig, MethodSettings, SampleConfig
from rlhfkit.world.configs import SimulateConfig, WorldConfig
from tests.conftest import run_cli


@dataclasses.dataclass
class Toy:
    out: str | None = required("where")
    rankings: str | None = required("input", positional=True)


def test_required_field_is_none_until_given_and_its_type_says_so():
    assert Toy().out is None
    assert typing.get_type_hints(Toy)["out"] == str | None
    with pytest.raises(UserError, match=r"missing required --out \(config key 'out'\)"):
        check_required(Toy(rankings="r.jsonl"))
    with pytest.raises(UserError, match=r"missing required rankings \(config key 'rankings'\)"):
        check_required(Toy(out="o"))


def test_a_given_value_of_a_required_field_is_a_string_even_none(tmp_path):
    """None only means "not given": `--set out=none` names a directory, as it did when the field was typed str."""
    cfg = build_config(Toy, sets=["out=none", "rankings=r.jsonl"])
    assert cfg.out == "none"
    toml = tmp_path / "c.toml"
    toml.write_text("out = 3\n")
    with pytest.raises(UserError, match="config key 'out' expects str, got 3"):
        build_config(Toy, toml_path=toml, sets=["rankings=r"])
    toml.write_text('out = "runs/a"\nrankings = "r.jsonl"\n')
    assert to_toml(build_config(Toy, toml_path=toml)) == 'out = "runs/a"\nrankings = "r.jsonl"\n'


@pytest.mark.parametrize("cfg, message", [
    (SampleConfig(k=1), "config key 'k' must be at least 2"),
    (SampleConfig(temperatures=[]), "config key 'temperatures'"),
    (SampleConfig(top_p=0.0), "config key 'top_p'"),
    (SimulateConfig(labelers=2, per_item=3), "1 <= per_item <= labelers"),
    (WorldConfig(preset="huge"), "unknown preset 'huge'"),
    (WorldConfig(heldout_fraction=1.0), "config key 'heldout_fraction'"),
    (EvalGoldConfig(temperature=-1.0), "config key 'temperature' must be >= 0"),
    (EvalWinrateConfig(top_p=1.5), "config key 'top_p'"),
    (EvalBoNConfig(n=0), "config keys 'n' must be >= 1"),
    (DemoConfig(preset="huge"), "config key 'preset': unknown preset 'huge'"),
    (DemoConfig(methods=["ppo"]), "config key 'methods'"),
    (DemoConfig(kl_coef=-0.1), "config key 'kl_coef' must be >= 0"),
    (CompareConfig(methods=["sac"]), "config key 'methods'"),
    (CompareConfig(trained_on=["gold"]), "config key 'trained_on'"),
    (CompareConfig(num_generations=1), "config key 'num_generations' must be at least 2"),
    (CompareConfig(seeds=[]), "config key 'seeds'"),
    (CompareConfig(curve_points=0), "config key 'curve_points' must be at least 1"),
    (LoopConfig(preset="huge"), "config key 'preset': unknown preset 'huge'"),
    (LoopConfig(k=1), "k >= 2"),
])
def test_check_rejects_bad_values(cfg, message):
    with pytest.raises(UserError, match=message):
        cfg.check()


@pytest.mark.parametrize("cfg", [SampleConfig(), SimulateConfig(), WorldConfig(), PairsConfig(), EvalGoldConfig(),
                                 EvalBoNConfig(), DemoConfig(), CompareConfig(), LoopConfig()])
def test_check_accepts_the_defaults(cfg):
    cfg.check()


def test_compare_defaults_are_the_method_settings_defaults():
    cfg, settings = CompareConfig(), MethodSettings()
    assert cfg.settings() == settings
    assert cfg.settings().methods == tuple(cfg.methods)


def test_compare_checks_rloo_as_ppo_does_before_anything_runs(micro_world, tmp_path, capsys):
    """The micro preset's batch is 16 episodes: k = 3 does not divide it, and `rlhf ppo`'s own check says so."""
    code, _, err = run_cli(["compare", "--world", micro_world, "--methods", "rloo", "--num-generations", "3",
                            "--out", tmp_path / "c"], capsys)
    assert code == 2 and "config key 'num_generations' must be at least 2 and divide 'batch_size'" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()


def test_a_help_text_that_names_its_default_is_not_followed_by_argparses_default():
    import argparse

    from rlhfkit.config import add_arguments
    from rlhfkit.train.configs import PPOConfig

    parser = argparse.ArgumentParser()
    add_arguments(parser, PPOConfig)
    helps = {a.dest: a.help for a in reversed(parser._actions)}  # a renamed flag's alias comes after it
    assert "(default: None)" not in helps["value_model"] and "default: the reward model" in helps["value_model"]
    assert helps["ppo_steps"].endswith("(default: 100)")  # a help that does not say it keeps argparse's
