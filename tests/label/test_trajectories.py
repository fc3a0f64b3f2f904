"""People judge trajectories (issue 35, item 5): an item's `tools` and its K trajectories (assistant turns, tool
calls, tool results) are imported, shown and ranked; a labeler flags a turn; every export carries the turn a flag
points at. On SQLite, and PostgreSQL with -m postgres (the `db_url` fixture)."""

import json
import re
import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient

from rlhfkit.cli import main
from rlhfkit.label import interop
from rlhfkit.label.answers import BadAnswer, parse_answer
from rlhfkit.label.app import create_app
from rlhfkit.label.commands import open_store, read_items
from rlhfkit.label.db import Base, open_engine, upgrade
from rlhfkit.label.export import records
from rlhfkit.label.review import prefill_fields, turn_flags_text
from tests.label.conftest import database_at, invite_login
from tests.label.trajectories import TOOLS, trajectories, write_trajectories

WRONG_CITY = {"turn": 0, "reason": "calls the weather of Oslo, not of the city asked about"}


@pytest.fixture
def store(db_url, tmp_path):
    """A rank project `traj` (overlap 1) of two items, three trajectories each."""
    engine = open_engine(db_url)
    upgrade(engine)
    engine.dispose()
    store = open_store(db_url)
    store.import_items("traj", "rank", 1, read_items(str(write_trajectories(tmp_path / "t.jsonl")), "rank"))
    yield store
    store.engine.dispose()


def labeler(store, name="ann"):
    return store.who(store.login(store.invite("traj", name)))


def answer(store, who, task, turn_flags, cid=None):
    """Rank the trajectories as imported (0 best), flags on output 1 (the wrong city) as given."""
    turns = store.output_turns(who, task.assignment_id)
    body = {"client_id": cid or str(uuid.uuid4()), "ranking": [[0], [1], [2]], "likert": [6, 3, 2],
            "turn_flags": turn_flags}
    return parse_answer(body, "rank", len(turns), turns)


def test_import_keeps_the_tools_and_each_trajectory_as_its_turns(store):
    who = labeler(store)
    task = store.next_task(who)
    assert task.tools == TOOLS  # `rlhf label import` dropped them before migration 0005
    expected = trajectories("Paris")
    assert task.trajectories == [expected[i] for i, _ in task.outputs]  # shown order, tool calls kept
    assert store.output_turns(who, task.assignment_id) == [3, 3, 1]  # by candidate index
    shown = dict(task.outputs)  # the plain text beside the turns: the board's snippets, search
    assert shown[0] == ('assistant: get_weather({"city": "Paris"})\n\ntool: Paris: 22 C, sunny\n\n'
                        "assistant: It is 22 C and sunny in Paris.")


def test_a_flagged_turn_is_stored_and_every_export_carries_it(store):
    who = labeler(store)
    task = store.next_task(who)
    store.submit(who, task.assignment_id, answer(store, who, task, [[], [WRONG_CITY], []]))
    rows = store.submissions("traj")
    (ranking,) = records(rows, "rankings")
    assert ranking["turn_flags"] == [[], [WRONG_CITY], []]  # by completion index, `turn` indexes its messages
    assert ranking["completions"] == trajectories("Paris") and ranking["tools"] == TOOLS
    pairs = records(rows, "pairs")
    assert [(p["chosen"], p["rejected"]) for p in pairs if "rejected_turn_flags" in p] == [
        (trajectories("Paris")[0], trajectories("Paris")[1])]
    assert [p.get("chosen_turn_flags") for p in pairs] == [None, None, [WRONG_CITY]]  # 0>1, 0>2, 1>2
    assert all(p["tools"] == TOOLS for p in pairs)
    (raw,) = records(rows, "raw")
    assert raw["turn_flags"] == [[], [WRONG_CITY], []] and raw["tools"] == TOOLS
    # Label Studio and Argilla show text: the flag goes along as a JSON line naming the output as shown (1-based)
    line = json.dumps({"output": 2, **WRONG_CITY})
    (task_ls,) = interop.to_label_studio(records(rows, "rankings"))
    (_, flagged) = task_ls["annotations"][0]["result"]
    assert (flagged["from_name"], flagged["type"], flagged["value"]["text"]) == ("turn_flags", "textarea", [line])
    assert 'get_weather({"city": "Oslo"})' in task_ls["data"]["items"][1]["body"]  # the tool call, readable
    assert '<TextArea name="turn_flags"' in interop.label_studio_config(3, turn_flags=True)
    (rec,), _ = interop.to_argilla(records(rows, "rankings"))
    assert rec["responses"]["turn_flags"][0]["value"] == line


def test_an_edit_changes_the_flags_and_the_earlier_version_keeps_its_own(store):
    who = labeler(store)
    task = store.next_task(who)
    receipt = store.submit(who, task.assignment_id, answer(store, who, task, [[], [WRONG_CITY], []]))
    turns = store.edit_turns(who, receipt.submission_id)
    moved = {"turn": 2, "reason": "says snow in Paris"}
    store.edit(who, receipt.submission_id, parse_answer({
        "client_id": str(uuid.uuid4()), "ranking": [[0], [1], [2]], "likert": [6, 3, 2],
        "turn_flags": [[], [moved], []]}, "rank", 3, turns))
    entry = store.history_entry(who, receipt.submission_id)
    assert entry["answer"]["turn_flags"] == [[], [moved], []]
    assert entry["versions"][0]["answer"]["turn_flags"] == [[], [WRONG_CITY], []]
    assert ("turnflag_1_2", "says snow in Paris") in prefill_fields("rank", entry["answer"])  # the edit page
    assert records(store.submissions("traj"), "rankings")[0]["turn_flags"] == [[], [moved], []]


@pytest.mark.parametrize("flags, message", [
    ([[], [{"turn": 3, "reason": "x"}], []], "turn_flags[1]: turn 3 does not exist (output 1 has 3 turns, 0..2)"),
    ([[], [], [{"turn": 0, "reason": "x"}, {"turn": 0, "reason": "y"}]], "turn_flags[2]: turn 0 is flagged twice"),
    ([[{"turn": 1, "reason": " "}], [], []], "turn_flags[0]: the reason for turn 1 is empty"),
    ([[{"turn": "1", "reason": "x"}], [], []], "turn_flags[0]: a turn must be an integer"),
    ([[], []], r"turn_flags \(\[\{turn, reason\}\] for each output\) needs one entry per output \(3\)"),
])
def test_a_flag_that_does_not_fit_the_trajectory_is_refused_in_one_line(store, flags, message):
    who = labeler(store)
    task = store.next_task(who)
    with pytest.raises(BadAnswer, match=f"^{message}$" if "\\" in message else f"^{re.escape(message)}$"):
        answer(store, who, task, flags)


def test_a_text_output_has_no_turn_to_flag():
    with pytest.raises(BadAnswer, match=r"^turn_flags\[0\]: output 0 is a text, not a trajectory: it has no turns"):
        parse_answer({"client_id": str(uuid.uuid4()), "ranking": [[0], [1]], "likert": [4, 4],
                      "turn_flags": [[{"turn": 0, "reason": "x"}], []]}, "rank", 2)


def test_the_review_queue_names_a_flagged_turn_by_the_output_as_its_labeler_saw_it():
    assert turn_flags_text([[], [WRONG_CITY], []], [2, 1, 0]) == [f"2, turn 0: {WRONG_CITY['reason']}"]
    assert turn_flags_text(None, [0, 1]) == []


@pytest.fixture
def app_client(tmp_path):
    store = open_store(str(tmp_path / "labels.db"), migrate=True)
    store.import_items("traj", "rank", 1, read_items(str(write_trajectories(tmp_path / "t.jsonl")), "rank"))
    c = TestClient(create_app(store), base_url="http://127.0.0.1")
    assert invite_login(c, store.invite("traj", "ann")).status_code == 303
    return c


def test_the_task_page_shows_turns_with_tool_calls_and_results_collapsed(app_client):
    page = app_client.get("/task").text
    assert page.count('<details class="tool-call">') == 2 and page.count('<details class="tool-result">') == 2
    assert '<details class="tool-call" open' not in page and '<details class="tool-result" open' not in page
    assert "Tool call · get_weather" in page and "{&#34;city&#34;: &#34;Oslo&#34;}" in page  # escaped JSON
    assert 'name="turnflag_1_0"' in page and 'name="turnflag_2_0"' in page and 'name="turnflag_2_1"' not in page
    assert "Tools the model was given (1)" in page and "The weather in a city today." in page


def test_a_flag_on_a_missing_turn_is_a_422_on_the_api_and_on_the_form(app_client):
    me = app_client.post("/api/session", json={"token": "nope"})
    assert me.status_code == 401
    page = app_client.get("/task").text
    assignment = re.search(r'action="/task/(\d+)"', page).group(1)
    csrf = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page).group(1)
    body = {"client_id": str(uuid.uuid4()), "assignment_id": int(assignment), "kind": "rank",
            "ranking": [[0], [1], [2]], "likert": [6, 3, 2], "turn_flags": [[], [], [{"turn": 1, "reason": "x"}]]}
    r = app_client.post("/api/submissions", json=body, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 422
    assert r.json() == {"detail": "turn_flags[2]: turn 1 does not exist (output 2 has 1 turns, 0..0)"}
    form = {"csrf_token": csrf, "client_id": str(uuid.uuid4()), "kind": "rank", "elapsed_ms": "10",
            **{f"tier_{i}": str(i + 1) for i in range(3)}, **{f"likert_{i}": "4" for i in range(3)},
            "turnflag_1_5": "no such turn"}
    r = app_client.post(f"/task/{assignment}", data=form)
    assert r.status_code == 422 and "turn_flags[1]: turn 5 does not exist (output 1 has 3 turns, 0..2)" in r.text
    form["turnflag_1_5"], form["turnflag_1_0"] = "", "wrong city"  # an empty reason flags nothing
    assert app_client.post(f"/task/{assignment}", data=form, follow_redirects=False).status_code == 303


@pytest.mark.parametrize("bad, message", [
    ({"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "get_weather",
                                                                       "arguments": "{city"}}]},
     "completions[1]: text[0]: tool_calls[0] (get_weather): arguments are a string but not JSON"),
    ({"role": "assistant", "content": "", "tool_calls": [{"function": {"arguments": {}}}]},
     "completions[1]: text[0]: tool_calls[0] must be {function: {name, arguments}} with a name"),
    ({"role": "tool", "content": "x", "tool_calls": [{"function": {"name": "f"}}]},
     "completions[1]: text[0]: only an assistant turn calls tools; this one is 'tool'"),
    ({"role": "robot", "content": "x"}, "completions[1]: text[0]: role 'robot' is not one of"),
])
def test_a_trajectory_with_malformed_messages_is_one_line_and_nothing_is_imported(tmp_path, capsys, bad, message):
    path = write_trajectories(tmp_path / "t.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[1]["completions"][1]["text"][0] = bad
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dbfile = tmp_path / "labels.db"
    code = main(["label", "import", "--db", str(dbfile), "--project", "traj", "--mode", "rank",
                 str(path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"rlhf label import: error: {path}:2: {message}"), err
    assert not dbfile.exists()  # checked before the database is opened


def test_a_tool_call_turn_without_content_reads_as_empty_content(tmp_path):
    path = write_trajectories(tmp_path / "t.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    del rows[0]["completions"][0]["text"][0]["content"]  # TRL leaves it out of a turn that only calls a tool
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (first, _) = read_items(str(path), "rank")
    assert first["completions"][0]["text"] == trajectories("Paris")[0]


def test_a_database_of_revision_0004_is_upgraded_in_place(db_url):
    """Revision 0005 adds item.tools, candidate.messages, rating.turn_flags: the rows there stay, as texts."""
    engine = database_at(db_url, "0004", [
        "INSERT INTO project (id, name, mode, overlap, created_at) VALUES (1, 'traj', 'rank', 1, 0)",
        "INSERT INTO item (id, project_id, ext_id, public_id, prompt, position, taken) "
        "VALUES (1, 1, 'a', 'ab12', 'hi', 0, 0)",
        "INSERT INTO candidate (item_id, idx, text, source, finished) VALUES (1, 0, 'x', 's', true), "
        "(1, 1, 'y', 's', true)"])
    upgrade(engine)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()
    store = open_store(db_url)
    ann = labeler(store)
    task = store.next_task(ann)
    assert task.tools is None and task.trajectories == [None, None] and store.output_turns(
        ann, task.assignment_id) == [None, None]
    store.engine.dispose()


def test_a_demonstration_of_a_prompt_with_tools_exports_them(tmp_path):
    store = open_store(str(tmp_path / "labels.db"), migrate=True)
    store.import_items("sft", "demo", 1, read_items(str(write_trajectories(tmp_path / "t.jsonl")), "demo"))
    ann = store.who(store.login(store.invite("sft", "ann")))
    task = store.next_task(ann)
    assert task.tools == TOOLS
    store.submit(ann, task.assignment_id, parse_answer({"client_id": str(uuid.uuid4()), "text": "Let me look."},
                                                       "demo", 0, []))
    (demo,) = records(store.submissions("sft"), "demos")
    assert demo["tools"] == TOOLS and demo["completion"] == "Let me look."
    store.engine.dispose()
