"""PPO, RLOO and GRPO on multi-turn trajectories: `rlhf ppo --environment module:Class --max-turns N` (issue 35).

The trainer's steps are the same (train/ppo.py); only what they read changes:

  1. collect     one trajectory per episode (`engines/multiturn.rollout`): the policy's turns, the environment's
                 tool replies between them, as one token sequence with `Samples.model_mask` on the policy's tokens
  2. measure     log π_θk, log π_SFT and V_φk by one forward pass over the whole trajectory (the policy's tokens
                 are scored in the context of the tool replies before them); r(x, y) at the trajectory's end
  3. rewards     R_t = −β·(log π_θk − log π_SFT) on the policy's tokens only; r(x, y) on the last one; the
                 environment's rewards (get_turn_reward, get_reward) and --turn-reward-fn's on the last token of
                 their turn
  4. advantages  PPO: turn-level GAE (`losses.turn_gae`): environment tokens skipped, V bootstrapped from the next
                 turn's first token; RLOO, GRPO: Σ_t R_t over the whole trajectory, one Â on each policy token
  5. update      every policy, KL and value term averaged over the policy's tokens (`Rollout.mask` is model_mask)

so no loss ever reads an environment token: their log-probs, values and rewards are multiplied by 0 or skipped.
"""

from __future__ import annotations

from rlhfkit.engines.multiturn import Trajectories, rollout
from rlhfkit.environments.interface import EnvironmentSpec, load_environment
from rlhfkit.errors import UserError
from rlhfkit.models.loading import check_lengths
from rlhfkit.rewards.combine import RewardBatch, row_fields
from rlhfkit.rewards.functions import RewardFunction, call_reward_function, load_reward_function
from rlhfkit.train.configs import PPOConfig, samples_per_prompt


def trajectory_budget(cfg: PPOConfig) -> int:
    """Tokens after the prompt per trajectory: --max-trajectory-tokens, or max_turns × max_new_tokens."""
    return cfg.max_trajectory_tokens or cfg.max_turns * cfg.max_new_tokens


def read_environment(cfg: PPOConfig, prompts: list, where: list[str]) -> EnvironmentSpec | None:
    """--environment (and --turn-reward-fn) loaded and checked (one line if not), with the prompts it needs, before
    any model loads."""
    if not cfg.environment:
        return None
    spec = load_environment(cfg.environment)
    for f in cfg.turn_reward_fn:
        load_reward_function(f, "--turn-reward-fn")
    for prompt, name in zip(prompts, where):
        if not isinstance(prompt, list):
            raise UserError(f"{name}: --environment needs conversational prompts (a list of messages), for the chat "
                            "template to render tool calls and tool messages")
    return spec


def check_trajectory_lengths(cfg: PPOConfig, policy) -> None:
    """The prompt and a whole trajectory fit the policy's positions."""
    if cfg.environment:
        check_lengths(cfg.policy, policy.config, max_prompt_length=cfg.max_prompt_length,
                      max_trajectory_tokens=trajectory_budget(cfg))


def collect_trajectories(engine, tokenizer, environment: EnvironmentSpec, prompts: list, cfg: PPOConfig, generator,
                         batch: RewardBatch) -> Trajectories:
    """1. One trajectory per episode (RLOO, GRPO: k per prompt, side by side, as `ppo.collect`); `batch`: each
    episode's dataset row and name (`rows_of`)."""
    prompts = [p for p in prompts for _ in range(samples_per_prompt(cfg))]
    samples = rollout(engine, tokenizer, environment, prompts, batch.rows, batch.where, max_turns=cfg.max_turns,
                      max_tokens=trajectory_budget(cfg), tool_timeout=cfg.tool_timeout,
                      max_new_tokens=cfg.max_new_tokens, max_prompt_length=cfg.max_prompt_length,
                      temperature=cfg.temperature, generator=generator)
    for spec in cfg.turn_reward_fn:
        score_turns(samples, load_reward_function(spec, "--turn-reward-fn"), batch)
    return samples


def score_turns(samples: Trajectories, f: RewardFunction, batch: RewardBatch) -> None:
    """--turn-reward-fn: `f` called once per turn number k = 1, 2, ... on the trajectories that have a k-th turn,
    TRL's signature plus `turn` and `environments`: completions[i] = [that turn's assistant message] (its text and
    tool calls). Each value is added to `samples.turn_rewards` on the turn's last token (None: nothing)."""
    for k in range(max(len(turns) for turns in samples.turns)):
        rows = [i for i, turns in enumerate(samples.turns) if len(turns) > k]
        turns = [[m for m in samples.messages[i] if m["role"] == "assistant"][k] for i in rows]
        fields = row_fields([batch.rows[i] for i in rows], samples.finished[rows].tolist())
        fields |= {"turn": [k + 1] * len(rows), "environments": [samples.environments[i] for i in rows]}
        values = call_reward_function(f, [samples.prompts[i] for i in rows], [[m] for m in turns], fields,
                                      [f"{batch.where[i]}, turn {k + 1}" for i in rows])
        for i, value in zip(rows, values):
            if value is not None:
                samples.turn_rewards[i, samples.turns[i][k][1] - 1] += value


def with_environments(rows_of):
    """`rows_of(samples)` whose rows also carry each trajectory's environment: reward functions receive them as the
    keyword `environments` (TRL's name)."""
    def rows(samples) -> RewardBatch:
        batch = rows_of(samples)
        if isinstance(samples, Trajectories):
            batch.rows = [{**r, "environments": env} for r, env in zip(batch.rows, samples.environments)]
        return batch
    return rows
