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
(`--num-generations`), every token of a response gets Â = (R − mean R) / (std R + ε) over its prompt's k samples, and —
as in the paper — the KL to the reference is a term β·k3 of the loss (`--kl-in loss`) instead of a per-token reward
(`--kl-in reward`, as PPO), each response's token losses averaged before the mean over responses
(`--loss-type grpo`). Dr. GRPO (Liu et al. 2025) is `--scale-rewards none --loss-type dr_grpo`: no division by the
std, a constant normalizer. The names are TRL's GRPOConfig's; bench/peer_grpo_check.py checks the numbers.

The loss variants (losses.py; with any --advantage) change step 5's policy terms: DAPO (Yu et al. 2025) is
`--loss-type dapo --clip-range-high 0.28 --overlong-cache N` (a token mean over the global minibatch, an upper clip
1 + ε_high, and a soft punishment of long responses added to r(x, y) in step 2), GSPO (Zheng et al. 2025)
`--importance-level sequence` (one length-normalized ratio per response), CISPO (MiniMax-M1) `--loss-type cispo`
(REINFORCE weighted by the clipped, stopped ratio); bench/peer_loss_check.py checks them against TRL 1.16.
Where the engine is not the trained model (vLLM, async rollouts) step 5 weighs each token's policy term by
π_θk/π_engine from the engine's own log-probs, truncated or masked (`--engine-is tis|mis`; train/engine_is.py).
With `--async-rollouts K` step 1 was done ahead, by a snapshot of the policy at most K updates old
(train/async_rollouts.py). With `--environment` step 1 rolls out multi-turn trajectories with tool replies, and
every step reads only the policy's tokens (`Samples.model_mask`; 4 is turn-level GAE: train/trajectory.py). Steps
2 and 5 run on packed rows by default (`--packing`, models/packing.py), and 5 in micro-batches of at most
`--max-tokens-per-batch` tokens (train/micro.py): the same numbers as padded whole minibatches, to float rounding.

r(x, y) is a reward model, reward functions (`--reward-fn`, TRL's convention: `rlhfkit/rewards`), or their weighted
sum; judges (`--judge`, e.g. the toy world's gold reward) are logged, never trained on (train/ppo_rewards.py).

With N processes (--num-processes) PPO takes the steps of one process (docs/design.md §4; tested in
tests/train/test_distributed.py). Every process holds the same generators, so each draws the same prompts, minibatch
orders and PPO-ptx batches. 1: each generates its contiguous share of the global batch's rows
(`rollout.generate_share`), left-padded to the global prompt width, with the sampling noise of the whole global
batch drawn from the same sampler (generation.py `next_token`); the processes agree on the decoding steps, so the
samplers stay aligned. 2: each measures its rows; the rollout is then gathered to every process, so 3–4 (whitening,
GAE, RLOO) see the global batch. 5: each global minibatch is split with `Parallel.shard`, and each term of a share's
loss is weighted in `Parallel.backward` by what it is a mean over: the policy term by its response tokens (bnpo) or
its responses (grpo, dr_grpo), the value term by its response tokens, PPO-ptx's by its text tokens; each logged loss
is reduced over processes by the same weights, the other statistics are token means (minimum, maximum) over the
global minibatch.
"""

from __future__ import annotations

import time
from functools import partial

import torch

from rlhfkit import losses as L
from rlhfkit.engines.core import make_engine
from rlhfkit.engines.multiturn import trajectory_metrics
from rlhfkit.generation import Samples, without_autograd
from rlhfkit.models.policy import response_logprobs, response_values, scored_responses
from rlhfkit.rewards.combine import RewardBatch, Rewards
from rlhfkit.runtime.optim import optimizer_step, progress
from rlhfkit.train.async_rollouts import AsyncRollouts
from rlhfkit.train.checkpoint import Checkpoints
from rlhfkit.train.common import check_finite, shuffled_batches
from rlhfkit.train.configs import TOKEN_MEAN_LOSSES, PPOConfig, samples_per_prompt
from rlhfkit.train.distributed import Parallel
from rlhfkit.train.engine_is import engine_metrics, engine_weights
from rlhfkit.train.kl_control import KLController
from rlhfkit.train.micro import ppo_parts
from rlhfkit.train.ppo_data import PromptStream
from rlhfkit.train.ppo_rewards import judges_record, load_reward_model, make_judges, make_rewards
from rlhfkit.train.ppo_setup import PPOModels, finish, load, log_step, read_inputs, save_snapshot, wrap_models
from rlhfkit.train.rollout import Rollout, gather_rollout, generate_share, mean_stats, rollout_metrics
from rlhfkit.train.run import Run, start_run
from rlhfkit.train.trajectory import collect_trajectories, trajectory_budget, with_environments

# -------------------------------------------------------------------------------------- the algorithm

def collect(engine, tokenizer, prompts: list[str], cfg: PPOConfig, generator, parallel: Parallel | None = None,
            ignore_eos: bool = False) -> Samples:
    """1. Sample one response per prompt from the current policy by the rollout engine (RLOO, GRPO: k, side by
    side). With N processes (hf engines): this process's rows of the global batch, as a one-process run samples
    them (see the module docstring). `ignore_eos`: every response to full length (`rlhf bench ppo`)."""
    prompts = [p for p in prompts for _ in range(samples_per_prompt(cfg))]
    options = dict(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, generator=generator,
                   max_prompt_length=cfg.max_prompt_length, **({"ignore_eos": True} if ignore_eos else {}))
    if parallel is None or parallel.world_size == 1:
        return engine.generate(prompts, **options)
    return generate_share(engine, tokenizer, prompts, parallel, **options)


@without_autograd
def measure(samples: Samples, policy, reference, value_model, reward, cfg: PPOConfig,
            batch: RewardBatch | None = None) -> Rollout:
    """2. log π_θk, log π_SFT (same temperature as sampling), V_φk and r(x, y) of the sampled responses.

    `reward`: the run's `Rewards` (or a bare reward model: its score alone); `batch`: the responses' dataset rows,
    for reward functions (default: no fields, rows named by position)."""
    ids, attn, width = samples.input_ids, samples.attention_mask, samples.prompt_ids.shape[1]
    mask = samples.model_mask  # the policy's tokens (one turn: the response mask; train/trajectory.py)
    logp, entropy = scored_responses(policy, ids, attn, width, cfg.temperature, cfg.packing)  # no [B, R, V] held
    ref_logp, _ = scored_responses(reference, ids, attn, width, cfg.temperature, cfg.packing)
    if value_model is not None:
        values = response_values(value_model, ids, attn, width, cfg.packing)
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
                   L.masked_mean(entropy, mask).item(), columns, getattr(samples, "turn_rewards", None))


def advantages(rollout: Rollout, kl_coef: float, cfg: PPOConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """3–4. Per-token rewards, GAE advantages (whitened) and returns; RLOO: leave-one-out advantages, GRPO:
    group-normalized ones, no returns. With --kl-in loss the rewards hold no KL term (the loss does)."""
    beta = 0.0 if kl_in_loss(cfg) else kl_coef
    rewards = L.per_token_rewards(rollout.terminal_reward, rollout.logp, rollout.ref_logp, rollout.mask, beta)
    if rollout.turn_rewards is not None:  # multi-turn: the environment's rewards, at the end of their turns
        rewards = rewards + rollout.turn_rewards
    if cfg.advantage != "gae":  # the response is one action: the same Â on each of its tokens
        sequence_reward, k = rewards.sum(-1), samples_per_prompt(cfg)
        if cfg.advantage == "rloo":  # Â = R(x, y) − b(x, y)
            adv = sequence_reward - L.rloo_baseline(sequence_reward, k)
        else:  # Â = (R − mean R) / (std R + ε) over the prompt's k samples
            adv = L.grpo_advantages(sequence_reward, k, cfg.scale_rewards)
        return rewards, adv[:, None] * rollout.mask, None
    if cfg.whiten_rewards:
        rewards = L.whiten(rewards, rollout.mask, shift_mean=False)
    gae = L.gae if rollout.turn_rewards is None else L.turn_gae  # multi-turn: environment tokens skipped
    adv, returns = gae(rewards, rollout.values, rollout.mask, cfg.gamma, cfg.lam)
    return rewards, L.whiten(adv, rollout.mask), returns


def surrogate_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor, adv: torch.Tensor,
                mask: torch.Tensor, cfg: PPOConfig, kl_coef: float, engine_weight: torch.Tensor | None = None
                ) -> torch.Tensor:
    """PPO-Clip's token terms −min(ρA, clip(ρ, 1±ε)A) (or a variant's: `policy_terms`), each times the engine
    importance weight w_t = π_θk/π_engine (a constant; `engine_is.engine_weights`, None: 1), plus β·k3(π_θ, π_ref) with
    --kl-in loss (GRPO: Shao et al. 2024, eq. 3–4; none at β = 0), averaged as --loss-type says
    (`losses.aggregate_loss`; bnpo is PPO's token mean). k3 is 0 on padding, masked before its exponential (the
    rollout's log-probs are stored masked, the fresh ones are not)."""
    terms = policy_terms(logp, old_logp, adv, mask, cfg)
    if engine_weight is not None:
        terms = terms * engine_weight.detach()
    if kl_in_loss(cfg) and kl_coef != 0:
        terms = terms + kl_coef * L.kl_k3(logp, ref_logp, mask)
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
               cfg: PPOConfig, kl_coef: float, generator: torch.Generator, ptx=None, parallel: Parallel | None = None,
               iteration: int = 1) -> list[dict]:
    """5. K epochs over shuffled minibatches of the rollout; returns one stats dict per minibatch (N processes:
    each takes its share of every minibatch; the stats are the whole minibatch's). `kl_coef`: β of the KL loss
    term (--kl-in loss), the KL controller's value; `iteration`: the run's iteration (1 = the first), for errors.

    Each term of the loss is weighted across processes by what it is a mean over (`Parallel.backward`): the
    policy loss by the minibatch's response tokens (bnpo) or responses (grpo, dr_grpo), the value loss by its
    response tokens, PPO-ptx's by its text tokens; each logged loss is reduced the same way."""
    parallel = parallel or Parallel(rollout.mask.device)
    s, stats = rollout.samples, []
    ids, attn, mask, width = s.input_ids, s.attention_mask, rollout.mask, rollout.prompt_width
    trained = [p for g in optimizer.param_groups for p in g["params"]]
    weight = engine_weights(rollout, cfg)  # π_θk/π_engine per token, or None: the trained model sampled itself
    for epoch in range(cfg.ppo_epochs):
        for n, idx, part in ppo_parts(shuffled_batches(len(ids), cfg.minibatch_size, generator), parallel, mask, attn,
                                      cfg.max_tokens_per_batch, cfg.packing, loss_type(cfg) in TOKEN_MEAN_LOSSES,
                                      value_model is not None):  # micro-batches (--max-tokens-per-batch), or whole
            logp, logits = response_logprobs(policy, ids[idx], attn[idx], width, cfg.temperature, cfg.packing)
            old_logp, ref_logp, a, m = rollout.logp[idx], rollout.ref_logp[idx], adv[idx], mask[idx]
            policy_loss = surrogate_loss(logp, old_logp, ref_logp, a, m, cfg, kl_coef,
                                         None if weight is None else weight[idx])
            updates = (iteration - 1) * cfg.ppo_epochs * -(-len(ids) // cfg.minibatch_size) + len(stats)
            where = f"iteration {iteration}, epoch {epoch + 1}, minibatch {n + 1}"
            check_finite(policy_loss, updates, "the policy loss", where,
                         {"log π_θ": logp, "log π_θk": old_logp, "log π_ref": ref_logp, "the advantages": a}, m)
            terms, value_loss = [], None
            tokens = m.sum()  # response tokens of this process's share
            if value_model is not None:  # RLOO and GRPO have no value model, hence no value term
                values = response_values(value_model, ids[idx], attn[idx], width, cfg.packing)
                value_loss = L.clipped_value_loss(values, rollout.values[idx], returns[idx], m, cfg.clip_range_value)
                check_finite(value_loss, updates, "the value loss", where,
                             {"V_φ": values, "V_φk": rollout.values[idx], "the returns": returns[idx]}, m)
                terms.append((cfg.vf_coef * value_loss, tokens))  # a token mean
            ptx_loss, ptx_tokens = ptx.loss(policy, parallel) if ptx is not None and part.last else (None, 0)
            if ptx_loss is not None:
                check_finite(ptx_loss, updates, "the PPO-ptx loss", where)
                terms.append((cfg.ptx_coef * ptx_loss, ptx_tokens))
            units = tokens if loss_type(cfg) in TOKEN_MEAN_LOSSES else torch.tensor(float(len(idx)))  # else responses
            parallel.backward(policy_loss, units, *terms, totals=part.totals(parallel, terms))
            if part.last:
                optimizer_step(optimizer, None, trained, cfg.grad_clip)
            with torch.no_grad():
                ratio = torch.exp(logp - old_logp)[m.bool()]
                stat = parallel.token_mean({"policy_loss": policy_loss.item()}, units)
                stat |= parallel.token_mean({
                    **({"value_loss": value_loss.item()} if value_loss is not None else {}),
                    "clipfrac": L.clip_fraction(logp, old_logp, m, cfg.clip_range).item(),
                    "approx_kl": L.masked_mean(L.kl_k2(logp, old_logp), m).item(),
                    "entropy": L.entropy(logits, m, cfg.temperature).item()}, tokens)
                stat |= parallel.lowest({"ratio_min": ratio.min().item()})
                stat |= parallel.highest({"ratio_max": ratio.max().item()})
                if ptx_loss is not None:
                    stat |= parallel.token_mean({"ptx_loss": ptx_loss.item()}, ptx_tokens)
            part.record(stats, stat, parallel, units, tokens)
    return stats


def ppo_iteration(m: PPOModels, prompts: list[str], cfg: PPOConfig, kl_coef: float, generator: torch.Generator,
                  sampler: torch.Generator, parallel: Parallel, step: int = 1, rows_of=None, mark=None,
                  ignore_eos: bool = False) -> tuple[Rollout, torch.Tensor, list[dict], float]:
    """One iteration, 1–5 of the module docstring, with β = `kl_coef` (the KL controller's value): (the rollout, its
    per-token rewards, the update's stats per minibatch, the engine's sync seconds). `rows_of(samples)`: the
    responses' dataset rows, for reward functions; `mark()` is called after generation, scoring and the update,
    for the caller's clocks. `rlhf ppo` and `rlhf bench ppo` both run this."""
    mark = mark or (lambda: None)
    with parallel.inference():  # inference mode (FSDP: no_grad)
        with parallel.whole(m.policy):  # FSDP: gathered once for the decoding loop, not once per token
            if isinstance(m.engine, AsyncRollouts):  # --async-rollouts: sampled ahead by a snapshot of the policy
                samples = m.engine.generate(prompts)
            elif m.environment is None:
                samples = collect(m.engine, m.tokenizer, prompts, cfg, sampler, parallel, ignore_eos)       # 1
            else:  # multi-turn trajectories with the environment's tool replies (train/trajectory.py)
                samples = collect_trajectories(m.engine, m.tokenizer, m.environment, prompts, cfg, sampler,
                                               rows_of(None))
        mark()
        rollout = gather_rollout(measure(samples, m.policy, m.reference, m.value_model, m.rewards, cfg,
                                         rows_of(samples) if rows_of else None), parallel)                  # 2
    rewards, adv, returns = advantages(rollout, kl_coef, cfg)                                                # 3, 4
    mark()
    stats = ppo_update(m.train_policy, m.train_value_model, m.optimizer, rollout, adv, returns, cfg, kl_coef,
                       generator, m.ptx, parallel, step)                                                     # 5
    mark()
    return rollout, rewards, stats, m.engine.sync(m.policy)  # the updated weights into the engine (vllm)


# ---------------------------------------------------------------------------------------- around it

def loss_type(cfg: PPOConfig) -> str:
    """--loss-type, by default the estimator's paper's: grpo for GRPO, the token mean (bnpo) for PPO and RLOO."""
    return cfg.loss_type or ("grpo" if cfg.advantage == "grpo" else "bnpo")


def kl_in_loss(cfg: PPOConfig) -> bool:
    """--kl-in, by default the estimator's paper's: a loss term for GRPO, a per-token reward for PPO and RLOO."""
    return (cfg.kl_in or ("loss" if cfg.advantage == "grpo" else "reward")) == "loss"


def train_ppo(cfg: PPOConfig) -> dict:
    return start_run(cfg, read_inputs, load, ppo_loop)


def ppo_loop(run: Run) -> dict:
    cfg, parallel, generator, inputs = run.cfg, run.parallel, run.generator, run.inputs
    tokenizer, policy, reference, value_model, reward_model, ptx = run.models
    train_policy, train_value_model, reference, reward_model, optimizer = wrap_models(run)
    rewards_of = make_rewards(cfg, reward_model, tokenizer)  # r(x, y): the RM, the reward functions, their sum
    judges = make_judges(inputs.judges, lambda path: load_reward_model(path, tokenizer, run.device, cfg.packing))
    policy_params = [p for p in policy.parameters() if p.requires_grad]  # what the value warm-up freezes
    kl_control = KLController(cfg.kl_coef, cfg.adaptive_kl_target, cfg.kl_horizon)
    stream = PromptStream(list(range(len(inputs.prompts))), generator)  # row numbers, drawn as the prompts were
    sampler = torch.Generator(device=run.device).manual_seed(cfg.seed)  # the same in every process (docstring)
    prompts_per_batch = cfg.batch_size // samples_per_prompt(cfg)
    rollouts = AsyncRollouts(policy, tokenizer, cfg, parallel, collect, partial(stream.next, prompts_per_batch),
                             lambda rows: [inputs.prompts[i] for i in rows], cfg.ppo_steps) if cfg.async_rollouts \
        else None
    checkpoints = Checkpoints(run.dir, parallel, cfg.checkpoint_every, policy=policy, optimizer=optimizer,
                              kl_control=kl_control, stream=stream, generator=generator, sampler=sampler,
                              **({"value_model": value_model} if value_model is not None else {}),
                              **({"async_rollouts": rollouts} if rollouts else {}))
    first = checkpoints.restore() if cfg.resume else 0
    response_len = trajectory_budget(cfg) if cfg.environment else cfg.max_new_tokens
    engine = make_engine(cfg.rollout_engine, policy, tokenizer, max_len=cfg.max_prompt_length + response_len,
                         gpu_memory=cfg.vllm_gpu_memory, seed=cfg.seed,  # after restore: it serves those weights
                         server=cfg.rollout_server)
    engine = rollouts or engine  # --async-rollouts: a snapshot of the policy samples, in a thread of its own
    bar, record = progress(cfg.ppo_steps, "ppo"), {}
    bar.update(first)
    models = PPOModels(tokenizer, policy, train_policy, reference, value_model, train_value_model, rewards_of,
                       optimizer, engine, ptx, inputs.environment)
    times: list[float] = []
    for step in range(first + 1, cfg.ppo_steps + 1):
        times[:] = [time.time()]
        for p in policy_params:
            p.requires_grad_(step > cfg.value_warmup)  # during the warm-up only the value model learns
        rows = rollouts.next_batch() if rollouts else stream.next(prompts_per_batch)  # the global batch, everywhere
        prompts = [inputs.prompts[i] for i in rows]
        batch_rows = [i for i in rows for _ in range(samples_per_prompt(cfg))]  # each response's row, as collect
        mine = [batch_rows[i] for i in parallel.shard_range(len(batch_rows))]  # this process's responses
        rows_of = partial(inputs.rows.batch, rows=mine)
        rows_of = with_environments(rows_of) if inputs.environment else rows_of  # reward functions' `environments`
        rollout, rewards, updates, sync_s = ppo_iteration(models, prompts, cfg, kl_control.value, generator, sampler,
                                                          parallel, step, rows_of, lambda: times.append(time.time()))
        t0, t1, t2, t3 = times
        record = rollout_metrics(rollout, rewards, kl_control.value) | mean_stats(updates) | {
            "episodes": step * cfg.batch_size, "generation_s": t1 - t0, "scoring_s": t2 - t1,
            "update_s": t3 - t2, "reward_fn_s": rewards_of.take_time(),
            **({"sync_s": sync_s} if engine.name in ("vllm", "server") else {}),
            **(rollouts.metrics() if rollouts else {})}
        record |= engine_metrics(rollout, cfg)  # the engine–trainer gap, where the engine returned log-probs
        record |= judges_record(judges, rollout.samples, inputs.rows, batch_rows)
        record |= trajectory_metrics(rollout.samples) if inputs.environment else {}
        kl_control.update(record["kl"], cfg.batch_size)
        log_step(run, step, record, bar)
        if cfg.save_every and step % cfg.save_every == 0 and step < cfg.ppo_steps:
            save_snapshot(run, policy, step)
        if step < cfg.ppo_steps:  # the last step's state is the saved model
            checkpoints.maybe_save(step)
    bar.close()
    engine.close()  # (an error before this: the served copy is removed at exit, TemporaryDirectory)
    return finish(run, parallel.gather(policy), parallel.gather(value_model) if value_model is not None else None,
                  record)
