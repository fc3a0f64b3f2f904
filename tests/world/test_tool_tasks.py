"""The tool world (rlhfkit/world/tools.py, issue 35 item 4): arithmetic a tiny model cannot do in its head but can
with a calculator. Its gold reward by hand, its environment through the environment interface PPO loads, its chat
template through the readers and the rollout's pieces, its demonstrations' masks by hand, and its build."""

import importlib.util
import json
import random
from pathlib import Path

import pytest

from rlhfkit.data.chat import conversation_ids, render_text
from rlhfkit.data.formats import read_prompts, read_sft
from rlhfkit.engines.multiturn import reply_ids
from rlhfkit.environments import call_tool, load_environment, tool_message
from rlhfkit.environments.calls import parse_tool_calls
from rlhfkit.world.build import world_words
from rlhfkit.world.tool_build import build_tool_world
from rlhfkit.world.tools import (
    TEMPLATES,
    Sum,
    call_message,
    correct_answer,
    expert_messages,
    final_answer,
    parse_sum,
    sample_sum,
    tool_gold,
    tool_schemas,
    tool_tokenizer,
    tool_words,
)

PROMPT = "what is 47 plus 38 ?"
CALL_TEXT = '<tool_call> { "name" : "add" , "arguments" : { "a" : 47 , "b" : 38 } } </tool_call>'


@pytest.fixture(scope="module")
def tok():
    return tool_tokenizer()


def test_every_template_parses_back_to_its_task():
    rng = random.Random(0)
    for _ in range(200):
        task, prompt = sample_sum(rng)
        assert parse_sum(prompt) == task and 0 <= task.answer <= 198
    assert parse_sum(PROMPT) == Sum(47, "plus", 38) and Sum(47, "plus", 38).answer == 85
    assert parse_sum("what is 47 times 38 ?") is None and parse_sum("list three animals .") is None
    assert len(TEMPLATES) == 3


@pytest.mark.parametrize("answer, finished, total, correctness", [
    ("85", True, 2.0, 1.0),                  # 2·1 + 0 + 0
    ("the answer is 85", True, 1.7, 1.0),    # 2·1 − 0.1·3 (three words beyond the ideal one)
    ("84", True, 0.0, 0.0),                  # wrong: no credit
    ("85", False, 1.0, 1.0),                 # 2·1 − 1 (never ended)
    ("85 86", True, 0.9, 0.5),               # a second number: half credit, 2·0.5 − 0.1
    ("86 85", True, -0.1, 0.0),              # the first number said is the answer
])
def test_gold_scores_the_final_answer_by_hand(answer, finished, total, correctness):
    gold = tool_gold([{"role": "user", "content": PROMPT}], answer, finished)
    assert (gold.total, gold.correctness) == (total, correctness)


def test_the_final_answer_is_what_follows_the_last_tool_response():
    text = f"{CALL_TEXT} <eos> <tool_response> 85 </tool_response> it is 85 <eos>"
    assert final_answer(text).split() == ["it", "is", "85"]
    assert final_answer("85").split() == ["85"]


def test_the_reward_function_ppo_trains_on():
    prompts = [[{"role": "user", "content": PROMPT}]] * 3 + [[{"role": "user", "content": "hello"}]]
    assert correct_answer(prompts, ["85", "84", "85 86", "85"]) == [1.0, 0.0, 0.5, 0.0]


def test_the_calculator_loads_as_an_environment_and_answers_its_calls():
    spec = load_environment("rlhfkit.world.tools:Calculator")
    assert spec.tools == ("add", "subtract") and spec.rewards == ()
    assert [s["function"]["name"] for s in spec.schemas] == ["add", "subtract"]
    assert spec.schemas[0]["function"]["parameters"]["properties"]["a"]["type"] == "integer"
    env = spec.make()
    assert env.reset(prompt=[{"role": "user", "content": PROMPT}], id="x") is None
    assert call_tool(env, "add", {"a": 47, "b": 38}, 5.0) == ("85", False)
    assert call_tool(env, "subtract", {"a": 47, "b": 38}, 5.0) == ("9", False)
    assert call_tool(env, "multiply", {"a": 4, "b": 3}, 5.0)[1] is True  # an error the model reads, not a crash


def test_the_template_writes_a_call_the_tool_call_reader_reads(tok):
    messages = [{"role": "user", "content": PROMPT}, call_message("add", 47, 38)]
    text = render_text(tok, messages, False, tool_schemas())
    assert text == f"tools : add subtract . {PROMPT} {CALL_TEXT} <eos>"
    assert tok.unk_token_id not in tok(text)["input_ids"]  # every word is in the vocabulary
    turn = text[len(render_text(tok, messages[:1], True, tool_schemas())):].replace("<eos>", "")
    (call,) = parse_tool_calls(turn)
    assert (call.name, call.arguments, call.error) == ("add", {"a": 47, "b": 38}, None)


def test_the_environment_writes_the_tool_response_and_nothing_of_the_models(tok):
    """What the rollout appends after a call turn (engines/multiturn.reply_ids): the tool message alone."""
    history = [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": CALL_TEXT}]
    ids = reply_ids(tok, history, [tool_message("add", "85")], tool_schemas())
    assert tok.convert_ids_to_tokens(ids) == ["<tool_response>", "85", "</tool_response>"]


def test_sft_on_a_demonstration_trains_on_the_call_and_the_answer_only(tok, tmp_path):
    messages = [{"role": "user", "content": PROMPT}, call_message("add", 47, 38),
                {"role": "tool", "content": "85"}, {"role": "assistant", "content": "it is 85"}]
    data = tmp_path / "demos.jsonl"
    data.write_text(json.dumps({"messages": messages, "tools": tool_schemas()}) + "\n", encoding="utf-8")
    ids, mask = conversation_ids(tok, read_sft(data)[0]["messages"])
    words = tok.convert_ids_to_tokens(ids)
    by_hand = ([(w, 0) for w in f"tools : add subtract . {PROMPT}".split()]
               + [(w, 1) for w in CALL_TEXT.split() + ["<eos>"]]
               + [(w, 0) for w in ["<tool_response>", "85", "</tool_response>"]]
               + [(w, 1) for w in ["it", "is", "85", "<eos>"]])
    assert list(zip(words, mask)) == by_hand


def test_the_experts_mistakes_come_in_their_shares():
    rng = random.Random(0)
    kinds = {"no tool": 0, "right": 0, "wrong call": 0}
    for _ in range(4000):
        task, prompt = sample_sum(rng)
        messages = expert_messages(task, prompt, rng)
        if len(messages) == 2:
            kinds["no tool"] += 1
            guess = int(messages[1]["content"].split()[-1])
            near = abs(guess - task.answer) in (1, 2, 10)  # a near miss, or the end of 0..198 it was clamped to
            assert near or guess in (0, 198)
            continue
        call = messages[1]["tool_calls"][0]["function"]
        right = (call["name"], call["arguments"]) == (task.tool, {"a": task.a, "b": task.b})
        kinds["right" if right else "wrong call"] += 1
        assert messages[3]["content"].split()[-1] == messages[2]["content"]  # the result, copied
    assert 0.13 < kinds["no tool"] / 4000 < 0.17 and 0.13 < kinds["wrong call"] / 4000 < 0.17


def test_the_tool_world_is_its_own_and_the_toy_worlds_vocabulary_is_unchanged():
    assert "<tool_call>" not in world_words() and "198" not in world_words()
    assert {"<tool_call>", "198", "-99", '"add"'} <= set(tool_words())


def test_build_splits_prompts_and_is_deterministic(tmp_path):
    a = build_tool_world(tmp_path / "a", seed=3, n_demos=50, n_train=40, n_heldout=20)
    b = build_tool_world(tmp_path / "b", seed=3, n_demos=50, n_train=40, n_heldout=20)
    for name in ("prompts/train.jsonl", "prompts/heldout.jsonl", "demos_tools.jsonl", "demos_direct.jsonl"):
        assert (a / name).read_text() == (b / name).read_text()
    heldout = {r["prompt"][0]["content"] for r in read_prompts(a / "prompts/heldout.jsonl")}
    train = {r["prompt"][0]["content"] for r in read_prompts(a / "prompts/train.jsonl")}
    demos = {r["messages"][0]["content"] for r in read_sft(a / "demos_tools.jsonl")}
    assert len(heldout) == 20 and not heldout & (train | demos)
    direct = read_sft(a / "demos_direct.jsonl")
    assert all(int(r["completion"][0]["content"]) == parse_sum(r["prompt"][0]["content"]).answer for r in direct)
    assert read_prompts(a / "prompts/train.jsonl")[0]["prompt"].tools == tool_schemas()


@pytest.mark.slow
def test_the_recipe_runs_its_three_arms_end_to_end(tmp_path, capsys):
    """bench/tool_world.py at a tiny size (one seed, one epoch, one PPO iteration): the table's three arms."""
    spec = importlib.util.spec_from_file_location("tool_world", Path(__file__).parents[2] / "bench" / "tool_world.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--out", str(tmp_path / "run"), "--seeds", "0", "--sft-epochs", "1", "--ppo-steps", "1",
                "--demos", "64", "--heldout", "16"])
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert list(report["table"]) == ["no tool (SFT, one turn)", "SFT + calculator", "SFT + PPO with the calculator"]
    assert report["seeds"]["0"]["arms"]["no tool (SFT, one turn)"]["tool_use"] == 0
    assert "| SFT + PPO with the calculator |" in capsys.readouterr().out
    assert set(report["paired"]) == {"SFT + PPO with the calculator - no tool (SFT, one turn)",
                                     "SFT + PPO with the calculator - SFT + calculator"}
