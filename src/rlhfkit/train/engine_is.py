"""The engine importance weights of a batch of rollouts (issue 33 item 3; docs/design.md §10): where the rollout
engine is not the trained model — vLLM's kernels, or a stale copy of the policy with async rollouts — its responses
come with the log-probs it sampled them from (`Samples.engine_logp`), and PPO weighs each token's policy loss by
w_t = π_θk(y_t)/π_engine(y_t), truncated (TIS) or masked by response (MIS); the equations are losses.py's "engine
importance weights". Where the trained model sampled itself (the hf engines) there is no weight at all: the loss
is bit-for-bit the one without the correction."""

from __future__ import annotations

import torch

from rlhfkit import losses as L
from rlhfkit.train.configs import PPOConfig, engine_correction
from rlhfkit.train.rollout import Rollout


def engine_weights(rollout: Rollout, cfg: PPOConfig) -> torch.Tensor | None:
    """The engine importance weight of each token, π_θk/π_engine truncated (--engine-is tis) or masked by response
    (mis) at --engine-is-cap, [B, R] (losses.py "engine importance weights"); None — no weight, the loss unchanged —
    with --engine-is none or where the trained model sampled itself (the hf engines: no engine log-probs)."""
    mode, engine_logp = engine_correction(cfg), rollout.engine_logp
    if mode == "none" or engine_logp is None:
        return None
    weights = L.tis_weights if mode == "tis" else L.mis_weights
    return weights(rollout.logp, engine_logp, rollout.mask, cfg.engine_is_cap)


def engine_metrics(rollout: Rollout, cfg: PPOConfig) -> dict:
    """What PPO logs about the engine–trainer gap, where the engine returned log-probs (none with the hf engines):
    the token KL(π_engine ‖ π_θk) (k1, k3), and with --engine-is tis the share of tokens capped, with mis the share
    of responses masked, and the mean weight over response tokens."""
    engine_logp, mode, mask = rollout.engine_logp, engine_correction(cfg), rollout.mask
    if engine_logp is None:
        return {}
    k1, k3 = L.engine_mismatch(rollout.logp, engine_logp, mask)
    out = {"engine_kl": k1.item(), "engine_kl_k3": k3.item()}
    if mode == "tis":
        out["engine_is_capped"] = L.tis_capped_fraction(rollout.logp, engine_logp, mask, cfg.engine_is_cap).item()
    elif mode == "mis":
        out["engine_is_masked"] = L.mis_masked_fraction(rollout.logp, engine_logp, mask, cfg.engine_is_cap).item()
    if mode != "none":
        out["engine_is_weight"] = L.masked_mean(engine_weights(rollout, cfg), mask).item()
    return out
