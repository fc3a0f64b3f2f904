"""What a PPO run reads and loads before its first iteration (`train/run.start_run`'s two steps), and what it
writes around its iterations.

`read_inputs` reads and checks everything a user passes — the prompts, PPO-ptx data, the model directories'
kinds, the judges — before any process starts or any model loads; `load` then builds the four roles
(`load_models`) and checks the prompts against the policy's tokenizer, before the run directory exists.
In the run, `wrap_models` readies them for N processes and makes the optimizer, `PPOModels` holds what an
iteration runs, `log_step` logs an iteration, `save_snapshot` and `finish` save the policy (and value model).
`cfg` is the run's `train.configs.PPOConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhfkit.data.chat import Truncation, is_conversation, prompt_ids, require_template
from rlhfkit.data.formats import read_prompts
from rlhfkit.errors import UserError
from rlhfkit.models.loading import (
    check_causal_lm,
    check_lengths,
    check_model_dir,
    check_reward_dir,
    disable_dropout,
    load_causal_lm,
    load_tokenizer,
    model_kind,
    resolve_length,
    save_dtype,
)
from rlhfkit.models.lora import AdaptersOff, add_lora, copy_head, has_lora, save_model, save_scalar_model
from rlhfkit.models.reward_model import RewardModel
from rlhfkit.models.scalar import ScalarModel, check_scalar_architecture
from rlhfkit.rewards.sources import world_judge
from rlhfkit.runtime.optim import make_optimizer
from rlhfkit.storage import save_pretrained_atomic
from rlhfkit.train.ppo_data import PtxBatches, read_ptx
from rlhfkit.train.ppo_rewards import PromptRows, check_reward_sources
from rlhfkit.train.run import Run
from rlhfkit.train.trajectory import check_trajectory_lengths, read_environment


def load_models(cfg, device):
    """The four roles: policy (trained), reference (frozen SFT), value model (trained, from the RM or
    --value-model: `start_value_model`), reward model (frozen).

    With LoRA (--lora-r) the policy and the value model train adapters; the reference is the policy's own weights
    with the adapters off, and the reward model the value model's start with the adapters off: no second copies.
    The reward model scores the rollouts packed under --packing, as the other three are run (`RewardModel`).
    """
    tokenizer = load_tokenizer(cfg.policy, cfg.chat_template)
    policy = add_lora(disable_dropout(load_causal_lm(cfg.policy, tokenizer)), cfg, cfg.policy).to(device)
    limit = check_lengths(cfg.policy, policy.config, max_prompt_length=cfg.max_prompt_length,
                          max_new_tokens=cfg.max_new_tokens)
    cfg.max_prompt_length = resolve_length(cfg.max_prompt_length, 128, limit, cfg.max_new_tokens)
    if has_lora(policy) and not cfg.reference:
        reference = AdaptersOff(policy)  # π_SFT: the weights the adapters sit on
    else:
        reference = disable_dropout(load_causal_lm(cfg.reference or cfg.policy, tokenizer))
        reference = reference.to(device).eval().requires_grad_(False)
    reward_under_value_model = cfg.lora_r > 0 and cfg.advantage == "gae" and not cfg.value_model
    reward_model = None  # reward functions alone: no reward model
    if cfg.reward and not reward_under_value_model:  # any reward model, its own tokenizer or the policy's
        reward_model = RewardModel.load(cfg.reward, tokenizer, device, packing=cfg.packing)  # models/reward_model.py
    value_model = None  # RLOO, GRPO: no value model
    if cfg.advantage == "gae":
        value_path = cfg.value_model or cfg.reward
        value_model = start_value_model(value_path, tokenizer, cfg.seed).to(device).eval()
        if not RewardModel.around(value_model, value_path, tokenizer).same:  # V(x, y_<t) on the policy's tokens
            raise UserError(f"{value_path}: the value model's tokenizer is not the policy's; a value model reads "
                            "the policy's tokens (pass --value-model with one that shares the policy's tokenizer)")
        value_model.backbone = add_lora(value_model.backbone, cfg, value_path)
    if reward_under_value_model:  # r(x, y): the value model's transformer, adapters off, and a frozen head copy
        reward_model = RewardModel.around(ScalarModel(AdaptersOff(value_model.backbone), copy_head(value_model.head),
                                                      value_model.pad_token_id).eval(), cfg.reward, tokenizer,
                                          packing=cfg.packing)
    policy.eval()  # no dropout anywhere (and eval() keeps it that way); gradients still flow
    return tokenizer, policy, reference, value_model, reward_model


def start_value_model(path, tokenizer, seed: int) -> ScalarModel:
    """V_φ's start. A reward/value model directory as it is, head included (InstructGPT App. C.3: the value
    function starts from the RM); a causal LM directory (the SFT policy, the base model: where TRL and OpenRLHF
    start the critic) gives its transformer under a fresh scalar head drawn from the run's seed, as `rlhf rm`
    starts a reward model — every process draws the same head."""
    if model_kind(path)[0] == "causal":
        return ScalarModel.from_backbone(path, tokenizer, seed=seed)
    return ScalarModel.from_pretrained(path, role="value model")


def check_value_start(path) -> None:
    """--value-model: a reward/value model (a sequence classifier with num_labels=1, or rlhfkit's older layout) or
    a causal LM whose architecture a scalar head can sit on; anything else is refused in one line."""
    kind, what = model_kind(path)
    if kind == "causal":
        check_scalar_architecture(path)
    elif kind == "scalar":
        check_reward_dir(path, "value model")
    else:
        what = what or "config.json names no architecture"
        raise UserError(f"{path}: neither a reward model nor a causal LM ({what}); the value model starts from a "
                        "sequence classifier with num_labels=1 or from a causal LM's transformer under a fresh "
                        "scalar head")


@dataclass
class PPOInputs:
    """What the run reads, once, before any process starts."""
    rows: PromptRows           # the prompts, their fields (for reward functions) and their names
    ptx: list[dict] | None     # PPO-ptx records (text, or prompt + completion)
    judges: list               # registered judges, and the specs of the others (train/ppo_rewards.py)
    environment: object = None  # --environment: its `EnvironmentSpec`, loaded and checked (train/trajectory.py)

    @property
    def prompts(self) -> list:
        return self.rows.prompts


def read_inputs(cfg) -> PPOInputs:
    rows = PromptRows.of(cfg.prompts, read_prompts(cfg.prompts, cfg))
    ptx = read_ptx(cfg.ptx_data) if cfg.ptx_data else None  # every line checked before a model is loaded
    for path in (cfg.policy, cfg.reference, cfg.reward, cfg.value_model):
        if path:
            check_model_dir(path)
    for path, role in ((cfg.policy, "policy"), (cfg.reference, "reference")):
        if path:
            check_causal_lm(path, role)
    if cfg.reward:
        check_reward_dir(cfg.reward, "reward model")
    if cfg.value_model:
        check_value_start(cfg.value_model)
    if cfg.world:
        world_judge(cfg.world)
    return PPOInputs(rows, ptx, check_reward_sources(cfg), read_environment(cfg, rows.prompts, rows.where))


def load(cfg, inputs: PPOInputs, device):
    """The tokenizer, the four models and the PPO-ptx batches; the prompts checked against them."""
    tokenizer, *models = load_models(cfg, device)
    check_prompts(cfg, tokenizer, inputs.prompts)
    check_trajectory_lengths(cfg, models[0])  # --environment: prompt + a whole trajectory fit the positions
    if models[3] is not None:  # the reward model's own chat template, when it has one
        models[3].check_prompts(inputs.prompts, cfg.prompts)
    ptx = None
    if inputs.ptx:
        truncation = Truncation(256, cfg.truncation)
        ptx = PtxBatches(inputs.ptx, tokenizer, cfg.ptx_batch_size, None, truncation=truncation)
        truncation.report("ppo (ptx data)")
    return tokenizer, *models, ptx


def check_prompts(cfg, tokenizer, prompts: list) -> None:
    """Every prompt renders (a conversation needs a chat template) and fits --max-prompt-length, or is cut (the
    count logged once) or refused (--truncation error) — before the run directory exists."""
    if any(is_conversation(p) for p in prompts):
        require_template(tokenizer)
    truncation = Truncation(cfg.max_prompt_length, cfg.truncation, "max_prompt_length")
    for i, prompt in enumerate(prompts):
        truncation.prompt(prompt_ids(tokenizer, prompt), tokenizer.bos_token_id, f"{cfg.prompts}: prompt {i + 1}")
    truncation.report("ppo")


# ------------------------------------------------------------------------------------- in the run

@dataclass
class PPOModels:
    """What an iteration runs: the policy as sampled and scored, and as trained (`train_policy`: DDP-wrapped with N
    processes, else the same), the frozen reference, the value model likewise (None: RLOO, GRPO), the reward
    sources (`Rewards`, or a bare reward model), one optimizer, the rollout engine and PPO-ptx's batches."""
    tokenizer: object
    policy: torch.nn.Module
    train_policy: torch.nn.Module
    reference: torch.nn.Module
    value_model: torch.nn.Module | None
    train_value_model: torch.nn.Module | None
    rewards: object
    optimizer: torch.optim.Optimizer
    engine: object
    ptx: object = None
    environment: object = None  # --environment: its `EnvironmentSpec` (multi-turn rollouts, train/trajectory.py)


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
    """An iteration's record into metrics.jsonl (every --log-every iterations, and the last) and the bar."""
    if step % run.cfg.log_every == 0 or step == run.cfg.ppo_steps:
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
    print(f"ppo: {cfg.ppo_steps} iterations, {cfg.ppo_steps * cfg.batch_size} episodes; last batch: RM score "
          f"{record['rm_score']:.3f}, KL {record['kl']:.3f}{gold} -> {path}")
    return record


def save_snapshot(run: Run, policy, step: int) -> None:
    """--save-every: the policy after `step` iterations in OUT/checkpoints/step-N (FSDP: gathered whole)."""
    snapshot = run.parallel.gather(policy)  # the full weights, in process 0
    if run.parallel.is_main:
        save_pretrained_atomic(run.dir.path / "checkpoints" / f"step-{step}", snapshot, run.models[0])
