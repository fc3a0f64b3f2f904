"""β of PPO's KL penalty to the reference, fixed or steered to a target KL (Ziegler et al. 2019, §2.2).

The PPO loop reads β from the controller before each iteration and passes it explicitly to the iteration
(`train.ppo.ppo_iteration`), then updates the controller with the iteration's KL; checkpoints save its state.
"""

from __future__ import annotations

import numpy as np


class KLController:
    """β, fixed or adaptive. Adaptive (Ziegler et al. 2019, §2.2), with e = clip(KL/KL_target − 1, −0.2, 0.2):

        β ← β · (1 + e · n_episodes / horizon)
    """

    def __init__(self, kl_coef: float, target: float | None = None, horizon: int = 10000):
        self.value, self.target, self.horizon = kl_coef, target, horizon

    def update(self, kl: float, n_episodes: int) -> None:
        if self.target is not None:
            error = float(np.clip(kl / self.target - 1.0, -0.2, 0.2))
            self.value *= 1.0 + error * n_episodes / self.horizon

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = state["value"]
