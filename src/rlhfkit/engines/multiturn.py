"""Multi-turn rollouts: the policy's turns and an environment's replies as one token sequence (issue 35;
docs/design.md §10 "a trajectory is one token sequence with masks").

    [ prompt | turn 1 (policy) | tool reply (environment) | turn 2 (policy) | ... | turn k (policy) | padding ]
      response_mask  1 on every real token after the prompt: what the model attends to
      model_mask     1 on the policy's tokens only: what the losses read (Samples.model_mask)

A batch of trajectories, with any engine's `generate` (hf, vllm):
  0. reset    one environment per trajectory (`environments/`), `reset(prompt=..., **row)`; a text it returns is
              appended to the prompt's last message, and its tools' schemas join the prompt's tools, so the chat
              template shows them to the model.
  1. turn     the engine continues each open trajectory's exact ids (`data.chat.TokenIds`: nothing is rendered
              again) until a stop id (EOS, the template's end of turn) or the trajectory's token budget.
  2. reply    the turn's tool calls (`environments/calls.py`) run on the environment (`call_tool`: errors, unknown
              tools and timeouts are answers too); the chat template renders the tool messages, and the ids it
              writes after the turn's end-of-turn token, up to the next generation prompt, are the environment's.
              A turn without a call is an answer: the trajectory ends, finished.
  3. repeat   until --max-turns turns, or the budget (--max-trajectory-tokens, every token after the prompt) is
              spent: such a trajectory is not finished (the missing-EOS penalty applies, as to a cut response).

Rewards of the environment (`get_turn_reward` after each turn, `get_reward` at the end) sit on the last token of
their turn (`Trajectories.turn_rewards`); the reward model and reward functions score the trajectory at its end,
as they score a response. `texts` holds each trajectory's last turn (what a judge of the final answer reads);
`messages` the whole conversation after the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rlhfkit.data.chat import TokenIds, encode_text, end_of_turn_id, render_text
from rlhfkit.data.collate import pad_left, pad_right
from rlhfkit.data.schemas import Conversation, tools_of
from rlhfkit.environments.calls import ToolCall, answer_content, parse_tool_calls
from rlhfkit.environments.interface import EnvironmentSpec, call_tool, read_reward, reset, tool_message
from rlhfkit.errors import UserError
from rlhfkit.generation import Samples, decode_responses, prompt_rows


@dataclass
class Trajectories(Samples):
    """`Samples` whose responses are whole trajectories (module docstring)."""
    turn_rewards: torch.Tensor | None = None               # [B, R] the environment's rewards, at turns' last tokens
    turns: list = field(default_factory=list)             # per trajectory: (start, end) of each policy turn in the
    #                                                       response, end exclusive
    messages: list = field(default_factory=list)          # per trajectory: the messages after the prompt
    environments: list = field(default_factory=list)      # per trajectory: its environment, as the run left it
    tool_calls: int = 0
    tool_errors: int = 0


@dataclass
class Trajectory:
    """One trajectory while it runs."""
    prompt: Conversation
    prompt_ids: list[int]
    env: object
    where: str
    ids: list[int] = field(default_factory=list)          # everything after the prompt
    model: list[int] = field(default_factory=list)        # 1 on the policy's tokens
    turns: list[tuple[int, int]] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)    # as recorded: assistant turns with their tool calls
    history: list[dict] = field(default_factory=list)     # as rendered: each turn's text as the policy wrote it
    rewards: list[tuple[int, float]] = field(default_factory=list)
    text: str = ""
    finished: bool = False
    done: bool = False


def start(spec: EnvironmentSpec, tokenizer, prompt, row: dict, where: str, max_prompt_length: int | None
          ) -> Trajectory:
    """0. A fresh environment, reset on the row; the prompt with its observation and the environment's tools."""
    if not isinstance(prompt, list):
        raise UserError(f"{where}: --environment needs conversational prompts (a list of messages), for the chat "
                        "template to render tool calls and tool messages")
    env = spec.make()
    observation = reset(spec, env, {"prompt": prompt, **row}, where)
    messages = [dict(m) for m in prompt]
    if observation:
        messages[-1] = {**messages[-1], "content": messages[-1]["content"] + observation}
    tools = list(spec.schemas) + [t for t in tools_of(prompt) or [] if t not in spec.schemas]
    conversation = Conversation(messages, tools=tools or None)
    return Trajectory(conversation, prompt_rows(tokenizer, [conversation], max_prompt_length)[0], env, where)


def reply_ids(tokenizer, history: list[dict], replies: list[dict], tools: list[dict] | None) -> list[int]:
    """2. The environment's ids: what the chat template writes after the assistant turn's end-of-turn token when
    the tool messages `replies` follow it, through the next generation prompt. Qwen2.5:
    "\\n<|im_start|>user\\n<tool_response>\\n...\\n</tool_response><|im_end|>\\n<|im_start|>assistant\\n"."""
    before = render_text(tokenizer, history, False, tools)
    after = render_text(tokenizer, history + replies, True, tools)
    if not after.startswith(before):
        raise UserError(f"{tokenizer.name_or_path}: the chat template is not prefix-stable: a conversation with tool "
                        "messages does not start with its rendering without them")
    end = end_of_turn_id(tokenizer)
    end = tokenizer.eos_token if end is None else tokenizer.convert_ids_to_tokens(end)
    cut = before.rfind(end) if end else -1
    return encode_text(tokenizer, after[cut + len(end) if cut >= 0 else len(before):])


def answer_calls(spec: EnvironmentSpec, t: Trajectory, calls: list[ToolCall], timeout: float) -> list[dict]:
    """The tool messages answering a turn's calls, in order (a call that could not be read: its error)."""
    replies = []
    for call in calls:
        content = call.error or call_tool(t.env, call.name, call.arguments, timeout)[0]
        replies.append(tool_message(call.name, content))
    return replies


def take_turn(spec: EnvironmentSpec, tokenizer, t: Trajectory, tokens: list[int], ended: bool, text: str,
              last: bool, max_tokens: int, timeout: float) -> tuple[int, int]:
    """1–2 for one trajectory: its turn's tokens in, then the environment's reply (or the end). Returns (tool calls,
    tool errors) of the turn."""
    t.turns.append((len(t.ids), len(t.ids) + len(tokens)))
    t.ids, t.model, t.text = t.ids + tokens, t.model + [1] * len(tokens), text
    calls = parse_tool_calls(text) if ended else []
    t.messages.append({"role": "assistant", "content": answer_content(text),
                       **({"tool_calls": [c.as_message_part() for c in calls if c.error is None]} if calls else {})})
    t.history.append({"role": "assistant", "content": text})
    errors = 0
    if not ended or not calls or last:  # cut by the budget; an answer (finished); calls left unanswered
        t.done, t.finished = True, ended and not calls
    else:
        replies = answer_calls(spec, t, calls, timeout)
        errors = sum(r["content"].startswith("error: ") for r in replies)
        reply = reply_ids(tokenizer, t.history, replies, tools_of(t.prompt))
        if len(t.ids) + len(reply) >= max_tokens:  # no room for the reply and a turn after it
            t.done = True
        else:
            t.messages, t.history = t.messages + replies, t.history + replies
            t.ids, t.model = t.ids + reply, t.model + [0] * len(reply)
    reward = read_reward(spec, t.env, "get_turn_reward", t.where)
    if reward is not None:
        t.rewards.append((t.turns[-1][1] - 1, reward))
    return len(calls), errors


def rollout(engine, tokenizer, spec: EnvironmentSpec, prompts: list, rows: list[dict], where: list[str], *,
            max_turns: int, max_tokens: int, tool_timeout: float, max_new_tokens: int,
            max_prompt_length: int | None = None, **sampling) -> Trajectories:
    """A batch of trajectories (module docstring): one per prompt, `rows[i]` its dataset row (reset's keywords),
    `where[i]` its name in errors. `max_tokens`: each trajectory's budget of tokens after the prompt;
    `max_new_tokens`: a turn's; `sampling`: the engine's other options (temperature, generator, ...)."""
    trajectories = [start(spec, tokenizer, p, r, w, max_prompt_length) for p, r, w in zip(prompts, rows, where)]
    calls = errors = 0
    for turn in range(max_turns):
        active = [t for t in trajectories if not t.done]
        if not active:
            break
        room = [max_tokens - len(t.ids) for t in active]
        s = engine.generate([TokenIds(t.prompt_ids + t.ids) for t in active],
                            max_new_tokens=min(max_new_tokens, max(room)), **sampling)
        for j, t in enumerate(active):
            real = [i for i, m in zip(s.response_ids[j].tolist(), s.response_mask[j].tolist()) if m]
            tokens, text = real[:room[j]], s.texts[j]
            if len(tokens) < len(real):  # cut by this trajectory's budget
                text = decode_responses(tokenizer, torch.tensor([tokens]), torch.ones(1, len(tokens)), set())[0]
            n_calls, n_errors = take_turn(spec, tokenizer, t, tokens, bool(s.finished[j]) and tokens == real, text,
                                          turn == max_turns - 1, max_tokens, tool_timeout)
            calls, errors = calls + n_calls, errors + n_errors
    for t in trajectories:
        reward = read_reward(spec, t.env, "get_reward", t.where)
        if reward is not None:
            t.rewards.append((t.turns[-1][1] - 1, reward))
    return trajectories_of(engine, tokenizer, trajectories, calls, errors)


def trajectories_of(engine, tokenizer, trajectories: list[Trajectory], calls: int, errors: int) -> Trajectories:
    """The trajectories as tensors: prompts left-padded, trajectories right-padded (`Samples`' layout)."""
    device, pad = engine.device, tokenizer.pad_token_id
    width = max(len(t.ids) for t in trajectories)
    turn_rewards = torch.zeros(len(trajectories), width)
    for row, t in enumerate(trajectories):
        for position, value in t.rewards:
            turn_rewards[row, position] += value
    return Trajectories(
        prompt_ids=pad_left([t.prompt_ids for t in trajectories], pad).to(device),
        prompt_mask=pad_left([[1] * len(t.prompt_ids) for t in trajectories], 0).to(device),
        response_ids=pad_right([t.ids for t in trajectories], pad).to(device),
        response_mask=pad_right([[1] * len(t.ids) for t in trajectories], 0).to(device),
        finished=torch.tensor([t.finished for t in trajectories], device=device),
        texts=[t.text for t in trajectories], prompts=[t.prompt for t in trajectories],
        model_mask=pad_right([t.model for t in trajectories], 0).to(device),
        turn_rewards=turn_rewards.to(device), turns=[t.turns for t in trajectories],
        messages=[t.messages for t in trajectories], environments=[t.env for t in trajectories],
        tool_calls=calls, tool_errors=errors)


def trajectory_metrics(samples: Trajectories) -> dict:
    """What to log about a batch of trajectories: turns, tool calls and errors per trajectory, the environment's
    reward per trajectory, and the share of each trajectory's tokens the environment wrote."""
    n = len(samples.turns)
    real, model = samples.response_mask.sum(-1).float(), samples.model_mask.sum(-1).float()
    return {"turns": sum(len(t) for t in samples.turns) / n, "tool_calls": samples.tool_calls / n,
            "tool_errors": samples.tool_errors / n, "env_reward": samples.turn_rewards.sum(-1).mean().item(),
            "env_token_share": ((real - model) / real.clamp(min=1)).mean().item()}

