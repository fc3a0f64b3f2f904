"""TRL's dataset formats, detected per file and normalized to our records (data/formats.py)."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlhfkit.data.formats import read_candidates, read_preferences, read_prompts, read_sft, shared_prefix
from rlhfkit.data.pairs import preference_groups
from rlhfkit.data.readers import DataOptions
from rlhfkit.errors import UserError
from rlhfkit.train.common import split_by_prompt

HH = "\n\nHuman: What is a good pet?\n\nAssistant:"


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(UserError) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_hh_style_implicit_prompt_is_split_before_the_first_differing_word(tmp_path):
    path = _jsonl(tmp_path / "hh.jsonl", [
        {"chosen": HH + " A dog is loyal.", "rejected": HH + " A cat, maybe."},
        {"chosen": HH + " Yes, a fish.", "rejected": HH + " Yeah no."},
        {"chosen": HH + " Cats.", "rejected": HH + " Cats. And dogs."}])
    kind, pairs = read_preferences(path)
    assert kind == "pairs"
    # the shared "A" stays in the prompt; the space before the differing word goes to the completions
    assert pairs[0] == {"prompt": HH + " A", "chosen": " dog is loyal.", "rejected": " cat, maybe."}
    # "Ye" is shared, but never split inside a word
    assert pairs[1] == {"prompt": HH, "chosen": " Yes, a fish.", "rejected": " Yeah no."}
    assert pairs[2] == {"prompt": HH, "chosen": " Cats.", "rejected": " Cats. And dogs."}


def test_shared_prefix_keeps_whole_words():
    assert shared_prefix("a b cd", "a b ce") == 3  # "a b" | " cd"
    assert shared_prefix("x\ny", "x\nz") == 2      # a newline is a boundary too; only a space moves


def test_conversational_implicit_prompt_is_everything_before_the_last_assistant_turn(tmp_path):
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
             {"role": "user", "content": "Pet?"}]
    path = _jsonl(tmp_path / "c.jsonl", [
        {"chosen": turns + [{"role": "assistant", "content": "Dog"}],
         "rejected": turns + [{"role": "assistant", "content": "Rock"}]}])
    assert read_preferences(path)[1] == [{"prompt": turns, "chosen": [{"role": "assistant", "content": "Dog"}],
                                          "rejected": [{"role": "assistant", "content": "Rock"}]}]
    bad = _jsonl(tmp_path / "b.jsonl", [{"chosen": turns + [{"role": "assistant", "content": "Dog"}],
                                         "rejected": turns[:1] + [{"role": "assistant", "content": "Rock"}]}])
    assert "b.jsonl:1: chosen and rejected differ before their last assistant turn" in _one_line_error(
        read_preferences, bad)


def test_ultrafeedback_style_scores_become_a_ranking_with_a_tie(tmp_path):
    path = _jsonl(tmp_path / "uf.jsonl", [{"prompt": "p", "completions": ["a", "b", "c", "d"],
                                           "scores": [3.5, 9, 3.5, 1]}])
    kind, records = read_preferences(path)
    assert kind == "rankings"
    assert records[0]["ranking"] == [[1], [0, 2], [3]] and records[0]["id"] == "1"
    assert preference_groups(kind, records)[0]["pairs"] == [(1, 0), (1, 2), (1, 3), (0, 3), (2, 3)]


@pytest.mark.parametrize("row, expected", [
    ({"prompt": "p", "completions": ["a", "b"], "scores": [1]}, "uf.jsonl:1: field 'scores' has 1 scores for 2"),
    ({"prompt": "p", "completions": ["a", "b"], "scores": [1, True]}, "uf.jsonl:1: score True is not a finite"),
])
def test_bad_scores_are_one_line(row, expected, tmp_path):
    assert expected in _one_line_error(read_preferences, _jsonl(tmp_path / "uf.jsonl", [row]))


def test_conversational_preference_parquet_gives_conversation_pairs(tmp_path):
    rows = [{"prompt": [{"role": "user", "content": f"q{i}"}], "chosen": [{"role": "assistant", "content": "y"}],
             "rejected": [{"role": "assistant", "content": "n"}]} for i in range(3)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    kind, pairs = read_preferences(tmp_path / "p.parquet")
    assert kind == "pairs" and pairs == rows
    groups = preference_groups(kind, pairs)
    assert groups[0]["completions"] == [rows[0]["chosen"], rows[0]["rejected"]] and groups[0]["pairs"] == [(0, 1)]


def test_a_row_of_another_format_names_both(tmp_path):
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b", "completion": None},
            {"prompt": "p", "chosen": None, "rejected": None, "completion": "a"}]  # Arrow fills absent cells: null
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "m.parquet")
    assert "m.parquet:row 2: missing field 'chosen': this row is prompt-completion, the file is preference" in (
        _one_line_error(read_preferences, tmp_path / "m.parquet"))
    path = _jsonl(tmp_path / "m.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"},
                                         {"id": 1, "prompt": "p", "completions": ["a", "b"], "ranking": [[0], [1]],
                                          "chosen": "a", "rejected": "b"}])
    assert "m.jsonl:2: a rankings row: this row is rankings, the file is preference" in _one_line_error(
        read_preferences, path)


def test_unpaired_preference_is_refused_by_rm_with_a_reason(tmp_path):
    path = _jsonl(tmp_path / "kto.jsonl", [{"prompt": "p", "completion": "a", "label": True}])
    message = _one_line_error(read_preferences, path, command="rm")
    assert "kto.jsonl: unpaired preference data (prompt, completion, label): rm trains on comparisons" in message


def test_pairs_whose_chosen_equals_rejected_are_dropped_with_a_count(tmp_path, capsys):
    path = _jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "a"},
                                         {"prompt": "q", "chosen": "a", "rejected": "b"},
                                         {"prompt": "r", "chosen": "c", "rejected": "c"}])
    assert read_preferences(path, command="dpo")[1] == [{"prompt": "q", "chosen": "a", "rejected": "b"}]
    assert f"dpo: dropped 2 pairs whose chosen equals rejected ({path})" in capsys.readouterr().err
    hh = _jsonl(tmp_path / "hh.jsonl", [{"chosen": HH + " same", "rejected": HH + " same"},
                                        {"chosen": HH + " Dog.", "rejected": HH + " Cat."}])
    assert read_preferences(hh)[1] == [{"prompt": HH, "chosen": " Dog.", "rejected": " Cat."}]
    assert f"rm: dropped 1 pairs whose chosen equals rejected ({hh})" in capsys.readouterr().err
    only = _jsonl(tmp_path / "o.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "a"}])
    assert "o.jsonl: no usable pair: in all 1 pairs chosen equals rejected" in _one_line_error(read_preferences, only)


@pytest.mark.parametrize("row, expected", [
    ({"prompt": [{"role": "bot", "content": "x"}], "chosen": "a", "rejected": "b"},
     "c.jsonl:1: prompt[0]: role 'bot' is not one of system, user, assistant, tool"),
    ({"prompt": [{"role": "user", "content": 3}], "chosen": "a", "rejected": "b"},
     "c.jsonl:1: prompt[0]: content must be a string, got a number"),
    ({"prompt": [], "chosen": "a", "rejected": "b"}, "c.jsonl:1: field 'prompt' must be a non-empty list"),
    ({"prompt": "p", "chosen": [{"role": "assistant", "content": "a"}], "rejected": "b"},
     "c.jsonl:1: field 'chosen' is a conversation but the prompt is a string"),
    ({"prompt": [{"role": "user", "content": "p"}], "chosen": [{"role": "user", "content": "a"}], "rejected": "b"},
     "c.jsonl:1: field 'chosen' must start with an assistant message"),
    ({"question": "p"}, "c.jsonl:1: no known format has the keys ['question']"),
])
def test_conversations_are_validated_row_by_row(row, expected, tmp_path):
    assert expected in _one_line_error(read_preferences, _jsonl(tmp_path / "c.jsonl", [row]))


def test_sft_reads_prompt_completion_text_and_messages(tmp_path):
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert read_sft(_jsonl(tmp_path / "a.jsonl", [{"prompt": "p", "completion": "c"}])) == [
        {"prompt": "p", "completion": "c"}]
    assert read_sft(_jsonl(tmp_path / "b.jsonl", [{"text": "all of it"}])) == [{"text": "all of it"}]
    assert read_sft(_jsonl(tmp_path / "c.jsonl", [{"messages": msgs}])) == [{"messages": msgs}]
    conv = [{"prompt": msgs[:1], "completion": msgs[1:]}]
    assert read_sft(_jsonl(tmp_path / "d.jsonl", conv)) == conv
    assert "e.jsonl: a preference file; sft trains on prompt-completion" in _one_line_error(
        read_sft, _jsonl(tmp_path / "e.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}]))
    assert "f.jsonl:1: field 'messages' has no assistant turn" in _one_line_error(
        read_sft, _jsonl(tmp_path / "f.jsonl", [{"messages": msgs[:1]}]))


def test_prompts_come_from_any_format_with_a_prompt_each_once(tmp_path):
    conv = [{"role": "user", "content": "hi"}]
    ranked = _jsonl(tmp_path / "r.jsonl", [
        {"id": "x", "prompt": "p", "completions": ["a", "b"], "ranking": [[0], [1]], "labeler": "l1"},
        {"id": "x", "prompt": "p", "completions": ["a", "b"], "ranking": [[1], [0]], "labeler": "l2"},
        {"id": "y", "prompt": conv, "completions": ["a", "b"], "ranking": [[1], [0]]}])
    assert read_prompts(ranked) == [{"prompt": "p", "id": "x"}, {"prompt": conv, "id": "y"}]
    plain = _jsonl(tmp_path / "p.jsonl", [{"id": 1, "prompt": "p", "task": "t", "source": "web"}, {"prompt": "p"}])
    assert read_prompts(plain) == [{"prompt": "p", "id": "1", "task": "t", "extra": {"source": "web"}},
                                   {"prompt": "p"}]
    hh = _jsonl(tmp_path / "hh.jsonl", [{"chosen": HH + " Dog.", "rejected": HH + " Cat."}])
    assert read_prompts(hh) == [{"prompt": HH}]
    assert "t.jsonl: a language modeling file (text) has no prompts" in _one_line_error(
        read_prompts, _jsonl(tmp_path / "t.jsonl", [{"text": "x"}]))


def test_candidates_keep_a_conversation_prompt_as_a_list(tmp_path):
    conv = [{"role": "user", "content": "hi"}]
    path = _jsonl(tmp_path / "c.jsonl", [{"id": "1", "prompt": conv, "completions": [
        {"text": "a", "source": "m@1.0"}, {"text": "b", "source": "m@1.0", "finished": False}]}])
    kind, rows = read_candidates(path)
    assert kind == "candidates" and rows[0][1]["prompt"] == conv and rows[0][1]["completions"][1]["finished"] is False


def test_options_split_and_field_reach_the_reader(tmp_path):
    pq.write_table(pa.Table.from_pylist([{"q": "p", "good": "a", "bad": "b"}]), tmp_path / "x.parquet")
    opts = DataOptions(field=["prompt=q", "chosen=good", "rejected=bad"])
    assert read_preferences(tmp_path / "x.parquet", opts)[1] == [{"prompt": "p", "chosen": "a", "rejected": "b"}]


def test_text_and_messages_records_split_by_their_text_like_prompts(tmp_path):
    records = read_sft(_jsonl(tmp_path / "t.jsonl", [{"text": f"line {i}"} for i in range(40)]))
    train, held = split_by_prompt(records, 0.25, 0, "sft-eval")
    assert train and held and len(train) + len(held) == 40


def _ultrafeedback_row(i: int, prompt=None) -> dict:
    """A row of HuggingFaceH4/ultrafeedback_binarized: a string prompt, chosen/rejected as the whole conversation."""
    question = f"How many legs has animal {i}?"
    good, bad = [{"role": "user", "content": question}, {"role": "assistant", "content": "Four legs."}], \
        [{"role": "user", "content": question}, {"role": "assistant", "content": "Blue."}]
    return {"prompt": question if prompt is None else prompt, "prompt_id": f"{i:064x}", "chosen": good,
            "rejected": bad, "messages": good, "score_chosen": 8.5, "score_rejected": 2.0}


def test_ultrafeedback_binarized_rows_are_pairs_after_their_shared_prompt(tmp_path):
    pq.write_table(pa.Table.from_pylist([_ultrafeedback_row(i) for i in range(3)]), tmp_path / "uf.parquet")
    kind, pairs = read_preferences(tmp_path / "uf.parquet")
    assert kind == "pairs" and len(pairs) == 3
    assert pairs[0] == {"prompt": [{"role": "user", "content": "How many legs has animal 0?"}],
                        "chosen": [{"role": "assistant", "content": "Four legs."}],
                        "rejected": [{"role": "assistant", "content": "Blue."}]}
    # as prompts (PPO, sample): the conversation, so that the chat template renders it as the RM saw it
    assert read_prompts(tmp_path / "uf.parquet")[0]["prompt"] == pairs[0]["prompt"]


def test_an_explicit_message_prompt_equal_to_the_shared_prefix_is_accepted(tmp_path):
    row = _ultrafeedback_row(0)
    system = {"role": "system", "content": "Be brief."}
    row.update(prompt=[system, row["chosen"][0]], chosen=[system, *row["chosen"]], rejected=[system, *row["rejected"]])
    pairs = read_preferences(_jsonl(tmp_path / "p.jsonl", [row]))[1]
    assert pairs[0]["prompt"] == [system, row["chosen"][1]] and pairs[0]["chosen"] == [row["chosen"][2]]


@pytest.mark.parametrize("prompt", ["How many legs has a bird?",
                                    [{"role": "user", "content": "How many legs has a bird?"}],
                                    [{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": "How many legs has animal 0?"}]])
def test_a_prompt_that_disagrees_with_the_conversations_is_one_line_naming_the_row(prompt, tmp_path):
    rows = [_ultrafeedback_row(0), _ultrafeedback_row(1, prompt=prompt)]
    message = _one_line_error(read_preferences, _jsonl(tmp_path / "p.jsonl", rows))
    assert message.startswith(f"{tmp_path / 'p.jsonl'}:2: field 'prompt' is not")
