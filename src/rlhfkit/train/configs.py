"""The trainers' configs: `rlhf sft`, `rlhf rm`, `rlhf data convert-rm`, `rlhf dpo`, `rlhf ppo` (light:
`rlhf CMD --help` loads no torch; the trainers import their config from here)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar

from rlhfkit.config import check_at_least, check_positive, default_of, option, required
from rlhfkit.data.configs import check_loss
from rlhfkit.data.options import DataOptions
from rlhfkit.engines.options import EngineOptions, check_engine
from rlhfkit.errors import UserError
from rlhfkit.rewards.options import RewardOptions
from rlhfkit.runtime.options import RunOptions

ADVANTAGES = ("gae", "rloo", "grpo")


LOSS_TYPES = ("bnpo", "grpo", "dr_grpo", "dapo", "cispo")  # TRL's GRPOConfig.loss_type names (losses.aggregate_loss)
TOKEN_MEAN_LOSSES = ("bnpo", "dapo", "cispo")  # averaged over the minibatch's tokens (the others: over responses)
IMPORTANCE_LEVELS = ("token", "sequence")      # TRL's GRPOConfig.importance_sampling_level


SCALE_REWARDS = ("group", "batch", "none")  # TRL's GRPOConfig.scale_rewards


KL_IN = ("reward", "loss")




def samples_per_prompt(cfg: PPOConfig) -> int:
    """Responses drawn per prompt in one batch: k for RLOO's leave-one-out baseline and GRPO's group, else 1."""
    return 1 if cfg.advantage == "gae" else cfg.num_generations


@dataclass
class BatchOptions:
    """How every trainer's forward passes are batched (issue 37; models/packing.py, train/micro.py), declared once."""
    packing: bool = option(True, "sequences concatenated without padding in each forward pass (position ids restart "
                           "per sequence, attention never crosses sequences; an architecture that does not read "
                           "packed positions runs padded)")
    max_tokens_per_batch: int | None = option(None, "split each optimizer step's batch into micro-batches of at most "
                                              "N tokens (packed: real tokens; padded: rows x longest), gradients "
                                              "accumulated: the same step as the whole batch (default: one)")


@dataclass
class SupervisedOptions(RunOptions, DataOptions, BatchOptions):
    """The fields of the supervised trainers (`rlhf sft`, `rlhf rm`, `rlhf dpo`), each declared once; a trainer
    overrides the defaults it sizes otherwise."""
    data: str | None = required("rankings or pairs JSONL (docs/design.md §2)")
    eval_data: str | None = option(None, "held-out rows in --data's format (default: hold out eval_fraction of "
                                   "prompts)")
    eval_fraction: float = option(0.1, "share of distinct prompts held out when eval_data is not given")
    epochs: int = option(1, "passes over the data")
    batch_size: int = option(16, "rankings per optimizer step (all pairs of a ranking in one batch)")
    lr: float = option(1e-4, "peak learning rate")
    weight_decay: float = option(0.0, "AdamW weight decay")
    warmup_ratio: float = option(0.05, "share of steps spent warming the learning rate up")
    max_length: int | None = option(None, "tokens per prompt + response (prompt cut on the left first; default "
                                    "256, or the model's position limit when lower)")
    log_every: int = option(10, "log every N steps")

    def check(self) -> None:
        super().check()
        check_at_least(self, 1, "epochs", "batch_size", "max_length", "log_every", "max_tokens_per_batch")
        check_positive(self, "lr")
        if not 0 <= self.eval_fraction < 1:
            raise UserError("config key 'eval_fraction' must be in [0, 1)")


@dataclass
class SFTConfig(SupervisedOptions):
    model: str | None = required("causal LM directory to fine-tune (save_pretrained output)")
    data: str | None = required("demonstrations JSONL: prompt, completion")
    eval_fraction: float = default_of(SupervisedOptions, "eval_fraction", 0.05)
    epochs: int = option(3, "passes over the demonstrations")
    batch_size: int = option(32, "sequences per optimizer step")
    lr: float = option(5e-4, "peak learning rate (toy-world scale; use ~1e-5 for large models)")


@dataclass
class RewardConfig(SupervisedOptions):
    model: str | None = required("SFT policy directory: the RM's backbone (its LM head is replaced by a scalar)")
    demos: str | None = option(None, "demonstrations JSONL: the bias is shifted so they score 0 on average "
                               "(default: the training outputs)")
    world: str | None = option(None, "toy world: also report the noise ceiling and Spearman with gold")
    # K-wise rankings (issue 34)
    loss: str = option("pairwise", "pairwise: InstructGPT's C(K,2) pairs of each ranking, weighted 1/C(K,2); "
                       "plackett-luce: each ranking's Plackett–Luce likelihood over its tiers")

    def check(self) -> None:
        super().check()
        check_loss(self.loss)


@dataclass
class ConvertRMConfig:
    source: str | None = required("an rlhfkit reward/value model directory of the older layout (backbone + "
                                  "scalar_head.safetensors)", positional=True)
    out: str | None = required("directory to write the standard format to (XForSequenceClassification, "
                               "num_labels=1)", positional=True)

    def check(self) -> None:
        """Nothing to check without reading files: both fields are paths."""


@dataclass
class DPOConfig(SupervisedOptions):
    policy: str | None = required("SFT policy directory: the DPO start and the frozen reference π_ref")
    beta: float = option(0.1, "β: scale of the implicit reward, the strength of the KL constraint (paper: 0.1)")
    lr: float = option(1e-4, "peak learning rate (toy-world scale; Rafailov et al. use 1e-6 on large models)")
    warmup_ratio: float = default_of(SupervisedOptions, "warmup_ratio", 0.1)
    save_every: int = option(0, "save a checkpoint every N steps into OUT/checkpoints (0: only the final policy)")
    # K-wise rankings (issue 34)
    loss: str = option("pairwise", "pairwise: DPO on the C(K,2) pairs of each ranking, weighted 1/C(K,2); "
                       "plackett-luce: DPO's listwise form, each ranking's Plackett–Luce likelihood over its tiers")

    def check(self) -> None:
        super().check()
        check_at_least(self, 0, "save_every")
        if not self.beta > 0:
            raise UserError("config key 'beta' must be positive")
        check_loss(self.loss)


@dataclass
class PPOConfig(RunOptions, DataOptions, EngineOptions, RewardOptions, BatchOptions):
    RENAMED: ClassVar[dict[str, str]] = {"steps": "ppo_steps", "rloo_k": "num_generations",
                                         "group_size": "num_generations"}

    policy: str | None = required("SFT policy directory: the PPO start and the frozen reference")
    reference: str | None = option(None, "frozen reference of the KL penalty (default: --policy; the online loop "
                                   "starts from the last round's policy and keeps the SFT one here)")
    judge: list[str] = option([], "judges, comma-separated, logged but never trained on: a reward model directory, "
                              "a reward function, or a registered name (world:gold)")
    prompts: str | None = required("prompts JSONL (field `prompt`)")
    value_model: str | None = option(None, "value model start: a reward/value model directory, or a causal LM "
                                     "(e.g. the SFT policy) whose transformer gets a fresh scalar head (default: "
                                     "the reward model, as InstructGPT)")
    world: str | None = option(None, "toy world: also log its gold reward (the judge world:gold; never trained on)")
    ppo_steps: int = option(100, "PPO iterations (one batch of rollouts each)")
    batch_size: int = option(64, "episodes (prompts) per iteration")
    minibatch_size: int = option(32, "episodes per gradient step")
    ppo_epochs: int = option(4, "passes over each batch of rollouts")
    lr: float = option(3e-5, "learning rate of policy and value model (toy-world scale)")
    adam_eps: float = option(1e-5, "Adam epsilon")
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
    num_generations: int = option(4, "RLOO and GRPO: samples per prompt, k (a batch is batch_size/k prompts x k "
                                  "samples; TRL's name)")
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
    # Multi-turn rollouts with an environment (issue 35; engines/multiturn.py, train/trajectory.py)
    environment: str | None = option(None, "environment class, module:Class or file.py:Class (TRL's "
                                     "environment_factory convention: reset(**row), tools as documented methods, "
                                     "get_reward): each episode is a conversation in which the policy calls tools")
    max_turns: int = option(4, "--environment: the policy's turns per trajectory at most")
    max_trajectory_tokens: int | None = option(None, "--environment: tokens after the prompt per trajectory, the "
                                               "policy's and the tools' (default max_turns x max_new_tokens)")
    tool_timeout: float = option(10.0, "--environment: seconds a tool call may run; then its answer is an error")
    turn_reward_fn: list[str] = option([], "--environment: reward functions of each turn, comma-separated, "
                                       "f(prompts, completions, turn, environments, **row_fields) -> list[float]: "
                                       "completions[i] is trajectory i's turn `turn` (1, 2, ...), the value goes "
                                       "on that turn's last token")
    # Asynchronous rollouts (train/async_rollouts.py).
    async_rollouts: int = option(0, "generate batch i+1 while batch i trains, by a snapshot of the policy at most K "
                                 "updates old (0: the synchronous loop; train/async_rollouts.py)")
    # Engine importance weights (issue 33 item 3; losses.py "engine importance weights"; TRL GRPOConfig's names in
    # brackets).
    engine_is: str = option("auto", "importance weight π_θk/π_engine on each token's policy loss, for an engine "
                            "that is not the trained model: tis (token ratio truncated at the cap, Yao et al. 2025), "
                            "mis (a response's ratio, masked outside [1/cap, cap]; Liu, Li et al. 2025), none, or "
                            "auto: tis with --rollout-engine vllm|server or async rollouts, none with the hf engines "
                            "(weight exactly 1) [vllm_importance_sampling_mode]")
    engine_is_cap: float = option(3.0, "C of --engine-is: TIS's cap, MIS's band [1/C, C] (TRL 1.16's default) "
                                  "[vllm_importance_sampling_clip_max]")

    def check(self) -> None:
        super().check()
        check_at_least(self, 1, "ppo_steps", "batch_size", "minibatch_size", "ppo_epochs", "max_new_tokens",
                       "max_prompt_length", "ptx_batch_size", "kl_horizon", "log_every", "max_tokens_per_batch")
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
            name = self.advantage.upper()
            k = samples_per_prompt(self)
            if k < 2 or self.batch_size % k:
                raise UserError(f"config key 'num_generations' must be at least 2 and divide 'batch_size' ({name} "
                                f"compares k >= 2 samples of each prompt in the batch)")
            if self.value_model:
                raise UserError(f"config key 'value_model': {name} has no value model (drop --value-model)")
            if self.value_warmup:
                raise UserError(f"config key 'value_warmup': {name} has no value model to warm up")
        # With N processes each generates batch_size/N episodes and updates on minibatch_size/N of each minibatch.
        n = self.num_processes
        if n > 1 and ((self.batch_size // samples_per_prompt(self)) % n or self.minibatch_size % n):
            raise UserError(f"config keys 'batch_size' (in prompts) and 'minibatch_size' must be multiples of "
                            f"--num-processes {n}")
        self.check_async_rollouts()  # before the engine's check: vllm is refused whether installed or not
        check_engine(self.rollout_engine, self.vllm_gpu_memory, self.rollout_server)
        if n > 1 and self.value_warmup:
            raise UserError("config key 'value_warmup' is not supported with several processes (DDP needs every "
                            "trained parameter in every backward pass)")
        self.check_loss_variant()
        self.check_environment()
        check_engine_is(self)

    @staticmethod
    def saved_alias(saved: dict, new: str) -> str | None:
        """A run saved before the renames kept k as rloo_k for RLOO and as group_size for GRPO."""
        return {"num_generations": "group_size" if saved.get("advantage") == "grpo" else "rloo_k"}.get(new)

    def check_environment(self) -> None:
        check_at_least(self, 1, "max_turns", "max_trajectory_tokens")
        check_positive(self, "tool_timeout")
        if not self.environment:
            if self.turn_reward_fn:
                raise UserError("config key 'turn_reward_fn' needs --environment (turns are a trajectory's)")
            return
        if self.rollout_engine not in ("hf", "vllm"):
            raise UserError(f"--environment: multi-turn rollouts run on --rollout-engine hf or vllm, not "
                            f"{self.rollout_engine} (a static cache has one prompt width, a trajectory's turns grow "
                            "it; the rollout server is not tested with trajectories yet)")
        if max(self.num_processes, int(os.environ.get("WORLD_SIZE", "1"))) > 1:
            raise UserError("--environment runs with one process (--num-processes 1) for now")

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

    def check_async_rollouts(self) -> None:
        check_at_least(self, 0, "async_rollouts")
        if self.async_rollouts and self.rollout_engine not in ("hf", "hf-static"):
            raise UserError(f"--async-rollouts runs with --rollout-engine hf or hf-static (a snapshot of the policy "
                            f"samples in a thread of its own); with {self.rollout_engine} it is not supported yet")
        if self.async_rollouts and self.environment:
            raise UserError("--async-rollouts samples single-turn responses; with --environment (multi-turn "
                            "trajectories) it is not supported yet")
        if self.async_rollouts and self.fsdp:
            raise UserError("--async-rollouts needs the whole policy in every process for its snapshot: use DDP "
                            "(drop --fsdp)")
        several = max(self.num_processes, int(os.environ.get("WORLD_SIZE", "1"))) > 1
        if self.async_rollouts and several and (self.checkpoint_every or self.resume):
            raise UserError("--async-rollouts with several processes writes no checkpoints (each process holds its "
                            "share of the batches sampled ahead): drop --checkpoint-every and --resume")


ENGINE_IS = ("auto", "tis", "mis", "none")  # losses.py "engine importance weights"


def check_engine_is(cfg: PPOConfig) -> None:
    if cfg.engine_is not in ENGINE_IS:
        raise UserError(f"config key 'engine_is': {cfg.engine_is!r} is not one of {', '.join(ENGINE_IS)}")
    if not cfg.engine_is_cap > 1:
        raise UserError(f"config key 'engine_is_cap' must be > 1 (the cap C of the weight π_θk/π_engine, MIS's band "
                        f"[1/C, C]), not {cfg.engine_is_cap}")


def engine_correction(cfg: PPOConfig) -> str:
    """--engine-is, by default tis where the engine is not the trained model (vLLM's kernels, or a stale policy with
    async rollouts), none where the trained model samples itself (the hf engines: the weight would be exactly 1)."""
    if cfg.engine_is != "auto":
        return cfg.engine_is
    other = cfg.rollout_engine in ("vllm", "server") or getattr(cfg, "async_rollouts", 0) > 0
    return "tis" if other else "none"
