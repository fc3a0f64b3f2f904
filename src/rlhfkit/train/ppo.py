"""Step 3 of InstructGPT: PPO against the reward model with a KL penalty to the SFT policy.

    maximize  E_{x~D, y~π_θ(·|x)} [ r(x, y) − β·log(π_θ(y|x) / π_SFT(y|x)) ]  (+ γ·E_{x~D_pretrain}[log π_θ(x)])

One iteration is PPO-Clip's Algorithm 1 (Schulman et al. 2017, as in the lecture):
  1. collect     y ~ π_θk(·|x) for a batch of prompts (KV-cached sampling at temperature T; stop at EOS)
  2. score       log π_θk(y_t), log π_SFT(y_t), V_φk(x, y_<t), r(x, y): one forward pass per model
  3. rewards     R_t = −β·(log π_θk − log π_SFT) on every response token, + r(x, y) on the last one
  4. advantages  Â_t by GAE (γ = 1, λ = 0.95), returns Ĝ_t = Â_t + V_t, Â whitened over valid tokens
  5. update      K epochs of shuffled minibatches: PPO-Clip loss + c_v·(clipped value regression) [+ γ·ptx]

The reference is the SFT policy (frozen); the value model starts from the reward model with its own
parameters (InstructGPT §3.5). Responses that never emit EOS get a fixed penalty instead of r(x, y).

RLOO (`--advantage rloo`, Ahmadian et al. 2024) is the critic-free option of the same loop: step 1 draws k
samples for each of batch_size/k prompts, step 2 scores no values, step 4 gives every token of a response the
same Â = R(x, y) − mean of R over the other k−1 samples of its prompt (R = Σ_t R_t, the KL-penalized sequence
reward), and step 5 is the same clipped update without the value term.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from rlhfkit import losses as L
from rlhfkit.config import option
from rlhfkit.data.jsonl import read_jsonl
from rlhfkit.data.schemas import prompt_record
from rlhfkit.errors import UserError
from rlhfkit.generation import Samples, generate, without_autograd
from rlhfkit.models.loading import (
    check_model_dir,
    disable_dropout,
    load_causal_lm,
    load_tokenizer,
    save_pretrained_atomic,
)
from rlhfkit.models.lora import (
    AdaptersOff,
    add_lora,
    check_lora_options,
    copy_head,
    has_lora,
    save_model,
    save_scalar_model,
)
from rlhfkit.models.policy import response_logprobs, response_values
from rlhfkit.models.scalar import ScalarModel
from rlhfkit.train.checkpoint import Checkpoints
from rlhfkit.train.common import (
    RunDir,
    RunOptions,
    check_finite,
    make_optimizer,
    prepare_out_dir,
    progress,
    seed_everything,
    set_threads,
    shuffled_batches,
)
from rlhfkit.train.distributed import Engine, launch, should_launch
from rlhfkit.train.ppo_data import PromptStream, PtxBatches, ptx_record


@dataclass
class PPOConfig(RunOptions):
    policy: str = option(None, "SFT policy directory: the PPO start and the frozen reference", required=True)
    reference: str | None = option(None, "frozen reference of the KL penalty (default: --policy; the online loop "
                                   "starts from the last round's policy and keeps the SFT one here)")
    reward: str = option(None, "reward model directory (rlhf rm)", required=True)
    prompts: str = option(None, "prompts JSONL (field `prompt`)", required=True)
    value_model: str | None = option(None, "value model start (default: the reward model, as InstructGPT)")
    world: str | None = option(None, "toy world: also log the gold reward of rollouts (never used to train)")
    steps: int = option(100, "PPO iterations (one batch of rollouts each)")
    batch_size: int = option(64, "episodes (prompts) per iteration")
    minibatch_size: int = option(32, "episodes per gradient step")
    ppo_epochs: int = option(4, "passes over each batch of rollouts")
    lr: float = option(3e-5, "learning rate of policy and value model (toy-world scale)")
    adam_eps: float = option(1e-5, "Adam epsilon")
    grad_clip: float = option(1.0, "gradient norm clipping")
    kl_coef: float = option(0.05, "β: weight of the per-token KL penalty to the SFT policy")
    target_kl: float | None = option(None, "adaptive KL control: target KL per episode (Ziegler et al. 2019)")
    kl_horizon: int = option(10000, "adaptive KL control: horizon in episodes")
    clip_range: float = option(0.2, "ε of PPO-Clip")
    clip_range_value: float = option(0.2, "clip range of the value regression around the old values")
    vf_coef: float = option(0.1, "weight of the value loss")
    gamma: float = option(1.0, "discount γ")
    lam: float = option(0.95, "GAE λ")
    advantage: str = option("gae", "advantage estimator: gae (PPO with a value model) or rloo (REINFORCE "
                            "leave-one-out, no value model; Ahmadian et al. 2024)")
    rloo_k: int = option(4, "RLOO: samples per prompt (a batch is batch_size/k prompts x k samples)")
    whiten_rewards: bool = option(False, "whiten per-token rewards before GAE")
    temperature: float = option(1.0, "sampling temperature; log-probs are scored with the same logits / T")
    max_new_tokens: int = option(32, "response length limit")
    max_prompt_length: int = option(128, "prompt tokens kept (from the right)")
    missing_eos_penalty: float | None = option(-1.0, "score of a response with no EOS (none: use the RM)")
    ptx_data: str | None = option(None, "PPO-ptx: JSONL of pretraining text (`text`) or demonstrations")
    ptx_coef: float = option(0.0, "PPO-ptx: γ, weight of the LM loss on ptx data (InstructGPT: 27.8)")
    ptx_batch_size: int = option(16, "PPO-ptx: sequences per gradient step")
    critic_warmup: int = option(0, "first N iterations fit only the value model; the policy waits for a critic "
                                "whose advantages are not noise (OpenRLHF's freezing_actor_steps)")
    save_every: int = option(0, "save a checkpoint every N iterations (0: only the final policy)")
    log_every: int = option(1, "log every N iterations")


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


@dataclass
class Rollout:
    samples: Samples
    logp: torch.Tensor        # log π_θk(y_t)            [B, R]
    ref_logp: torch.Tensor    # log π_SFT(y_t)           [B, R]
    values: torch.Tensor      # V_φk(x, y_<t)            [B, R]
    rm_score: torch.Tensor    # r(x, y)                  [B]
    score: torch.Tensor       # r(x, y), or the missing-EOS penalty   [B]
    entropy: float

    @property
    def mask(self) -> torch.Tensor:
        return self.samples.response_mask

    @property
    def prompt_width(self) -> int:
        return self.samples.prompt_ids.shape[1]


# -------------------------------------------------------------------------------------- the algorithm

def collect(policy, tokenizer, prompts: list[str], cfg: PPOConfig, generator) -> Samples:
    """1. Sample one response per prompt from the current policy (RLOO: k, side by side)."""
    prompts = [p for p in prompts for _ in range(samples_per_prompt(cfg))]
    return generate(policy, tokenizer, prompts, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                    generator=generator, max_prompt_length=cfg.max_prompt_length)


@without_autograd
def score(samples: Samples, policy, reference, value_model, reward_model, cfg: PPOConfig) -> Rollout:
    """2. log π_θk, log π_SFT (same temperature as sampling), V_φk and r(x, y) of the sampled responses."""
    ids, attn, width = samples.input_ids, samples.attention_mask, samples.prompt_ids.shape[1]
    mask = samples.response_mask
    logp, logits = response_logprobs(policy, ids, attn, width, cfg.temperature)
    ref_logp, _ = response_logprobs(reference, ids, attn, width, cfg.temperature)
    if value_model is not None:
        values = response_values(value_model, ids, attn, width)
    else:  # RLOO: no critic
        values = torch.zeros_like(logp)
    rm_score = reward_model.score(ids, attn)  # read at the last real token: the EOS of a finished response
    final = rm_score
    if cfg.missing_eos_penalty is not None:
        final = torch.where(samples.finished, rm_score, torch.full_like(rm_score, cfg.missing_eos_penalty))
    return Rollout(samples, logp * mask, ref_logp * mask, values * mask, rm_score, final,
                   L.entropy(logits, mask, cfg.temperature).item())


def advantages(rollout: Rollout, kl_coef: float, cfg: PPOConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """3–4. Per-token rewards, GAE advantages (whitened) and returns; RLOO: leave-one-out advantages, no returns."""
    rewards = L.per_token_rewards(rollout.score, rollout.logp, rollout.ref_logp, rollout.mask, kl_coef)
    if cfg.advantage == "rloo":  # the response is one action: Â_t = R(x, y) − b(x, y) on each of its tokens
        sequence_reward = rewards.sum(-1)
        adv = sequence_reward - L.rloo_baseline(sequence_reward, cfg.rloo_k)
        return rewards, adv[:, None] * rollout.mask, None
    if cfg.whiten_rewards:
        rewards = L.whiten(rewards, rollout.mask, shift_mean=False)
    adv, returns = L.gae(rewards, rollout.values, rollout.mask, cfg.gamma, cfg.lam)
    return rewards, L.whiten(adv, rollout.mask), returns


def ppo_update(policy, value_model, optimizer, rollout: Rollout, adv: torch.Tensor, returns: torch.Tensor,
               cfg: PPOConfig, generator: torch.Generator, ptx=None) -> list[dict]:
    """5. K epochs over shuffled minibatches of the rollout; returns one stats dict per minibatch."""
    s, stats = rollout.samples, []
    ids, attn, mask, width = s.input_ids, s.attention_mask, rollout.mask, rollout.prompt_width
    for _ in range(cfg.ppo_epochs):
        for idx in shuffled_batches(len(ids), cfg.minibatch_size, generator):
            logp, logits = response_logprobs(policy, ids[idx], attn[idx], width, cfg.temperature)
            old_logp, m = rollout.logp[idx], mask[idx]
            policy_loss = L.clipped_surrogate(logp, old_logp, adv[idx], m, cfg.clip_range)
            loss, value_loss = policy_loss, None
            if value_model is not None:  # RLOO has no critic, hence no value term
                values = response_values(value_model, ids[idx], attn[idx], width)
                value_loss = L.clipped_value_loss(values, rollout.values[idx], returns[idx], m, cfg.clip_range_value)
                loss = policy_loss + cfg.vf_coef * value_loss
            ptx_loss = ptx.loss(policy) if ptx is not None else None
            if ptx_loss is not None:
                loss = loss + cfg.ptx_coef * ptx_loss
            check_finite(loss, len(stats), "PPO loss")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], cfg.grad_clip)
            optimizer.step()
            with torch.no_grad():
                ratio = torch.exp(logp - old_logp)[m.bool()]
                stats.append({"policy_loss": policy_loss.item(),
                              **({"value_loss": value_loss.item()} if value_loss is not None else {}),
                              "clipfrac": L.clip_fraction(logp, old_logp, m, cfg.clip_range).item(),
                              "approx_kl": L.masked_mean(L.kl_k3(logp, old_logp), m).item(),
                              "entropy": L.entropy(logits, m, cfg.temperature).item(),
                              "ratio_min": ratio.min().item(), "ratio_max": ratio.max().item(),
                              **({"ptx_loss": ptx_loss.item()} if ptx_loss is not None else {})})
    return stats


# ---------------------------------------------------------------------------------------- around it

def _check(cfg: PPOConfig) -> None:
    for key in ("steps", "batch_size", "minibatch_size", "ppo_epochs", "max_new_tokens"):
        if getattr(cfg, key) < 1:
            raise UserError(f"config key '{key}' must be at least 1")
    if cfg.minibatch_size > cfg.batch_size:
        raise UserError("config key 'minibatch_size' must not exceed 'batch_size'")
    if cfg.temperature <= 0:
        raise UserError("config key 'temperature' must be > 0 (PPO scores samples with logits / T)")
    if cfg.target_kl is not None and cfg.target_kl <= 0:
        raise UserError("config key 'target_kl' must be > 0")
    if cfg.ptx_coef > 0 and not cfg.ptx_data:
        raise UserError("config key 'ptx_coef' > 0 needs --ptx-data")
    if cfg.advantage not in ("gae", "rloo"):
        raise UserError(f"config key 'advantage': unknown estimator {cfg.advantage!r} (gae or rloo)")
    if cfg.advantage == "rloo":
        if cfg.rloo_k < 2 or cfg.batch_size % cfg.rloo_k:
            raise UserError("config key 'rloo_k' must be at least 2 and divide 'batch_size' (leave-one-out needs "
                            "k >= 2 samples of each prompt in the batch)")
        if cfg.value_model:
            raise UserError("config key 'value_model': RLOO has no value model (drop --value-model)")
        if cfg.critic_warmup:
            raise UserError("config key 'critic_warmup': RLOO has no critic to warm up")


def _check_processes(cfg: PPOConfig) -> None:
    """With N processes every one collects batch_size/N episodes and updates on minibatches of minibatch_size/N."""
    n = cfg.num_processes
    if n > 1 and ((cfg.batch_size // samples_per_prompt(cfg)) % n or cfg.minibatch_size % n):
        raise UserError(f"config keys 'batch_size' (in prompts) and 'minibatch_size' must be multiples of "
                        f"--num-processes {n}")
    if n > 1 and cfg.critic_warmup:
        raise UserError("config key 'critic_warmup' is not supported with several processes (DDP needs every "
                        "trained parameter in every backward pass)")


def samples_per_prompt(cfg: PPOConfig) -> int:
    """Responses drawn per prompt in one batch: k for RLOO's leave-one-out baseline, else 1."""
    return cfg.rloo_k if cfg.advantage == "rloo" else 1


def load_models(cfg: PPOConfig, device):
    """The four roles: policy (trained), reference (frozen SFT), value (trained, from the RM), reward (frozen).

    With LoRA (--lora-r) the policy and the value model train adapters; the reference is the policy's own weights
    with the adapters off, and the reward model the value model's start with the adapters off: no second copies.
    """
    tokenizer = load_tokenizer(cfg.policy)
    policy = add_lora(disable_dropout(load_causal_lm(cfg.policy, tokenizer)), cfg, cfg.policy).to(device)
    if has_lora(policy) and not cfg.reference:
        reference = AdaptersOff(policy)  # π_SFT: the weights the adapters sit on
    else:
        reference = disable_dropout(load_causal_lm(cfg.reference or cfg.policy, tokenizer))
        reference = reference.to(device).eval().requires_grad_(False)
    shared_rm = cfg.lora_r > 0 and cfg.advantage == "gae" and not cfg.value_model
    if not shared_rm:
        reward_model = ScalarModel.from_pretrained(cfg.reward).to(device).eval().requires_grad_(False)
    value_model = None  # RLOO: no critic
    if cfg.advantage == "gae":
        value_model = ScalarModel.from_pretrained(cfg.value_model or cfg.reward).to(device).eval()
        value_model.backbone = add_lora(value_model.backbone, cfg, cfg.value_model or cfg.reward)
    if shared_rm:  # r(x, y): the value model's transformer with its adapters off, and a frozen copy of the head
        reward_model = ScalarModel(AdaptersOff(value_model.backbone), copy_head(value_model.head)).eval()
    if reward_model.config.vocab_size < len(tokenizer):
        raise UserError(f"{cfg.reward}: vocabulary of {reward_model.config.vocab_size} tokens does not match the "
                        f"policy's tokenizer ({len(tokenizer)} tokens)")
    policy.eval()  # no dropout anywhere (and eval() keeps it that way); gradients still flow
    return tokenizer, policy, reference, value_model, reward_model


def train_ppo(cfg: PPOConfig) -> dict:
    _check(cfg)
    prompts = [r["prompt"] for r in read_jsonl(cfg.prompts, prompt_record)]
    if cfg.ptx_data:
        read_jsonl(cfg.ptx_data, ptx_record)  # every line checked before a model is loaded
    for path in (cfg.policy, cfg.reference, cfg.reward, cfg.value_model):
        if path:
            check_model_dir(path)
    world = None
    if cfg.world:
        from rlhfkit.world.build import World
        world = World(cfg.world)
    check_lora_options(cfg)
    _check_processes(cfg)
    prepare_out_dir(cfg.out, cfg.overwrite, cfg.resume)
    if should_launch(cfg):  # --num-processes N: N copies of this function, each collecting 1/N of the rollouts
        return launch(train_ppo, cfg)
    engine = Engine.create(cfg)
    device = engine.device
    set_threads(cfg.threads)
    generator = seed_everything(cfg.seed)
    tokenizer, policy, reference, value_model, reward_model = load_models(cfg, device)
    ptx = PtxBatches(cfg.ptx_data, tokenizer, cfg.ptx_batch_size, generator) if cfg.ptx_data else None
    run = RunDir(cfg.out, cfg, cfg.overwrite, cfg.tensorboard, resume=cfg.resume, main=engine.is_main)
    # With N processes each updates on its 1/N of the rollouts (DDP averages the gradients), in minibatches of
    # minibatch_size/N; sampling and scoring use the models themselves (FSDP: sharded in place, and the frozen
    # reference and reward model sharded too).
    train_policy, train_value = engine.wrap(policy), engine.wrap(value_model) if value_model is not None else None
    reference, reward_model = engine.frozen(reference), engine.frozen(reward_model)
    update_cfg = replace(cfg, minibatch_size=cfg.minibatch_size // engine.world_size)
    critic = list(value_model.parameters()) if value_model is not None else []
    optimizer = make_optimizer(list(policy.parameters()) + critic, cfg.lr, eps=cfg.adam_eps)
    actor = [p for p in policy.parameters() if p.requires_grad]  # what the critic warm-up freezes (LoRA: adapters)
    kl_control = KLController(cfg.kl_coef, cfg.target_kl, cfg.kl_horizon)
    stream = PromptStream(prompts, generator)
    sampler = torch.Generator(device=device).manual_seed(cfg.seed + engine.rank)
    checkpoints = Checkpoints(run, engine, cfg.checkpoint_every, policy=policy, optimizer=optimizer,
                              kl_control=kl_control, stream=stream, generator=generator, sampler=sampler,
                              **({"value_model": value_model} if value_model is not None else {}))
    start = checkpoints.restore() if cfg.resume else 0
    bar = progress(cfg.steps, "ppo")
    bar.update(start)
    record = {}
    for step in range(start + 1, cfg.steps + 1):
        t0 = time.time()
        for p in actor:
            p.requires_grad_(step > cfg.critic_warmup)  # during the warm-up only the critic learns
        prompts_now = engine.shard(stream.next(cfg.batch_size // samples_per_prompt(cfg)))  # this process's share
        with engine.inference():  # inference mode (FSDP: no_grad)
            with engine.whole(policy):  # FSDP: gathered once for the decoding loop, not once per token
                samples = collect(policy, tokenizer, prompts_now, cfg, sampler)                 # 1
            t1 = time.time()
            rollout = score(samples, policy, reference, value_model, reward_model, cfg)        # 2
        rewards, adv, returns = advantages(rollout, kl_control.value, cfg)                    # 3, 4
        t2 = time.time()
        updates = ppo_update(train_policy, train_value, optimizer, rollout, adv, returns, update_cfg, generator,
                             ptx)                                                              # 5
        t3 = time.time()
        record = rollout_metrics(rollout, rewards, kl_control.value, world) | mean_stats(updates) | {
            "episodes": step * cfg.batch_size, "generation_s": t1 - t0, "scoring_s": t2 - t1, "update_s": t3 - t2}
        record = engine.reduce_metrics(record)  # with N processes: over all of them (β follows the global KL)
        kl_control.update(record["kl"], cfg.batch_size)
        if step % cfg.log_every == 0 or step == cfg.steps:
            run.log(step, **record)
        bar.update(1)
        bar.set_postfix(rm=f"{record['rm_score']:.2f}", kl=f"{record['kl']:.2f}",
                        **({"gold": f"{record['gold']:.2f}"} if world else {}))
        if cfg.save_every and step % cfg.save_every == 0 and step < cfg.steps:
            snapshot = engine.gather(policy)  # FSDP: the full weights, in process 0
            if engine.is_main:
                save_pretrained_atomic(run.path / "checkpoints" / f"step-{step}", snapshot, tokenizer)
        if step < cfg.steps:  # the last step's state is the saved model
            checkpoints.maybe_save(step)
    bar.close()
    policy = engine.gather(policy)  # FSDP: the full weights, in process 0
    value_model = engine.gather(value_model) if value_model is not None else None
    if not engine.is_main:
        return record
    save_model(run.path, policy, tokenizer, cfg.lora_save)
    if value_model is not None:
        save_scalar_model(run.path / "value", value_model, None, cfg.lora_save)
    run.close()
    print(f"ppo: {cfg.steps} iterations, {cfg.steps * cfg.batch_size} episodes; last batch: RM score "
          f"{record['rm_score']:.3f}, KL {record['kl']:.3f}" + (f", gold {record['gold']:.3f}" if world else "")
          + f" -> {run.path}")
    return record


def rollout_metrics(rollout: Rollout, rewards: torch.Tensor, kl_coef: float, world=None) -> dict:
    """What DESIGN §4 asks to log about a batch of rollouts (gold only in the toy world, for evaluation)."""
    s, mask = rollout.samples, rollout.mask
    kl_k1 = (rollout.logp - rollout.ref_logp).sum(-1)
    kl_k3 = (L.kl_k3(rollout.logp, rollout.ref_logp) * mask).sum(-1)
    out = {"rm_score": rollout.rm_score.mean().item(), "score": rollout.score.mean().item(),
           "reward": rewards.sum(-1).mean().item(), "kl": kl_k1.mean().item(), "kl_k3": kl_k3.mean().item(),
           "kl_coef": kl_coef, "response_length": mask.sum(-1).float().mean().item(),
           "eos_rate": s.finished.float().mean().item(), "rollout_entropy": rollout.entropy,
           "value_mean": L.masked_mean(rollout.values, mask).item()}
    if world is not None:
        gold = [world.gold(p, t, bool(f)) for p, t, f in zip(s.prompts, s.texts, s.finished.tolist())]
        out["gold"] = float(np.mean([g.total for g in gold]))
        out["gold_correctness"] = float(np.mean([g.correctness for g in gold]))
    return out


def mean_stats(stats: list[dict]) -> dict:
    keys = stats[0].keys()
    out = {k: float(np.mean([s[k] for s in stats])) for k in keys if k not in ("ratio_min", "ratio_max")}
    out["ratio_min"] = min(s["ratio_min"] for s in stats)
    out["ratio_max"] = max(s["ratio_max"] for s in stats)
    return out
