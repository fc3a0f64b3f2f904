"""Rankings of trajectories (issue 35, item 5): completions that are message lists — assistant turns with tool calls,
tool results, a final answer — are read, rendered through the chat template with the item's tools, and scored by
the reward model whole, through the last turn's end-of-turn token. The template is Qwen2.5-Instruct's own
(tests/fixtures/chat_templates/qwen2_5.jinja)."""

import json

import pytest

from rlhfkit.data.chat import completion_ids, prompt_ids
from rlhfkit.data.formats import read_preferences
from rlhfkit.data.pairs import preference_groups, rankings_to_pair_records
from rlhfkit.errors import UserError
from rlhfkit.rewards.accuracy import tokenize_groups
from tests.label.trajectories import TOOLS, trajectories
from tests.tokenizers_zoo import build_tokenizer, real_template

USER = {"role": "user", "content": "What is the weather in Paris?"}


@pytest.fixture
def qwen():
    tok = build_tokenizer("chatml")
    tok.chat_template = real_template("qwen2_5")
    return tok


def ranking_file(path, turn_flags=None):
    row = {"id": "w0", "prompt": [USER], "tools": TOOLS, "completions": trajectories("Paris"),
           "ranking": [[0], [1], [2]], "labeler": "ann"}
    if turn_flags is not None:
        row["turn_flags"] = turn_flags
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    return path


def test_the_reward_model_reads_a_trajectory_through_its_last_turn_with_the_tools(qwen, tmp_path):
    kind, records = read_preferences(ranking_file(tmp_path / "r.jsonl"))
    (group,) = tokenize_groups(qwen, preference_groups(kind, records), 4096)
    right = qwen.decode(group["rows"][0], skip_special_tokens=False)
    # The whole conversation as the template renders it (tools in the system turn), ending with the final
    # answer's <|im_end|>: before, the completion was cut at its first stop token, the tool call's <|im_end|>,
    # and the two trajectories that call the tool read the same up to the city.
    full = qwen.apply_chat_template([USER, *trajectories("Paris")[0]], tools=TOOLS, tokenize=False)
    assert right == full.removesuffix("\n")
    assert right.endswith("It is 22 C and sunny in Paris.<|im_end|>") and "<tools>" in right
    assert "<tool_response>\nParis: 22 C, sunny\n</tool_response>" in right


def test_an_unfinished_trajectory_stops_before_its_last_end_of_turn(qwen):
    """(SFT's and DPO's targets still end at the first turn's stop: `whole` is the reward model's reading.)"""
    prompt_tokens = prompt_ids(qwen, [USER])
    done = completion_ids(qwen, [USER], trajectories("Paris")[1], True, prompt_tokens, whole=True)
    cut = completion_ids(qwen, [USER], trajectories("Paris")[1], False, prompt_tokens, whole=True)
    assert cut == done[:-1] and qwen.convert_ids_to_tokens(done[-1]) == "<|im_end|>"
    assert qwen.decode(cut, skip_special_tokens=False).count("<|im_end|>") == 2  # the call's, the tool result's
    first = completion_ids(qwen, [USER], trajectories("Paris")[1], True, prompt_tokens)
    assert first == done[:len(first)] and qwen.decode(first, skip_special_tokens=False).count("<|im_end|>") == 1


def test_flagged_turns_go_with_their_trajectory_into_pairs(tmp_path):
    flag = {"turn": 0, "reason": "wrong city"}
    _, (record,) = read_preferences(ranking_file(tmp_path / "r.jsonl", [[], [flag], []]))
    assert record["turn_flags"] == [[], [flag], []]
    pairs = rankings_to_pair_records([record])
    assert [(p.get("chosen_turn_flags"), p.get("rejected_turn_flags")) for p in pairs] == [
        (None, [flag]), (None, None), ([flag], None)]
    assert all(p["tools"] == TOOLS for p in pairs)


@pytest.mark.parametrize("flags, message", [
    ([[], [{"turn": 3, "reason": "x"}], []],
     "turn_flags[1]: turn 3 does not exist (the trajectory has 3 turns, 0..2)"),
    ([[], []], "field 'turn_flags' has 2 entries for 3 completions"),
    ([[], [{"turn": 0}], []], "turn_flags[1]: each flag must be {turn: an integer, reason: a non-empty text}"),
])
def test_a_ranking_whose_turn_flags_do_not_fit_is_one_line(tmp_path, flags, message):
    with pytest.raises(UserError) as err:
        read_preferences(ranking_file(tmp_path / "r.jsonl", flags))
    assert str(err.value) == f"{tmp_path / 'r.jsonl'}:1: {message}"
