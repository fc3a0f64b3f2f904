"""A trajectory ranking round-trip through the app into `rlhf rm` (issue 35, item 5; acceptance).

K = 3 trajectories per item (a right tool call, a call for the wrong city, no call) are imported with their tools;
in Debian's Chromium a labeler sees each trajectory's turns with its tool calls and tool results collapsed, opens
one, ranks the three with the keys, rates them and flags the wrong call's turn; the export carries the flagged turn
and `rlhf rm` trains a tiny Qwen2 on it, rendering each trajectory through the Qwen2.5 template with its tools.
"""

from __future__ import annotations

import json
import math

import pytest

from rlhfkit.cli import main
from rlhfkit.data.chat import completion_ids, prompt_ids
from rlhfkit.data.formats import read_preferences
from rlhfkit.label.commands import open_store, read_items
from tests.arch_zoo import arch_config
from tests.label import browsing
from tests.label.browsing import MARKS, expect, log_in
from tests.label.conftest import ARTIFACTS, LiveServer
from tests.label.trajectories import TOOLS, trajectories, write_trajectories
from tests.tokenizers_zoo import build_tokenizer, real_template, save_tiny_model

pytestmark = MARKS
browser, page = browsing.browser, browsing.page  # the shared fixtures
LIKERT = {0: 6, 1: 3, 2: 2}  # by candidate index: the right call, the wrong city, no call
REASON = "calls the weather of Oslo, not of the city asked about"


@pytest.fixture
def app(tmp_path):
    db = str(tmp_path / "labels.db")
    store = open_store(db, migrate=True)
    store.import_items("traj", "rank", 1, read_items(str(write_trajectories(tmp_path / "t.jsonl")), "rank"))
    token = store.invite("traj", "ann")
    store.engine.dispose()
    server = LiveServer(db).start()
    yield server, token, db
    server.stop()


def label_one_item(page) -> None:
    """Check the collapsed turns, open one tool call, rank by candidate index (0 best), rate, flag turn 0 of the
    wrong-city trajectory, submit."""
    calls, results = page.locator("#outputs details.tool-call"), page.locator("#outputs details.tool-result")
    assert calls.count() == 2 and results.count() == 2
    for box in calls.all() + results.all():  # collapsed: the arguments and the tool's reply are not shown
        assert box.get_attribute("open") is None
        expect(box.locator("pre")).to_be_hidden()
    wrong = page.locator("article.output[data-index='1']")
    wrong.locator("details.tool-call summary").click()  # the labeler opens the call to read its arguments
    expect(wrong.locator("details.tool-call pre")).to_be_visible()
    expect(wrong.locator("details.tool-call pre")).to_have_text('{"city": "Oslo"}')
    expect(wrong.locator("details.tool-result pre")).to_be_hidden()  # the others stay closed
    expect(page.locator("#board .chip").first).to_be_visible()
    snippets = page.locator("#board .chip .snippet").all_inner_texts()  # a trajectory's chip reads its last answer
    assert sorted(s.strip().split(" in ")[0] for s in snippets) == [
        "· I cannot look up the weather.", "· It is 22 C and sunny", "· It is 3 C and snowing"], snippets
    page.keyboard.press("Escape")
    for card in page.locator("article.output").all():
        index = int(card.get_attribute("data-index"))
        card.focus()
        page.keyboard.press(str(index + 1))  # tier index + 1
        page.keyboard.press(f"Shift+Digit{LIKERT[index]}")
    turn = wrong.locator("li.turn[data-turn='0']")
    turn.locator("details.turn-flag summary").click()
    turn.locator("details.turn-flag input").fill(REASON)
    turn.locator("details.turn-flag input").press("Enter")  # ends the reason; it does not submit the form
    expect(turn).to_have_class("turn turn-assistant flagged")
    assert page.locator("#form-error").inner_text() == ""
    page.locator("#answer button[type=submit]").click()


def test_a_trajectory_ranking_goes_from_chromium_to_rlhf_rm(app, page, tmp_path, capsys):
    server, token, db = app
    log_in(page, server.url, token)
    page.wait_for_selector("#task[data-mode=rank]")
    expect(page.locator("#tools summary")).to_have_text("Tools the model was given (1)")
    label_one_item(page)
    expect(page.locator("#page-n")).to_have_text("2")
    page.screenshot(path=str(ARTIFACTS / "label-trajectory.png"), full_page=True)
    label_one_item(page)
    expect(page.locator("h1")).to_have_text("Your queue is empty")
    assert page.dialogs == []

    out = tmp_path / "rankings.jsonl"
    assert main(["label", "export", "--db", db, "--project", "traj", "--format", "rankings", "--out", str(out)]) == 0
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["completions"] for r in exported] == [trajectories("Paris"), trajectories("Lima")]
    for r in exported:
        assert r["ranking"] == [[0], [1], [2]] and r["likert"] == [6, 3, 2] and r["tools"] == TOOLS
        assert r["turn_flags"] == [[], [{"turn": 0, "reason": REASON}], []]

    config = arch_config("qwen2")
    config.max_position_embeddings = 1024  # the tool list in the system turn is long for a 600-token vocabulary
    model = save_tiny_model(tmp_path / "qwen2", "chatml", config=config)
    template = tmp_path / "qwen2_5.jinja"
    template.write_text(real_template("qwen2_5"), encoding="utf-8")
    # What the RM reads: the whole trajectory after the prompt with its tools, through the final answer
    tok = build_tokenizer("chatml")
    tok.chat_template = real_template("qwen2_5")
    prompt = read_preferences(out)[1][0]["prompt"]  # a Conversation carrying the tools
    scored = tok.decode(completion_ids(tok, prompt, exported[0]["completions"][1], True, prompt_ids(tok, prompt),
                                       whole=True), skip_special_tokens=False)
    assert '"arguments": {"city": "Oslo"}' in scored and scored.endswith("snowing in Paris.<|im_end|>")
    capsys.readouterr()
    run = tmp_path / "rm"
    code = main(["rm", "--model", str(model), "--data", str(out), "--eval-data", str(out), "--out", str(run),
                 "--chat-template", str(template), "--batch-size", "2", "--max-length", "1024", "--seed", "0",
                 "--log-every", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "truncated" not in captured.err  # every trajectory fits whole
    assert (run / "config.json").exists()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 1 and math.isfinite(rows[0]["train_loss"]), rows
    assert rows[-1]["n_pairs"] == 6, rows  # C(3,2) pairs of each of the two rankings, held out (--eval-data)
