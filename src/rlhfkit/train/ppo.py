"""Step 3 of InstructGPT: PPO against the reward model with a KL penalty to the SFT policy.

    maximize  E_{x~D, y~π_θ(·|x)} [ r(x, y) − β·log(π_θ(y|x) / π_SFT(y|x)) ]  (+ γ·E_{x~D_pretrain}[log π_θ(x)])

One iteration is PPO-Clip's Algorithm 1 (Schulman et al. 2017; the lecture of docs/design.md §0):
  1. collect     y ~ π_θk(·|x) for a batch of prompts (KV-cached sampling at temperature T; stop at EOS), by the
                 rollout engine (`engines/`: the policy itself, or vLLM holding a copy synced after every update)
  2. measure     log π_θk(y_t), log π_SFT(y_t), V_φk(x, y_<t), r(x, y): one forward pass per model
  3. rewards     R_t = −β·(log π_θk − log π_SFT) on every response token, + r(x, y) on the last one
  4. advantages  Â_t by GAE (γ = 1, λ = 0.95), returns Ĝ_t = Â_t + V_t, Â whitened over valid tokens
  5. update      K epochs of shuffled minibatches: PPO-Clip loss + c_v·(clipped value regression) [+ γ·ptx]

The reference is the SFT policy (frozen); the value model starts from the reward model with its own
parameters (InstructGPT §3.5). Responses that never emit EOS get a fixed penalty instead of r(x, y): the
terminal reward is r(x, y) or that penalty.

RLOO (`--advantage rloo`, Ahmadian et al. 2024) is the option without a value model of the same loop: step 1 draws k
samples for each of batch_size/k prompts, step 2 scores no values, step 4 gives every token of a response the
same Â = R(x, y) − mean of R over the other k−1 samples of its prompt (R = Σ_t R_t, the KL-penalized sequence
reward), and step 5 is the same clipped update without the value term.

GRPO (`--advantage grpo`, Shao et al. 2024, DeepSeekMath §4) is the other critic-free option: k samples per prompt
(`--group-size`), every token of a response gets Â = (R − mean R) / (std R + ε) over its prompt's k samples, and —
as in the paper — the KL to the reference is a term β·k3 of the loss (`--kl-in loss`) instead of a per-token reward
(`--kl-in reward`, as PPO), each response's token losses averaged before the mean over responses
(`--loss-type grpo`). Dr. GRPO (Liu et al. 2025) is `--scale-rewards none --loss-type dr_grpo`: no division by the
std, a constant normalizer. The names are TRL's GRPOConfig's; bench/peer_grpo_check.py checks the numbers.

The loss variants (losses.py; with any --advantage) change step 5's policy terms: DAPO (Yu et al. 2025) is
`--loss-type dapo --clip-range-high 0.28 --overlong-cache N` (a token mean over the global minibatch, an upper clip
1 + ε_high, and a soft punishment of long responses added to r(x, y) in step 2), GSPO (Zheng et al. 2025)
`--importance-level sequence` (one length-normalized ratio per response), CISPO (MiniMax-M1) `--loss-type cispo`
(REINFORCE weighted by the clipped, stopped ratio); bench/peer_loss_check.py checks them against TRL 1.16.

r(x, y) is a reward model, reward functions (`--reward-fn`, TRL's convention: `rlhfkit/rewards`), or their weighted
sum; judges (`--judge`, e.g. the toy world's gold reward) are logged, never trained on (train/ppo_rewards.py).

With N processes (--num-processes) PPO takes the steps of one process (docs/design.md §4; tested in
tests/train/test_distributed.py). Every process holds the same generators, so each draws the same prompts,
minibatch orders and PPO-ptx batches. 1: each generates its contiguous share of the global batch's rows,
left-padded to the global prompt width, with the sampling noise of the whole global batch drawn from the same
sampler (generation.py `next_token`); the processes agree on the decoding steps afterwards, so the samplers stay
aligned. 2: each measures its rows; the rollout is then gathered to every process, so 3–4 (whitening, GAE, RLOO)
see the global batch. 5: each global minibatch is split with `Parallel.shard`, and the loss of each share is
weighted by its valid tokens (PPO-ptx's term by its text tokens) in `Parallel.backward`; the update statistics
are token means (minimum, maximum) over the global minibatch.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from rlhfkit import losses as L
from rlhfkit.config import check_at_least, check_positive, option, required
from rlhfkit.data.readers import DataOptions
from rlhfkit.engines import EngineOptions, check_engine, make_engine
from rlhfkit.errors import UserError
from rlhfkit.generation import Samples, encode_prompts, without_autograd
from rlhfkit.models.loading import (
    save_dtype,
)
from rlhfkit.models.lora import save_model, save_scalar_model
from rlhfkit.models.policy import response_logprobs, response_values, scored_responses
from rlhfkit.rewards.combine import RewardBatch, Rewards
from rlhfkit.storage import save_pretrained_atomic
from rlhfkit.train.checkpoint import Checkpoints
from rlhfkit.train.common import RunOptions, check_finite, make_optimizer, optimizer_step, progress, shuffled_batches
from rlhfkit.train.distributed import Parallel
from rlhfkit.train.ppo_data import PromptStream
from rlhfkit.train.ppo_rewards import (
    RewardOptions,
    judges_record,
    load_reward_model,
    make_judges,
    make_rewards,
)
from rlhfkit.train.ppo_setup import load, read_inputs
from rlhfkit.train.rollout import Rollout, gather_rollout, pad_responses, rollout_metrics
from rlhfkit.train.run import Run, start_run

ADVANTAGES = ("gae", "rloo", "grpo")
LOSS_TYPES = ("bnpo", "grpo", "dr_grpo", "dapo", "cispo")  # TRL's GRPOConfig.loss_type names (losses.aggregate_loss)
TOKEN_MEAN_LOSSES = ("bnpo", "dapo", "cispo")  # averaged over the minibatch's tokens (the others: over responses)
IMPORTANCE_LEVELS = ("token", "sequence")      # TRL's GRPOConfig.importance_sampling_level
SCALE_REWARDS = ("group", "batch", "none")  # TRL's GRPOConfig.scale_rewards
KL_IN = ("reward", "loss")


@dataclass
class PPOConfig(RunOptions, DataOptions, EngineOptions, RewardOptions):
    policy: str | None = required("SFT policy directory: the PPO start and the frozen reference")
    reference: str | None = option(None, "frozen reference of the KL penalty (default: --policy; the online loop "
                                   "starts from the last round's policy and keeps the SFT one here)")
    judge: list[str] = option([], "judges, comma-separated, logged but never trained on: a reward model directory, "
                              "a reward function, or a registered name (world:gold)")
    prompts: str | None = required("prompts JSONL (field `prompt`)")
    value_model: str | None = option(None, "value model start (default: the reward model, as InstructGPT)")
    world: str | None = option(None, "toy world: also log its gold reward (the judge world:gold; never trained on)")
    steps: int = option(100, "PPO iterations (one batch of rollouts each)")
    batch_size: int = option(64, "episodes (prompts) per iteration")
    minibatch_size: int = option(32, "episodes per gradient step")
    ppo_epochs: int = option(4, "passes over each batch of rollouts")
    lr: float = option(3e-5, "learning rate of policy and value model (toy-world scale)")
    adam_eps: float = option(1e-5, "Adam epsilon")
    grad_clip: float = option(1.0, "gradient norm clipping")
    kl_coef: float = option(0.05, "β: weight of the per-token KL penalty to the SFT policy")
    adaptive_kl_target: float | None = option(None, "adaptive KL controller: the KL per episode β is steered to "
                                              "(Ziegler et al. 2019; not early stopping: every epoch runs)")
    kl_horizon: int = option(10000, "adaptive KL controller: horizon in episodes")
    clip_range: float = option(0.2, "ε of PPO-Clip")
    clip_range_value: float = option(0.2, "clip range of the value regression around the old values")
    vf_coef: float = option(0.1, "weight of the value loss")
    gamma: float = option(1.0, "discount γ")
    lam: float = option(0.95, "GAE λ")
    advantage: str = option("gae", "advantage estimator: gae (PPO with a value model), rloo (REINFORCE "
                            "leave-one-out, no value model; Ahmadian et al. 2024) or grpo (group-normalized reward, "
                            "no value model; Shao et al. 2024)")
    rloo_k: int = option(4, "RLOO: samples per prompt (a batch is batch_size/k prompts x k samples)")
    group_size: int = option(4, "GRPO: samples per prompt (TRL's num_generations)")
    scale_rewards: str = option("group", "GRPO: divide by the std of the group (the paper), of the batch, or none "
                                "(Dr. GRPO, Liu et al. 2025)")
    loss_type: str | None = option(None, "how token losses are averaged: bnpo (token mean over the minibatch), "
                                   "grpo (per response, then over responses; Shao et al.), dr_grpo (a constant "
                                   "normalizer, Liu et al. 2025), dapo (token sum over the global batch's tokens, "
                                   "Yu et al. 2025: bnpo's number here) or cispo (dapo's average of CISPO's clipped-"
                                   "weight REINFORCE terms, MiniMax-M1); default grpo for GRPO, bnpo otherwise")
    kl_in: str | None = option(None, "where the KL to the reference goes: reward (−β·log ratio per token, as "
                               "InstructGPT) or loss (β·k3 in the loss, as GRPO); default loss for GRPO, else reward")
    whiten_rewards: bool = option(False, "whiten per-token rewards before GAE")
    temperature: float = option(1.0, "sampling temperature; log-probs are scored with the same logits / T")
    max_new_tokens: int = option(32, "response length limit")
    max_prompt_length: int | None = option(None, "prompt tokens kept (from the right, a leading BOS kept; default "
                                           "128, or what the model's positions leave after max_new_tokens)")
    missing_eos_penalty: float | None = option(-1.0, "terminal reward of a response with no EOS (none: the RM's)")
    ptx_data: str | None = option(None, "PPO-ptx: JSONL of pretraining text (`text`) or demonstrations")
    ptx_coef: float = option(0.0, "PPO-ptx: γ, weight of the LM loss on ptx data (InstructGPT: 27.8)")
    ptx_batch_size: int = option(16, "PPO-ptx: sequences per gradient step")
    value_warmup: int = option(0, "first N iterations fit only the value model; the policy waits for a value "
                               "model whose advantages are not noise (OpenRLHF's freezing_actor_steps)")
    save_every: int = option(0, "save a checkpoint every N iterations (0: only the final policy)")
    log_every: int = option(1, "log every N iterations")
    # The loss variants (losses.py "loss variants"; TRL GRPOConfig's names in brackets), one block.
    importance_level: str = option("token", "importance ratio of each token's loss: token (π_θ/π_θk of the token, "
                                   "PPO) or sequence (GSPO, Zheng et al. 2025: exp(mean_t log π_θ/π_θk) of its "
                                   "response, the GSPO-token form) [importance_sampling_level]")
    clip_range_high: float | None = option(None, "ε_high: the ratio's upper clip 1 + ε_high, the lower staying "
                                           "1 − --clip-range (DAPO's clip-higher, Yu et al. 2025: 0.28); with "
                                           "--loss-type cispo the cap of the IS weight; default --clip-range "
                                           "[epsilon_high; for cispo TRL's is 1 + ε_high]")
    overlong_cache: int = option(0, "DAPO's soft overlong punishment: a reward going from 0 to −1 over the last N "
                                 "tokens up to --overlong-max-length, −1 beyond (Yu et al. 2025, eq. 13; 0: off) "
                                 "[soft_punish_cache]")
    overlong_max_length: int | None = option(None, "L_max of the soft overlong punishment (default --max-new-tokens) "
                                             "[max_completion_len]")

    def check(self) -> None:
        super().check()
        check_at_least(self, 1, "steps", "batch_size", "minibatch_size", "ppo_epochs", "max_new_tokens",
                       "max_prompt_length", "ptx_batch_size", "kl_horizon", "log_every")
        check_at_least(self, 0, "value_warmup", "save_every")
        check_positive(self, "lr", "adam_eps")
        if self.minibatch_size > self.batch_size:
            raise UserError("config key 'minibatch_size' must not exceed 'batch_size'")
        if self.temperature <= 0:
            raise UserError("config key 'temperature' must be > 0 (PPO scores samples with logits / T)")
        if self.adaptive_kl_target is not None and self.adaptive_kl_target <= 0:
            raise UserError("config key 'adaptive_kl_target' must be > 0")
        if self.ptx_coef > 0 and not self.ptx_data:
            raise UserError("config key 'ptx_coef' > 0 needs --ptx-data")
        if self.advantage not in ADVANTAGES:
            raise UserError(f"config key 'advantage': unknown estimator {self.advantage!r} ({', '.join(ADVANTAGES)})")
        for key, allowed in (("loss_type", LOSS_TYPES), ("scale_rewards", SCALE_REWARDS), ("kl_in", KL_IN)):
            if getattr(self, key) not in (None, *allowed):
                raise UserError(f"config key '{key}': {getattr(self, key)!r} is not one of {', '.join(allowed)}")
        self.check_rewards()
        if self.advantage == "gae" and not (self.reward or self.value_model):
            raise UserError("config key 'value_model': PPO with GAE needs a value model start (--value-model, or "
                            "--reward: the value model starts from the reward model)")
        if self.advantage != "gae":
            name, key = ("RLOO", "rloo_k") if self.advantage == "rloo" else ("GRPO", "group_size")
            k = samples_per_prompt(self)
            if k < 2 or self.batch_size % k:
                raise UserError(f"config key '{key}' must be at least 2 and divide 'batch_size' ({name} compares "
                                f"k >= 2 samples of each prompt in the batch)")
            if self.value_model:
                raise UserError(f"config key 'value_model': {name} has no value model (drop --value-model)")
            if self.value_warmup:
                raise UserError(f"config key 'value_warmup': {name} has no value model to warm up")
        # With N processes each generates batch_size/N episodes and updates on minibatch_size/N of each minibatch.
        n = self.num_processes
        if n > 1 and ((self.batch_size // samples_per_prompt(self)) % n or self.minibatch_size % n):
            raise UserError(f"config keys 'batch_size' (in prompts) and 'minibatch_size' must be multiples of "
                            f"--num-processes {n}")
        check_engine(self.rollout_engine, self.vllm_gpu_memory)
        if max(n, int(os.environ.get("WORLD_SIZE", "1"))) > 1 and self.rollout_engine == "vllm":
            raise UserError("--rollout-engine vllm runs with one process (--num-processes 1): with several, each "
                            "would hold its own vLLM copy of the policy, not supported yet")
        if n > 1 and self.value_warmup:
            raise UserError("config key 'value_warmup' is not supported with several processes (DDP needs every "
                            "trained parameter in every backward pass)")
        self.check_loss_variant()

    def check_loss_variant(self) -> None:
        if self.importance_level not in IMPORTANCE_LEVELS:
            raise UserError(f"config key 'importance_level': {self.importance_level!r} is not one of "
                            f"{', '.join(IMPORTANCE_LEVELS)}")
        if self.clip_range_high is not None:
            check_positive(self, "clip_range_high")
        check_at_least(self, 0, "overlong_cache")
        check_at_least(self, 1, "overlong_max_length")
        if self.overlong_max_length is not None and not self.overlong_cache:
            raise UserError("config key 'overlong_max_length' needs --overlong-cache (the soft punishment's length)")
        if self.overlong_cache > (self.overlong_max_length or self.max_new_tokens):
            raise UserError("config key 'overlong_cache' must not exceed 'overlong_max_length' (default: "
                            "'max_new_tokens')")


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


# -------------------------------------------------------------------------------------- the algorithm

def collect(engine, tokenizer, prompts: list[str], cfg: PPOConfig, generator, parallel: Parallel | None = None
            ) -> Samples:
    """1. Sample one response per prompt from the current policy by the rollout engine (RLOO, GRPO: k, side by
    side). With N processes (hf engines): this process's rows of the global batch, as a one-process run samples
    them (see the module docstring)."""
    prompts = [p for p in prompts for _ in range(samples_per_prompt(cfg))]
    options = dict(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, generator=generator,
                   max_prompt_length=cfg.max_prompt_length)
    if parallel is None or parallel.world_size == 1:
        return engine.generate(prompts, **options)
    rows, steps = parallel.shard_range(len(prompts)), []
    width = encode_prompts(tokenizer, prompts, cfg.max_prompt_length)[0].shape[1]

    def agree_steps(mine: int) -> int:  # the longest decoding loop of all processes
        steps.append(int(parallel.highest({"steps": mine})["steps"]))
        return steps[0]

    samples = engine.generate([prompts[i] for i in rows], prompt_width=width,
                       rows=(rows.start, len(prompts)), agree_steps=agree_steps, **options)
    return pad_responses(samples, steps[0], tokenizer.pad_token_id)


@without_autograd
def measure(samples: Samples, policy, reference, value_model, reward, cfg: PPOConfig,
            batch: RewardBatch | None = None) -> Rollout:
    """2. log π_θk, log π_SFT (same temperature as sampling), V_φk and r(x, y) of the sampled responses.

    `reward`: the run's `Rewards` (or a bare reward model: its score alone); `batch`: the responses' dataset rows,
    for reward functions (default: no fields, rows named by position)."""
    ids, attn, width = samples.input_ids, samples.attention_mask, samples.prompt_ids.shape[1]
    mask = samples.response_mask
    logp, entropy = scored_responses(policy, ids, attn, width, cfg.temperature)  # in chunks: no [B, R, V] held
    ref_logp, _ = scored_responses(reference, ids, attn, width, cfg.temperature)
    if value_model is not None:
        values = response_values(value_model, ids, attn, width)
    else:  # RLOO, GRPO: no value model
        values = torch.zeros_like(logp)
    if not isinstance(reward, Rewards):
        reward = Rewards(reward)
    batch = batch or RewardBatch(samples, [{}] * len(samples.texts), [f"row {i + 1}" for i in range(len(ids))])
    rm_score, columns = reward.score(batch)  # the RM reads the last real token: the EOS of a finished response
    terminal = rm_score
    if cfg.missing_eos_penalty is not None:
        terminal = torch.where(samples.finished, rm_score, torch.full_like(rm_score, cfg.missing_eos_penalty))
    if cfg.overlong_cache:  # DAPO's soft overlong punishment, added to r(x, y) (and logged as reward/overlong)
        columns = {**columns, "overlong": L.soft_overlong_punishment(
            mask.sum(-1), cfg.overlong_max_length or cfg.max_new_tokens, cfg.overlong_cache).to(terminal)}
        terminal = terminal + columns["overlong"]
    return Rollout(samples, logp * mask, ref_logp * mask, values * mask, rm_score, terminal,
                   L.masked_mean(entropy, mask).item(), columns)


def advantages(rollout: Rollout, kl_coef: float, cfg: PPOConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """3–4. Per-token rewards, GAE advantages (whitened) and returns; RLOO: leave-one-out advantages, GRPO:
    group-normalized ones, no returns. With --kl-in loss the rewards hold no KL term (the loss does)."""
    beta = 0.0 if kl_in_loss(cfg) else kl_coef
    rewards = L.per_token_rewards(rollout.terminal_reward, rollout.logp, rollout.ref_logp, rollout.mask, beta)
    if cfg.advantage != "gae":  # the response is one action: the same Â on each of its tokens
        sequence_reward, k = rewards.sum(-1), samples_per_prompt(cfg)
        if cfg.advantage == "rloo":  # Â = R(x, y) − b(x, y)
            adv = sequence_reward - L.rloo_baseline(sequence_reward, k)
        else:  # Â = (R − mean R) / (std R + ε) over the prompt's k samples
            adv = L.grpo_advantages(sequence_reward, k, cfg.scale_rewards)
        return rewards, adv[:, None] * rollout.mask, None
    if cfg.whiten_rewards:
        rewards = L.whiten(rewards, rollout.mask, shift_mean=False)
    adv, returns = L.gae(rewards, rollout.values, rollout.mask, cfg.gamma, cfg.lam)
    return rewards, L.whiten(adv, rollout.mask), returns


def surrogate_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor, adv: torch.Tensor,
                mask: torch.Tensor, cfg: PPOConfig, kl_coef: float) -> torch.Tensor:
    """PPO-Clip's token terms −min(ρA, clip(ρ, 1±ε)A) (or a variant's: `policy_terms`), plus β·k3(π_θ, π_ref) with
    --kl-in loss (GRPO: Shao et al. 2024, eq. 3–4), averaged as --loss-type says (`losses.aggregate_loss`; bnpo is
    PPO's token mean)."""
    terms = policy_terms(logp, old_logp, adv, mask, cfg)
    if kl_in_loss(cfg):
        terms = terms + kl_coef * L.kl_k3(logp, ref_logp)
    return L.aggregate_loss(terms, mask, loss_type(cfg), cfg.max_new_tokens)


def policy_terms(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
                 cfg: PPOConfig) -> torch.Tensor:
    """The policy's per-token loss terms (losses.py "loss variants"): PPO-Clip's, clipped to [1 − ε, 1 + ε_high]
    (--clip-range-high: DAPO's clip-higher), or CISPO's −sg[min(ρ, 1 + ε_high)]·Â·log π_θ (--loss-type cispo); ρ
    the token's ratio, or GSPO's length-normalized ratio of its response (--importance-level sequence)."""
    log_ratio = L.importance_log_ratio(logp, old_logp, mask, cfg.importance_level)
    high = cfg.clip_range if cfg.clip_range_high is None else cfg.clip_range_high
    if loss_type(cfg) == "cispo":
        return L.cispo_terms(log_ratio, logp, adv, high)
    return L.clip_higher_terms(log_ratio, adv, cfg.clip_range, high)


def ppo_update(policy, value_model, optimizer, rollout: Rollout, adv: torch.Tensor, returns: torch.Tensor,
               cfg: PPOConfig, generator: torch.Generator, ptx=None, parallel: Parallel | None = None,
               kl_coef: float | None = None) -> list[dict]:
    """5. K epochs over shuffled minibatches of the rollout; returns one stats dict per minibatch (N processes:
    each takes its share of every minibatch; the stats are the whole minibatch's). `kl_coef`: β of the KL loss
    term (--kl-in loss; default --kl-coef)."""
    parallel = parallel or Parallel(rollout.mask.device)
    s, stats = rollout.samples, []
    ids, attn, mask, width = s.input_ids, s.attention_mask, rollout.mask, rollout.prompt_width
    trained = [p for g in optimizer.param_groups for p in g["params"]]
    for _ in range(cfg.ppo_epochs):
        for minibatch in shuffled_batches(len(ids), cfg.minibatch_size, generator):
            idx = parallel.shard(minibatch)
            logp, logits = response_logprobs(policy, ids[idx], attn[idx], width, cfg.temperature)
            old_logp, m = rollout.logp[idx], mask[idx]
            policy_loss = surrogate_loss(logp, old_logp, rollout.ref_logp[idx], adv[idx], m, cfg,
                                         cfg.kl_coef if kl_coef is None else kl_coef)
            loss, value_loss = policy_loss, None
            if value_model is not None:  # RLOO and GRPO have no value model, hence no value term
                values = response_values(value_model, ids[idx], attn[idx], width)
                value_loss = L.clipped_value_loss(values, rollout.values[idx], returns[idx], m, cfg.clip_range_value)
                loss = policy_loss + cfg.vf_coef * value_loss
            check_finite(loss, len(stats), "PPO loss")
            ptx_loss, ptx_tokens = ptx.loss(policy, parallel) if ptx is not None else (None, 0)
            if ptx_loss is not None:
                check_finite(ptx_loss, len(stats), "PPO-ptx loss")
            tokens = m.sum()  # the loss is a mean over the global minibatch's response tokens (bnpo)
            units = tokens if loss_type(cfg) in TOKEN_MEAN_LOSSES else torch.tensor(float(len(idx)))  # else responses
            parallel.backward(loss, units, *([(cfg.ptx_coef * ptx_loss, ptx_tokens)] if ptx_loss is not None else []))
            optimizer_step(optimizer, None, trained, cfg.grad_clip)
            with torch.no_grad():
                ratio = torch.exp(logp - old_logp)[m.bool()]
                stat = parallel.token_mean({
                    "policy_loss": policy_loss.item(),
                    **({"value_loss": value_loss.item()} if value_loss is not None else {}),
                    "clipfrac": L.clip_fraction(logp, old_logp, m, cfg.clip_range).item(),
                    "approx_kl": L.masked_mean(L.kl_k2(logp, old_logp), m).item(),
                    "entropy": L.entropy(logits, m, cfg.temperature).item()}, tokens)
                stat |= parallel.lowest({"ratio_min": ratio.min().item()})
                stat |= parallel.highest({"ratio_max": ratio.max().item()})
                if ptx_loss is not None:
                    stat |= parallel.token_mean({"ptx_loss": ptx_loss.item()}, ptx_tokens)
            stats.append(stat)
    return stats


# ---------------------------------------------------------------------------------------- around it

def loss_type(cfg: PPOConfig) -> str:
    """--loss-type, by default the estimator's paper's: grpo for GRPO, the token mean (bnpo) for PPO and RLOO."""
    return cfg.loss_type or ("grpo" if cfg.advantage == "grpo" else "bnpo")


def kl_in_loss(cfg: PPOConfig) -> bool:
    """--kl-in, by default the estimator's paper's: a loss term for GRPO, a per-token reward for PPO and RLOO."""
    return (cfg.kl_in or ("loss" if cfg.advantage == "grpo" else "reward")) == "loss"


def samples_per_prompt(cfg: PPOConfig) -> int:
    """Responses drawn per prompt in one batch: k for RLOO's leave-one-out baseline and GRPO's group, else 1."""
    return {"rloo": cfg.rloo_k, "grpo": cfg.group_size}.get(cfg.advantage, 1)


def train_ppo(cfg: PPOConfig) -> dict:
    return start_run(cfg, read_inputs, load, ppo_loop)


def ppo_loop(run: Run) -> dict:
    cfg, parallel, generator, inputs = run.cfg, run.parallel, run.generator, run.inputs
    tokenizer, policy, reference, value_model, reward_model, ptx = run.models
    train_policy, train_value_model, reference, reward_model, optimizer = wrap_models(run)
    rewards_of = make_rewards(cfg, reward_model, tokenizer)  # r(x, y): the RM, the reward functions, their sum
    judges = make_judges(inputs.judges, lambda path: load_reward_model(path, tokenizer, run.device))
    policy_params = [p for p in policy.parameters() if p.requires_grad]  # what the value warm-up freezes
    kl_control = KLController(cfg.kl_coef, cfg.adaptive_kl_target, cfg.kl_horizon)
    stream = PromptStream(list(range(len(inputs.prompts))), generator)  # row numbers, drawn as the prompts were
    sampler = torch.Generator(device=run.device).manual_seed(cfg.seed)  # the same in every process (docstring)
    checkpoints = Checkpoints(run.dir, parallel, cfg.checkpoint_every, policy=policy, optimizer=optimizer,
                              kl_control=kl_control, stream=stream, generator=generator, sampler=sampler,
                              **({"value_model": value_model} if value_model is not None else {}))
    first = checkpoints.restore() if cfg.resume else 0
    engine = make_engine(cfg.rollout_engine, policy, tokenizer, max_len=cfg.max_prompt_length + cfg.max_new_tokens,
                         gpu_memory=cfg.vllm_gpu_memory, seed=cfg.seed)  # after restore: it serves those weights
    bar, record = progress(cfg.steps, "ppo"), {}
    bar.update(first)
    for step in range(first + 1, cfg.steps + 1):
        t0 = time.time()
        for p in policy_params:
            p.requires_grad_(step > cfg.value_warmup)  # during the warm-up only the value model learns
        rows = stream.next(cfg.batch_size // samples_per_prompt(cfg))  # the global batch, in every process
        prompts = [inputs.prompts[i] for i in rows]
        batch_rows = [i for i in rows for _ in range(samples_per_prompt(cfg))]  # each response's row, as collect
        with parallel.inference():  # inference mode (FSDP: no_grad)
            with parallel.whole(policy):  # FSDP: gathered once for the decoding loop, not once per token
                samples = collect(engine, tokenizer, prompts, cfg, sampler, parallel)                     # 1
            t1 = time.time()
            mine = [batch_rows[i] for i in parallel.shard_range(len(batch_rows))]  # this process's responses
            rollout = gather_rollout(measure(samples, policy, reference, value_model, rewards_of, cfg,
                                             inputs.rows.batch(samples, mine)), parallel)                # 2
        rewards, adv, returns = advantages(rollout, kl_control.value, cfg)                                # 3, 4
        t2 = time.time()
        updates = ppo_update(train_policy, train_value_model, optimizer, rollout, adv, returns, cfg, generator,
                             ptx, parallel, kl_control.value)                                           # 5
        t3 = time.time()
        sync_s = engine.sync(policy)  # the updated weights into the engine (vllm; hf samples the policy itself)
        record = rollout_metrics(rollout, rewards, kl_control.value) | mean_stats(updates) | {
            "episodes": step * cfg.batch_size, "generation_s": t1 - t0, "scoring_s": t2 - t1,
            "update_s": t3 - t2, "reward_fn_s": rewards_of.take_time(),
            **({"sync_s": sync_s} if engine.name == "vllm" else {})}
        record |= judges_record(judges, rollout.samples, inputs.rows, batch_rows)
        kl_control.update(record["kl"], cfg.batch_size)
        log_step(run, step, record, bar)
        if cfg.save_every and step % cfg.save_every == 0 and step < cfg.steps:
            snapshot = parallel.gather(policy)  # FSDP: the full weights, in process 0
            if parallel.is_main:
                save_pretrained_atomic(run.dir.path / "checkpoints" / f"step-{step}", snapshot, tokenizer)
        if step < cfg.steps:  # the last step's state is the saved model
            checkpoints.maybe_save(step)
    bar.close()
    engine.close()  # (an error before this: the served copy is removed at exit, TemporaryDirectory)
    return finish(run, parallel.gather(policy), parallel.gather(value_model) if value_model is not None else None,
                  record)


def wrap_models(run: Run):
    """The trained models as the update calls them (DDP-wrapped with N processes; FSDP shards every model in
    place), the frozen ones as sampling and scoring call them, and one optimizer of policy and value model."""
    cfg, parallel, (_, policy, reference, value_model, reward_model, ptx) = run.cfg, run.parallel, run.models
    if ptx is not None:
        ptx.generator = run.generator  # PPO-ptx's batches: from the run's generator, the same in every process
    train_policy = parallel.wrap(policy)
    train_value_model = parallel.wrap(value_model) if value_model is not None else None
    reference = parallel.frozen(reference)
    if reward_model is not None:
        reward_model.model = parallel.frozen(reward_model.model)
    trained = [policy] + ([value_model] if value_model is not None else [])
    optimizer = make_optimizer([p for model in trained for p in model.parameters()], cfg.lr, eps=cfg.adam_eps)
    return train_policy, train_value_model, reference, reward_model, optimizer


def log_step(run: Run, step: int, record: dict, bar) -> None:
    if step % run.cfg.log_every == 0 or step == run.cfg.steps:
        run.dir.log(step, **record)
    bar.update(1)
    bar.set_postfix(rm=f"{record['rm_score']:.2f}", kl=f"{record['kl']:.2f}",
                    **({"gold": f"{record['gold']:.2f}"} if "gold" in record else {}))


def finish(run: Run, policy, value_model, record: dict) -> dict:
    """Process 0 saves the policy and the value model (FSDP: gathered whole) and reports."""
    if not run.parallel.is_main:
        return record
    cfg, tokenizer, path = run.cfg, run.models[0], run.dir.path
    save_model(path, policy, tokenizer, cfg.lora_save, save_dtype(cfg.dtype, cfg.policy))
    if value_model is not None:
        save_scalar_model(path / "value", value_model, None, cfg.lora_save)
    run.dir.close()
    gold = f", gold {record['gold']:.3f}" if "gold" in record else ""
    print(f"ppo: {cfg.steps} iterations, {cfg.steps * cfg.batch_size} episodes; last batch: RM score "
          f"{record['rm_score']:.3f}, KL {record['kl']:.3f}{gold} -> {path}")
    return record


# How each update statistic is reduced over the minibatches of an iteration: these by their extreme, every other
# one by its mean.
OVER_MINIBATCHES = {"ratio_min": min, "ratio_max": max}


def mean_stats(stats: list[dict]) -> dict:
    keys = stats[0].keys()
    out = {k: float(np.mean([s[k] for s in stats])) for k in keys if k not in OVER_MINIBATCHES}
    out |= {k: reduce(s[k] for s in stats) for k, reduce in OVER_MINIBATCHES.items() if k in keys}
    return out
