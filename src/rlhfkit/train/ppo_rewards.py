"""PPO's reward sources and judges (`rlhfkit.rewards`), set up from its config: what r(x, y) is trained on — the
reward model, reward functions, or their weighted sum — and what is only logged (`--judge`; `--world DIR` is the
judge `world:gold`). The trainer never imports the toy world: its gold reward is a judge loaded by name.

Each sampled response carries its dataset row: the fields a reward function receives, and the name an error gives
("prompts.jsonl: prompt 17 (id r17)").
"""

from __future__ import annotations

from dataclasses import dataclass

from rlhfkit.models.loading import check_model_dir, check_reward_dir
from rlhfkit.models.reward_model import RewardModel
from rlhfkit.rewards.combine import RewardBatch, Rewards
from rlhfkit.rewards.functions import load_reward_function
from rlhfkit.rewards.sources import JUDGES, WORLD_JUDGE, judge_metrics, load_judge


@dataclass
class PromptRows:
    """The prompts of a run and, for each, its other fields and its name in messages."""
    prompts: list
    fields: list[dict]
    where: list[str]

    @classmethod
    def of(cls, path: str, records: list[dict]) -> PromptRows:
        fields = [{**r.get("extra", {}), **{k: r[k] for k in ("id", "task") if k in r}} for r in records]
        where = [f"{path}: prompt {i + 1}" + (f" (id {r['id']})" if "id" in r else "") for i, r in enumerate(records)]
        return cls([r["prompt"] for r in records], fields, where)

    def batch(self, samples, rows: list[int]) -> RewardBatch:
        return RewardBatch(samples, [self.fields[i] for i in rows], [self.where[i] for i in rows])


def judge_specs(cfg) -> list[str]:
    return list(cfg.judge) + ([WORLD_JUDGE] if cfg.world and WORLD_JUDGE not in cfg.judge else [])


def checked_judge_dir(path: str) -> str:
    """A reward model directory named as a judge, checked (one line if it is not one) but not loaded yet."""
    check_model_dir(path, "judge")
    check_reward_dir(path, "judge")
    return path


def check_reward_sources(cfg) -> list:
    """Every --reward-fn and --judge loads (one line if not), before the run directory exists; returns the
    named judges as objects (loaded here once, passed to every process) and
    the other judges as their specs (loaded again in each process: a function from a file does not pickle)."""
    for spec in cfg.reward_fn:
        load_reward_function(spec)
    judges = []
    for spec in judge_specs(cfg):
        judge = load_judge(spec, load_model=checked_judge_dir)
        judges.append(judge if spec in JUDGES else spec)
    return judges


def make_rewards(cfg, reward_model, tokenizer) -> Rewards:
    functions = [load_reward_function(spec) for spec in cfg.reward_fn]
    return Rewards(reward_model, cfg.reward_model_weight, functions, tuple(cfg.reward_fn_weights))


def load_reward_model(path: str, tokenizer, device, packing: bool = False) -> RewardModel:
    """A reward model directory as a judge scores it: any reward model, with its own tokenizer where it has one
    (`packing`: the run's --packing)."""
    return RewardModel.load(path, tokenizer, device, packing=packing)


def make_judges(judges: list, load_model) -> list:
    return [load_judge(j, load_model) if isinstance(j, str) else j for j in judges]


def judges_record(judges: list, samples, rows: PromptRows, batch_rows: list[int]) -> dict:
    """Each judge's metrics on the (global) batch of rollouts."""
    out = {}
    fields, where = [rows.fields[i] for i in batch_rows], [rows.where[i] for i in batch_rows]
    for judge in judges:
        out |= judge_metrics(judge, list(samples.prompts), samples.texts, samples.finished.tolist(), fields, where)
    return out
