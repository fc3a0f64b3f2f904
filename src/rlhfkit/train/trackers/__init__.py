"""Experiment trackers beside OUT/metrics.jsonl: `--report-to tensorboard,wandb,trackio` (none by default).

metrics.jsonl keeps rlhfkit's own names (the demo's report and the tests read them). The trackers get the names TRL
logs where the meaning is the same, through one table, `TRL_NAMES`, so that a run of `rlhf ppo` and one of TRL's
PPOTrainer plot on the same axes; a metric TRL has no twin for keeps its own name. TRL's trainers log through
transformers' callbacks, which show these names in W&B and trackio with a `train/` prefix (`eval_` becomes `eval/`).

One module per tracker, each importing its library at its top, loaded by name from `BACKENDS` when chosen: the
libraries of trackers nobody chose are never imported, and a chosen one that is not installed is one line
(`check_report_to`, before anything is written). Each module has `open_tracker(path, name, config, resume)`
returning a `Tracker`. Only process 0 of a run writes (RunDir).

A composite command (demo, compare, loop) runs its trainers inside `reporting(its --report-to)`: each trainer it
starts adds those trackers to its own (`with_inherited`, in start_run), so every stage is a run of its own in the
tracker, named by its directory (e.g. runs/demo/seed-0/ppo), and its config.toml says where it reported.
"""

from __future__ import annotations

import contextlib
import importlib
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Protocol

from rlhfkit.config import to_toml
from rlhfkit.errors import UserError

# tracker -> (its module here, the package it needs)
BACKENDS = {
    "tensorboard": ("rlhfkit.train.trackers.tensorboard", "tensorboard"),
    "wandb": ("rlhfkit.train.trackers.wandb", "wandb"),
    "trackio": ("rlhfkit.train.trackers.trackio", "trackio"),
}
NONE = "none"

# rlhfkit's name -> TRL 0.29's name, per trainer (by its config class: the same name means different things in
# two trainers, e.g. train_accuracy is RewardTrainer's `accuracy` and DPOTrainer's `rewards/accuracies`).
# A trailing `*` maps a family: reward/NAME -> rewards/NAME/mean.
TRL_NAMES = {
    "SFTConfig": {                                   # trl.SFTTrainer (transformers' Trainer.log)
        "train_loss": "loss",                        # mean token cross-entropy of the batch
        "eval_loss": "eval_loss",                    # the same on the held-out split
        "lr": "learning_rate",
    },
    "RewardConfig": {                                # trl.RewardTrainer
        "train_loss": "loss",                        # −log σ(r(x, y_w) − r(x, y_l)) over the batch's pairs
        "train_accuracy": "accuracy",                # share of pairs with r(x, y_w) > r(x, y_l)
        "lr": "learning_rate",
        "heldout_loss": "eval_loss",
        "heldout_accuracy": "eval_accuracy",
    },
    "DPOConfig": {                                   # trl.DPOTrainer
        "train_loss": "loss",
        "train_accuracy": "rewards/accuracies",      # share of pairs whose implicit reward margin is > 0
        "train_margin": "rewards/margins",           # mean r̂(x, y_w) − r̂(x, y_l), r̂ = β·log π_θ/π_ref
        "lr": "learning_rate",
        "heldout_loss": "eval_loss",
        "heldout_accuracy": "eval_rewards/accuracies",
        "heldout_margin": "eval_rewards/margins",
    },
    "PPOConfig": {                                   # trl.experimental.ppo.PPOTrainer (GRPOTrainer's where marked)
        "kl": "objective/kl",                        # mean over responses of Σ_t log π_θ/π_ref (k1), at rollout
        "score": "objective/scores",                 # mean terminal reward r(x, y) (missing-EOS penalty included)
        "reward": "objective/rlhf_reward",           # mean Σ_t of the shaped reward: score − β·KL
        "policy_loss": "loss/policy_avg",            # clipped surrogate loss, mean over minibatches
        "value_loss": "loss/value_avg",              # value loss, mean over minibatches
        "clipfrac": "policy/clipfrac_avg",           # share of tokens whose ratio was clipped
        "approx_kl": "policy/approxkl_avg",          # ½·(log π_θ/π_θk)², mean over tokens and minibatches
        "entropy": "policy/entropy_avg",             # mean per-token entropy of π_θ in the update
        "episodes": "episode",                       # responses sampled so far
        "response_length": "completions/mean_length",  # GRPOTrainer: mean response length in tokens
        "reward/*": "rewards/*/mean",                # GRPOTrainer: mean of each reward source
    },
}


class Tracker(Protocol):
    """What RunDir calls: one `log` per logged step (numbers only, TRL's names), `close` once at the end."""

    def log(self, step: int, metrics: dict[str, float]) -> None: ...

    def close(self) -> None: ...


def check_report_to(names: list[str]) -> None:
    """`--report-to`: known trackers (or `none` alone), each installed; loads their modules. One line otherwise."""
    unknown = [n for n in names if n not in BACKENDS and n != NONE]
    if unknown:
        raise UserError(f"--report-to: unknown tracker {unknown[0]!r} (one or more of {', '.join(BACKENDS)}, "
                        f"comma-separated, or {NONE})")
    if NONE in names and len(names) > 1:
        raise UserError(f"--report-to: '{NONE}' cannot be combined with a tracker (got {','.join(names)})")
    for name in names:
        _backend(name)


_INHERITED: ContextVar[tuple[str, ...]] = ContextVar("rlhfkit_report_to", default=())


@contextlib.contextmanager
def reporting(names: list[str]):
    """Inside, every trainer started (start_run) reports to `names` too."""
    token = _INHERITED.set(tuple(n for n in names if n != NONE))
    try:
        yield
    finally:
        _INHERITED.reset(token)


def with_inherited(names: list[str]) -> list[str]:
    """A trainer's --report-to with the trackers of the composite command it runs in (see `reporting`)."""
    inherited = _INHERITED.get()
    return list(dict.fromkeys([*(n for n in names if n != NONE), *inherited])) if inherited else names


def _backend(name: str):
    module, package = BACKENDS[name]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != package:
            raise
        raise UserError(f"--report-to {name}: the {package} package is not installed "
                        "(pip install 'rlhfkit[track]')") from None


def trl_name(names: dict[str, str], key: str) -> str:
    """TRL's name of `key` in one trainer's table (`key` itself when TRL has no twin)."""
    if key in names:
        return names[key]
    head, _, rest = key.partition("/")
    if rest and f"{head}/*" in names:
        return names[f"{head}/*"].replace("*", rest)
    return key


class Trackers:
    """The chosen trackers of one run, fed every record RunDir writes to metrics.jsonl."""

    def __init__(self, names: list[str], path: Path, config, resume: bool):
        """`path`: the run directory (TensorBoard and W&B write their files inside it); the run's name in the
        trackers is its OUT as given; `config` (the resolved config) is logged with the run."""
        chosen = [n for n in dict.fromkeys(names) if n != NONE]
        self.names = TRL_NAMES.get(type(config).__name__, {})
        settings = tomllib.loads(to_toml(config))
        self.trackers: list[Tracker] = []
        try:
            for name in chosen:
                self.trackers.append(_backend(name).open_tracker(path, str(config.out), settings, resume))
        except BaseException:
            self.close()
            raise

    def log(self, record: dict) -> None:
        """One metrics.jsonl record: its numbers (not `step`, not text or non-finite values kept as text) under
        TRL's names, at its step."""
        metrics = {trl_name(self.names, k): float(v) for k, v in record.items()
                   if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        for tracker in self.trackers:
            tracker.log(record["step"], metrics)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()
        self.trackers = []
