"""A batch of PPO rollouts: what step 2 measured about the sampled responses, gathered across processes, and
what docs/design.md §4 asks to log about it and about the update that learned from it (`mean_stats`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from rlhfkit import losses as L
from rlhfkit.generation import Samples, encode_prompts
from rlhfkit.train.distributed import Parallel


@dataclass
class Rollout:
    samples: Samples
    logp: torch.Tensor        # log π_θk(y_t)            [B, R]
    ref_logp: torch.Tensor    # log π_SFT(y_t)           [B, R]
    values: torch.Tensor      # V_φk(x, y_<t)            [B, R]
    rm_score: torch.Tensor    # r(x, y): the RM's score, or the weighted sum of the reward sources   [B]
    terminal_reward: torch.Tensor  # r(x, y), or the missing-EOS penalty: added at the last token   [B]
    entropy: float
    columns: dict[str, torch.Tensor] = field(default_factory=dict)  # each reward source's own value [B] (NaN:
    #                                                                  a function that did not score the response)
    # Multi-turn (engines/multiturn.py): the environment's rewards, on the last model token of a turn   [B, R]
    turn_rewards: torch.Tensor | None = None

    @property
    def mask(self) -> torch.Tensor:
        """The tokens the losses read: the policy's own (`Samples.model_mask`; one turn: the response mask)."""
        return self.samples.model_mask

    @property
    def prompt_width(self) -> int:
        return self.samples.prompt_ids.shape[1]

    @property
    def engine_logp(self) -> torch.Tensor | None:
        """log π_engine(y_t) of the sampled tokens, 0 on padding [B, R]; None: the trained model sampled itself."""
        e = self.samples.engine_logp
        return None if e is None else torch.where(self.mask.bool(), e.to(self.logp), torch.zeros_like(self.logp))


def pad_responses(samples: Samples, width: int, pad_id: int) -> Samples:
    """The responses right-padded to `width` tokens (the global batch's): padding is masked out."""
    extra = width - samples.response_ids.shape[1]
    if extra <= 0:
        return samples
    engine_logp = samples.engine_logp
    if engine_logp is not None:  # 0 on padding
        engine_logp = torch.nn.functional.pad(engine_logp, (0, extra), value=0.0)
    return replace(samples, response_ids=torch.nn.functional.pad(samples.response_ids, (0, extra), value=pad_id),
                   response_mask=torch.nn.functional.pad(samples.response_mask, (0, extra), value=0),
                   model_mask=None if samples.model_mask is samples.response_mask
                   else torch.nn.functional.pad(samples.model_mask, (0, extra), value=0),
                   engine_logp=engine_logp)


def generate_share(engine, tokenizer, prompts: list[str], parallel: Parallel, **options) -> Samples:
    """This process's contiguous rows of a global batch of prompts, sampled as a one-process run samples them
    (train/ppo.py's docstring): left-padded to the global prompt width, with the global batch's sampling noise
    (generation.py `next_token`) and as many decoding steps as the longest process takes, so that the samplers of
    all processes stay aligned; the responses right-padded to that width."""
    rows, steps = parallel.shard_range(len(prompts)), []
    width = encode_prompts(tokenizer, prompts, options["max_prompt_length"])[0].shape[1]

    def agree_steps(mine: int) -> int:  # the longest decoding loop of all processes
        steps.append(int(parallel.highest({"steps": mine})["steps"]))
        return steps[0]

    samples = engine.generate([prompts[i] for i in rows], prompt_width=width, rows=(rows.start, len(prompts)),
                              agree_steps=agree_steps, **options)
    return pad_responses(samples, steps[0], tokenizer.pad_token_id)


def gather_rollout(rollout: Rollout, parallel: Parallel) -> Rollout:
    """Every process's rows, in rank order: the global batch's rollout, the same in every process."""
    s, rows = rollout.samples, parallel.gather_rows
    texts = [t for part in parallel.gather_objects(s.texts) for t in part]
    prompts = [p for part in parallel.gather_objects(s.prompts) for p in part]
    engine_logp = None if s.engine_logp is None else rows(s.engine_logp.to(s.response_ids.device))  # NCCL: on device
    samples = replace(s, prompt_ids=rows(s.prompt_ids), prompt_mask=rows(s.prompt_mask),
                      response_ids=rows(s.response_ids), response_mask=rows(s.response_mask),
                      finished=rows(s.finished), texts=texts, prompts=prompts, engine_logp=engine_logp,
                      model_mask=None if s.model_mask is s.response_mask else rows(s.model_mask))
    entropy = parallel.token_mean({"entropy": rollout.entropy}, s.model_mask.sum())["entropy"]
    return Rollout(samples, rows(rollout.logp), rows(rollout.ref_logp), rows(rollout.values), rows(rollout.rm_score),
                   rows(rollout.terminal_reward), entropy, {k: rows(v) for k, v in rollout.columns.items()},
                   None if rollout.turn_rewards is None else rows(rollout.turn_rewards))


def rollout_metrics(rollout: Rollout, rewards: torch.Tensor, kl_coef: float) -> dict:
    """What docs/design.md §4 asks to log about a batch of rollouts (the judges' metrics are added by the trainer).
    The key `score` is the mean terminal reward (r(x, y), or the missing-EOS penalty); `reward/NAME` the mean of
    each reward source when there are several (responses a function did not score left out)."""
    s, mask = rollout.samples, rollout.mask
    kl_k1 = (rollout.logp - rollout.ref_logp).sum(-1)
    kl_k3 = (L.kl_k3(rollout.logp, rollout.ref_logp) * mask).sum(-1)
    out = {"rm_score": rollout.rm_score.mean().item(), "score": rollout.terminal_reward.mean().item(),
           "reward": rewards.sum(-1).mean().item(), "kl": kl_k1.mean().item(), "kl_k3": kl_k3.mean().item(),
           "kl_coef": kl_coef, "response_length": mask.sum(-1).float().mean().item(),
           "eos_rate": s.finished.float().mean().item(), "rollout_entropy": rollout.entropy,
           "value_mean": L.masked_mean(rollout.values, mask).item()}
    if len(rollout.columns) > 1 or set(rollout.columns) - {"rm"}:
        out |= {f"reward/{k}": float(np.nanmean(v.cpu().numpy())) if not v.isnan().all() else float("nan")
                for k, v in rollout.columns.items()}
    return out


# How each update statistic is reduced over the minibatches of an iteration: these by their extreme, every other
# one by its mean.
OVER_MINIBATCHES = {"ratio_min": min, "ratio_max": max}


def mean_stats(stats: list[dict]) -> dict:
    """The update statistics of an iteration (one dict per minibatch) as the one record PPO logs."""
    keys = stats[0].keys()
    out = {k: float(np.mean([s[k] for s in stats])) for k in keys if k not in OVER_MINIBATCHES}
    out |= {k: reduce(s[k] for s in stats) for k, reduce in OVER_MINIBATCHES.items() if k in keys}
    return out
