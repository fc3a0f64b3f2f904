"""A `tools` column (TRL's conversational data with tool schemas) reaches the chat template wherever one is applied:
SFT, reward-model and DPO tokenization, PPO's prompts, sampling, `data convert` (issue 31, item 6).

The template is Qwen2.5-Instruct's own (tests/fixtures/chat_templates/qwen2_5.jinja): with tools it writes them, one
JSON object a line, between <tools> and </tools> in its system turn; without, a plain system turn."""

import json

import pandas as pd
import pytest

from rlhfkit.data.chat import prompt_ids
from rlhfkit.data.convert import ConvertConfig, convert
from rlhfkit.data.formats import read_preferences, read_prompts, read_sft
from rlhfkit.data.pairs import preference_groups
from rlhfkit.errors import UserError
from rlhfkit.generation import prompt_rows
from rlhfkit.recipes.sample import SampleConfig, sample_candidates
from rlhfkit.rewards.accuracy import tokenize_groups
from rlhfkit.train.dpo import tokenize as dpo_tokenize
from rlhfkit.train.sft import tokenize_demos
from tests.tokenizers_zoo import build_tokenizer, model_config, real_template, save_tiny_model

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city today.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CLOCK = {"type": "function", "function": {"name": "get_time", "description": "The time now.",
                                          "parameters": {"type": "object", "properties": {}}}}
TOOLS = [WEATHER, CLOCK]
USER = {"role": "user", "content": "What is the weather in Paris?"}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def tool_list() -> str:
    """The text Qwen2.5's template writes for TOOLS (one `tojson` line per tool)."""
    return "<tools>\n" + "\n".join(json.dumps(t) for t in TOOLS) + "\n</tools>"


@pytest.fixture
def qwen():
    tok = build_tokenizer("chatml")
    tok.chat_template = real_template("qwen2_5")
    return tok


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def texts(tok, rows) -> list[str]:
    return [tok.decode(ids, skip_special_tokens=False) for ids in rows]


def test_the_fixture_writes_the_tool_list_only_when_given_tools(qwen):
    with_tools = qwen.apply_chat_template([USER], tools=TOOLS, tokenize=False, add_generation_prompt=True)
    assert tool_list() in with_tools and "# Tools" in with_tools
    assert "<tools>" not in qwen.apply_chat_template([USER], tokenize=False, add_generation_prompt=True)


def test_sft_messages_and_prompt_completion_rows_train_with_their_tools(qwen, tmp_path):
    """A list of schemas, or a JSON string of one (as Hugging Face datasets often store the column)."""
    messages = write_jsonl(tmp_path / "messages.jsonl", [
        {"messages": [USER, {"role": "assistant", "content": CALL}], "tools": TOOLS},
        {"messages": [USER, {"role": "assistant", "content": "Sunny."}]},
    ])
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": [USER], "completion": [{"role": "assistant", "content": CALL}], "tools": json.dumps(TOOLS)}])
    records = read_sft(messages) + read_sft(pairs)
    rows = tokenize_demos(qwen, records, 4096)
    decoded = texts(qwen, [ids for ids, _ in rows])
    assert tool_list() in decoded[0] and tool_list() in decoded[2]
    assert "<tools>" not in decoded[1]
    for ids, mask in (rows[0], rows[2]):
        trained = qwen.decode([t for t, m in zip(ids, mask) if m], skip_special_tokens=False)
        assert trained == CALL + "<|im_end|>"  # the loss still falls on the assistant turn alone
        full = qwen.apply_chat_template([USER, {"role": "assistant", "content": CALL}], tools=TOOLS,
                                         return_dict=False)
        assert ids == full[:len(ids)]  # the template's own ids, with the tools


def test_preferences_give_their_tools_to_the_reward_model_and_dpo(qwen, tmp_path):
    data = tmp_path / "prefs.parquet"
    pd.DataFrame([{"prompt": [USER], "chosen": [{"role": "assistant", "content": CALL}],
                   "rejected": [{"role": "assistant", "content": "I cannot look that up."}],
                   "tools": json.dumps(TOOLS)}]).to_parquet(data)
    kind, records = read_preferences(data)
    groups = preference_groups(kind, records)
    rm_rows = tokenize_groups(qwen, groups, 4096)[0]["rows"]  # prompt + response ids
    dpo_rows = [ids for ids, _ in dpo_tokenize(qwen, groups, 4096)[0]["rows"]]  # (ids, response mask)
    assert rm_rows == dpo_rows and len(rm_rows) == 2
    for decoded in texts(qwen, rm_rows):
        assert tool_list() in decoded


def test_ppo_prompts_and_converted_files_keep_their_tools(qwen, tmp_path):
    data = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": [USER], "tools": TOOLS}, {"prompt": [USER]}])
    records = read_prompts(data)
    assert len(records) == 2  # the same messages with and without tools are two prompts
    with_tools, without = texts(qwen, prompt_rows(qwen, [r["prompt"] for r in records]))
    assert tool_list() in with_tools and "<tools>" not in without
    out = tmp_path / "converted.jsonl"
    convert(ConvertConfig(data=str(data), to="prompts", out=str(out)))
    again = read_prompts(out)
    assert qwen.decode(prompt_ids(qwen, again[0]["prompt"])) == with_tools


def test_sampled_candidates_carry_their_prompts_tools(tmp_path):
    config = model_config("gpt2", build_tokenizer("chatml"), "chatml", n_positions=2048)  # room for the tool list
    model = save_tiny_model(tmp_path / "qwen", "chatml", config=config)
    (tmp_path / "qwen2_5.jinja").write_text(real_template("qwen2_5"), encoding="utf-8")
    data = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": [USER], "tools": TOOLS}])
    out = tmp_path / "candidates.jsonl"
    sample_candidates(SampleConfig(models=[str(model)], prompts=str(data), out=str(out), k=2, max_new_tokens=2,
                                   chat_template=str(tmp_path / "qwen2_5.jinja"), device="cpu"))
    candidate = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    assert candidate["tools"] == TOOLS


@pytest.mark.parametrize("row, message", [
    ({"prompt": "What is the weather?", "completion": "Sunny.", "tools": TOOLS}, "needs a conversation"),
    ({"text": "What is the weather? Sunny.", "tools": TOOLS}, "needs a conversation"),
    ({"messages": [USER, {"role": "assistant", "content": CALL}], "tools": "{not json"}, "not JSON"),
    ({"messages": [USER, {"role": "assistant", "content": CALL}], "tools": {"name": "x"}}, "list of tool schemas"),
])
def test_tools_that_no_template_can_render_are_one_line(row, message, tmp_path):
    with pytest.raises(UserError, match=message) as err:
        read_sft(write_jsonl(tmp_path / "bad.jsonl", [row]))
    assert str(err.value).startswith(f"{tmp_path / 'bad.jsonl'}:1:") and "\n" not in str(err.value)
