"""Judges: reward sources that are logged and reported, never trained on (`--judge`).

A judge spec is one of
- a registered name, e.g. `world:gold` (the toy world registers its hidden gold reward: `world/gold.py`);
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
from rlhfkit.rewards.functions import RewardFunction, call_reward_function, load_reward_function

# name -> a judge: an object with score(prompts, texts, finished, rows, where) -> {metric: [value per completion]}
JUDGES: dict[str, object] = {}


def register_judge(name: str, judge) -> None:
    """Make `name` a judge spec (a package registers its own, e.g. the toy world's `world:gold`)."""
    JUDGES[name] = judge


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
        return JUDGES[spec]
    if Path(spec).is_dir():
        if load_model is None:
            raise UserError(f"--judge {spec!r}: a reward model directory is not accepted here")
        return ModelJudge(load_model(spec))
    if spec.partition(":")[0] in {name.partition(":")[0] for name in JUDGES}:
        raise UserError(f"--judge {spec!r}: unknown judge (registered: {', '.join(sorted(JUDGES))})")
    return FunctionJudge(load_reward_function(spec, "--judge"))


def judge_metrics(judge, prompts: list, texts: list[str], finished: list[bool], rows: list[dict],
                  where: list[str]) -> dict[str, float]:
    """The mean of each of the judge's metrics over a batch (completions it did not score left out)."""
    scores = judge.score(prompts, texts, finished, rows, where)
    return {k: float(np.nanmean(v)) if not np.all(np.isnan(v)) else float("nan") for k, v in scores.items()}
