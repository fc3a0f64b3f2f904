"""What responses are scored by: the flags of `rlhf ppo` and `rlhf eval bon` (light: the sources are loaded by
`functions.py`, `sources.py` and the reward model's loader when a command runs)."""

from __future__ import annotations

from dataclasses import dataclass

from rlhfkit.config import option
from rlhfkit.errors import UserError


@dataclass
class RewardOptions:
    """What responses are scored by (`rlhf ppo`, `rlhf eval bon`): a reward model, reward functions, or their
    weighted sum r = w_RM · r_RM + Σ_j w_j · f_j (`rewards/combine.py`)."""
    reward: str | None = option(None, "reward model directory (`rlhf rm`, or any sequence classifier with one "
                                "label); with --reward-fn the two are summed")
    reward_fn: list[str] = option([], "reward functions, comma-separated: module:function or file.py:function, "
                                  "called as f(prompts, completions, **row_fields) -> list[float] (TRL's convention)")
    reward_fn_weights: list[float] = option([], "weight of each --reward-fn (default: 1 each)")
    reward_model_weight: float = option(1.0, "weight of the reward model's score in the sum with --reward-fn")

    def check_rewards(self) -> None:
        if not self.reward and not self.reward_fn:
            raise UserError("config key 'reward': give a reward model (--reward), reward functions (--reward-fn), "
                            "or both")
        if self.reward_fn_weights and len(self.reward_fn_weights) != len(self.reward_fn):
            raise UserError(f"config key 'reward_fn_weights': {len(self.reward_fn_weights)} weights for "
                            f"{len(self.reward_fn)} reward functions")
