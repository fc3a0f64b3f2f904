"""Which plan a command that composes the stages runs: the --preset given, else the --world's own, else tiny."""

import json

from rlhfkit.recipes.pipeline import preset_of


def test_the_given_preset_wins_then_the_worlds_then_tiny(tmp_path):
    world = tmp_path / "w"
    world.mkdir()
    (world / "world.json").write_text(json.dumps({"preset": "micro"}))
    assert preset_of("small", world) == "small"
    assert preset_of(None, world) == "micro"
    assert preset_of(None, None) == "tiny"
    assert preset_of(None, tmp_path / "no-world-yet") == "tiny"  # the loop builds it: the default plan
    (world / "world.json").write_text(json.dumps({"preset": "huge"}))  # a preset with no plan: the default
    assert preset_of(None, world) == "tiny"
