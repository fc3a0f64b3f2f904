"""Judges: reward sources that are logged and reported, never trained on (`--judge`).

A judge spec is one of
- a named judge, e.g. `world:gold`: a name for the `module:attribute` of a judge object (`JUDGES`), loaded when
  named by the reward functions' loader (`functions.load_object`), so nothing depends on what was imported before;
- a reward function, `module:function` or `file.py:function` (`functions.py`), logged under its name;
- a reward model directory, logged as `judge_rm` (`load_judge` is given a loader for it by the command).

A judge's `score(prompts, completions, finished, rows)` returns {metric name: one value per completion}; the
world's gold returns `gold` and `gold_correctness`, the keys its figures have always read.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from rlhfkit.errors import UserError
from rlhfkit.rewards.combine import completions_of, row_fields
from rlhfkit.rewards.functions import RewardFunction, call_reward_function, load_object, load_reward_function

WORLD_JUDGE = "world:gold"  # what --world names: the toy world's gold reward
# name -> the `module:attribute` of a judge: an object with score(prompts, texts, finished, rows, where) ->
# {metric: [value per completion]}. Loaded when named; no package registers anything when it is imported.
JUDGES: dict[str, str] = {WORLD_JUDGE: "rlhfkit.world.gold:GOLD_JUDGE"}


class FunctionJudge:
    """A reward function as a judge: its values, logged under its name (None: not scored, left out of the mean)."""

    def __init__(self, f: RewardFunction):
        self.f = f

    def score(self, prompts: list, texts: list[str], finished: list[bool], rows: list[dict],
              where: list[str]) -> dict[str, list[float]]:
        values = call_reward_function(self.f, prompts, completions_of(prompts, texts), row_fields(rows, finished),
                                      where)
        return {f"judge/{self.f.name}": [np.nan if v is None else v for v in values]}


class ModelJudge:
    """A reward model as a judge (`score_texts`, as best-of-n scores text): its score, logged as `judge_rm`."""

    def __init__(self, model):
        self.model = model

    def score(self, prompts, texts, finished, rows, where) -> dict[str, list[float]]:
        return {"judge_rm": self.model.score_texts(prompts, texts, finished).tolist()}


def load_judge(spec: str, load_model: Callable[[str], object] | None = None):
    """The judge `spec` names: a registered name, a reward model directory (loaded by `load_model`), or a
    reward function."""
    if spec in JUDGES:
        return load_object(JUDGES[spec], "--judge")
    if Path(spec).is_dir():
        if load_model is None:
            raise UserError(f"--judge {spec!r}: a reward model directory is not accepted here")
        return ModelJudge(load_model(spec))
    if spec.partition(":")[0] in {name.partition(":")[0] for name in JUDGES}:
        raise UserError(f"--judge {spec!r}: unknown judge (named judges: {', '.join(sorted(JUDGES))})")
    return FunctionJudge(load_reward_function(spec, "--judge"))


def judge_metrics(judge, prompts: list, texts: list[str], finished: list[bool], rows: list[dict],
                  where: list[str]) -> dict[str, float]:
    """The mean of each of the judge's metrics over a batch (completions it did not score left out)."""
    scores = judge.score(prompts, texts, finished, rows, where)
    return {k: float(np.nanmean(v)) if not np.all(np.isnan(v)) else float("nan") for k, v in scores.items()}


def world_judge(path: str):
    """`--world DIR`: the toy world's gold reward as a judge (`world:gold`), checked before any model loads; the
    trainers and the evaluation never import the world, they load its judge by name."""
    if not Path(path).is_dir():
        raise UserError(f"--world {path}: not a directory")
    return load_judge(WORLD_JUDGE)
