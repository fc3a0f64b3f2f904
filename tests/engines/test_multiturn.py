"""Multi-turn rollouts (engines/multiturn.py): a tiny Qwen2 with Qwen2.5-Instruct's chat template, trained to look two
keys up and answer (tests/trajectories_zoo.py), against the scripted environment `Lookup` — the trajectory's tokens
and masks are the template's rendering of the conversation, cut by hand into the policy's and the environment's."""

import pytest
import torch

from rlhfkit.data.chat import encode_text, render_text
from rlhfkit.engines.hf import HFEngine
from rlhfkit.engines.multiturn import rollout, trajectory_metrics
from rlhfkit.environments import load_environment
from rlhfkit.models.loading import load_causal_lm, load_tokenizer
from tests.trajectories_zoo import ANSWER, CONVERSATION, PROMPT, Stalling, call, trained_policy, with_tools

LOOKUP = "tests.trajectories_zoo:Lookup"


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    path = trained_policy(tmp_path_factory)
    tokenizer = load_tokenizer(path)
    return tokenizer, load_causal_lm(path, tokenizer)


def run(qwen, prompts, environment=LOOKUP, **options):
    tokenizer, model = qwen
    settings = dict(max_turns=4, max_tokens=300, tool_timeout=5.0, max_new_tokens=100, greedy=True) | options
    return rollout(HFEngine(model, tokenizer), tokenizer, load_environment(environment), prompts,
                   [{"id": f"r{i + 1}"} for i in range(len(prompts))],
                   [f"prompts.jsonl: prompt {i + 1}" for i in range(len(prompts))], **settings)


def reply(value: str) -> str:
    """What Qwen2.5's template writes after an assistant turn's <|im_end|> for one tool message, through the next
    generation prompt: the tool message is a user turn holding <tool_response>."""
    return f"\n<|im_start|>user\n<tool_response>\n{value}\n</tool_response><|im_end|>\n<|im_start|>assistant\n"


def test_three_turns_against_a_scripted_environment_have_the_masks_computed_by_hand(qwen):
    tokenizer, _ = qwen
    s = run(qwen, [PROMPT])
    prompt = render_text(tokenizer, with_tools(PROMPT), True, with_tools(PROMPT).tools)
    # The trajectory by hand: the policy's three turns (each through its <|im_end|>, where generation stops), the
    # environment's two replies between them.
    pieces = [(call("a") + "<|im_end|>", 1), (reply("7"), 0), (call("b") + "<|im_end|>", 1), (reply("9"), 0),
              (ANSWER + "<|im_end|>", 1)]
    full = render_text(tokenizer, with_tools(CONVERSATION), False, with_tools(PROMPT).tools)
    assert prompt + "".join(text for text, _ in pieces) + "\n" == full  # the pieces are the template's rendering
    ids, model_mask, turns = [], [], []
    for text, policy in pieces:
        piece = encode_text(tokenizer, text)
        if policy:
            turns.append((len(ids), len(ids) + len(piece)))
        ids, model_mask = ids + piece, model_mask + [policy] * len(piece)
    assert s.prompt_ids[0].tolist() == encode_text(tokenizer, prompt)
    assert s.response_ids[0].tolist() == ids
    assert encode_text(tokenizer, full)[:len(s.input_ids[0])] == s.input_ids[0].tolist()
    assert s.model_mask[0].tolist() == model_mask and 0 in model_mask
    assert s.response_mask[0].tolist() == [1] * len(ids)
    assert s.turns == [turns] and s.finished.tolist() == [True] and s.texts == [ANSWER]
    # Rewards on the last token of each turn: 0.5 per turn after a lookup (get_turn_reward), 1 at the end.
    expected = torch.zeros(1, len(ids))
    expected[0, turns[0][1] - 1], expected[0, turns[1][1] - 1], expected[0, turns[2][1] - 1] = 0.5, 0.5, 0.5 + 1.0
    assert torch.equal(s.turn_rewards, expected)
    assert s.messages == [[
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "lookup", "arguments": {"key": "a"}}}]},
        {"role": "tool", "name": "lookup", "content": "7"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "lookup", "arguments": {"key": "b"}}}]},
        {"role": "tool", "name": "lookup", "content": "9"},
        {"role": "assistant", "content": ANSWER}]]
    assert s.environments[0].row == {"prompt": PROMPT, "id": "r1"}  # reset(**row), TRL's convention
    assert s.environments[0].looked_up == ["a", "b"]
    assert trajectory_metrics(s)["turns"] == 3 and trajectory_metrics(s)["tool_calls"] == 2


def test_a_trajectory_in_a_batch_is_the_trajectory_alone(qwen):
    """Another prompt ends sooner: padding (prompts on the left, trajectories on the right) changes nothing."""
    alone = run(qwen, [PROMPT])
    batch = run(qwen, [[{"role": "user", "content": "Hello"}], PROMPT])
    n = alone.response_mask.shape[1]
    assert batch.response_ids[1, :n].tolist() == alone.response_ids[0].tolist()
    assert batch.model_mask[1].tolist() == alone.model_mask[0].tolist() + [0] * (batch.model_mask.shape[1] - n)
    assert batch.turns[1] == alone.turns[0] and batch.texts[1] == alone.texts[0]
    assert len(batch.turns[0]) < 3


def test_max_turns_and_the_token_budget_end_a_trajectory_unfinished(qwen):
    two = run(qwen, [PROMPT], max_turns=2)  # the second turn's call is left unanswered
    assert len(two.turns[0]) == 2 and two.finished.tolist() == [False]
    assert two.model_mask[0].tolist()[-1] == 1  # it ends with the policy's turn, no reply after it
    short = run(qwen, [PROMPT], max_tokens=150)  # no room for the second reply and a turn after it
    assert short.response_mask.sum().item() <= 150 and short.finished.tolist() == [False]
    assert len(short.turns[0]) == 2


def test_a_tool_that_raises_becomes_a_tool_message_and_the_trajectory_goes_on(qwen):
    tokenizer, _ = qwen
    s = run(qwen, [PROMPT], "tests.trajectories_zoo:Raising")
    assert s.messages[0][1] == {"role": "tool", "name": "lookup", "content": "error: KeyError: 'no such key: a'"}
    first_reply = s.response_ids[0, s.turns[0][0][1]:s.turns[0][1][0]]
    assert tokenizer.decode(first_reply) == reply("error: KeyError: 'no such key: a'")
    assert len(s.turns[0]) >= 2 and s.tool_errors >= 1


def test_a_tool_that_times_out_becomes_a_tool_message(qwen):
    Stalling.release.clear()
    try:
        s = run(qwen, [PROMPT], "tests.trajectories_zoo:Stalling", tool_timeout=0.05)
    finally:
        Stalling.release.set()
    timed_out = "error: tool lookup timed out after 0.05 s"
    assert s.messages[0][1] == {"role": "tool", "name": "lookup", "content": timed_out}
    assert len(s.turns[0]) >= 2
