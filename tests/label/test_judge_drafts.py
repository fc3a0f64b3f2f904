"""Whether each answer was made with the judge's ranking shown as a starting draft (issue 34; migration 0008): what
the server served for the lease decides it, per answer, not the project's switch as it is when someone asks. The
app's routes in-process; the exports carry it; a database of revision 0007 gets what its event log proves."""

import json
import re
import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient
from sqlalchemy import select

from rlhfkit.data.jsonl import read_jsonl
from rlhfkit.data.schemas import ranking_record
from rlhfkit.errors import UserError
from rlhfkit.label.app import create_app
from rlhfkit.label.commands import open_store, read_items
from rlhfkit.label.db import Assignment, Base, upgrade
from rlhfkit.label.store import Store
from tests.label.conftest import database_at, invite_login, stand_in_answer, write_candidates

JUDGED = [[2], [0, 3], [1]]  # the judge's ranking of every item: output 2 best, 0 and 3 tied, 1 last


@pytest.fixture
def setup(tmp_path):
    """Project `p` (rank, 3 labelers an item, 6 items of 4 outputs), each item ranked by a judge; drafts hidden."""
    store = open_store(str(tmp_path / "labels.db"), migrate=True)
    store.import_items("p", "rank", 3, read_items(str(write_candidates(tmp_path / "c.jsonl", 6, 4)), "rank"))
    assert store.set_judge_rankings("p", "world:gold", {f"q{i:03d}": JUDGED for i in range(6)}) == 6
    invites = {name: store.invite("p", name) for name in ("ann", "bob", "cy")} | {"boss": store.invite("p", "boss",
                                                                                                       "admin")}
    return create_app(store), store, invites


def client(app, token):
    c = TestClient(app, base_url="http://127.0.0.1")
    assert invite_login(c, token).status_code == 303
    return c


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([0-9a-f]+)"', html).group(1)


def rank_form(page: str) -> dict:
    """The task form filled in (each output in its own tier, in the order shown), with the page's CSRF token."""
    form = {"kind": "rank", "client_id": str(uuid.uuid4()), "csrf_token": csrf_of(page), "elapsed_ms": "900"}
    for n, i in enumerate(int(i) for i in re.findall(r'name="tier_(\d+)"', page)):
        form |= {f"tier_{i}": str(n + 1), f"likert_{i}": str(7 - n)}
    return form


def open_task(c) -> tuple[str, str, bool]:
    """The task page, its assignment id, and whether it shows the judge's draft."""
    page = c.get("/task").text
    return page, re.search(r'action="/task/(\d+)"', page).group(1), 'id="judge-draft"' in page


def answer(c, page: str, aid: str) -> None:
    assert c.post(f"/task/{aid}", data=rank_form(page), follow_redirects=False).status_code == 303


def switch(admin, show: bool) -> None:
    page = admin.get("/admin").text
    data = {"csrf_token": csrf_of(page)} | ({"show": "true"} if show else {})
    assert admin.post("/admin/judge-draft", data=data, follow_redirects=False).status_code == 303


def drafts(store) -> list[tuple[str, str, str | None]]:
    """(labeler, item, judge_draft) of every answer, as the raw export has them."""
    return sorted((r["labeler"], r["id"], r["judge_draft"]) for r in store.submissions("p"))


def test_drafts_turned_on_midway_mark_the_answers_after_as_shown_and_those_before_as_hidden(setup):
    app, store, inv = setup
    ann, bob, cy, boss = (client(app, inv[n]) for n in ("ann", "bob", "cy", "boss"))
    page, aid, shown = open_task(ann)
    assert not shown
    answer(ann, page, aid)                    # before: hidden
    bob_page, bob_aid, shown = open_task(bob)  # bob's lease is served without the draft...
    assert not shown
    switch(boss, True)
    page, aid, shown = open_task(ann)
    assert shown
    answer(ann, page, aid)                    # after: shown
    bob_page, again, shown = open_task(bob)   # ...and again, the same lease, now with it: he saw it
    assert again == bob_aid and shown
    answer(bob, bob_page, bob_aid)
    csrf = cy.post("/api/session", json={"token": store.invite("p", "cy", replace=True)}).json()["csrf_token"]
    task = cy.post("/api/next", headers={"X-CSRF-Token": csrf}).json()["task"]  # the API serves no draft
    assert cy.post("/api/submissions", json=stand_in_answer(task), headers={"X-CSRF-Token": csrf}).status_code == 201
    assert drafts(store) == [("ann", "q000", "hidden"), ("ann", "q001", "shown"), ("bob", "q000", "shown"),
                             ("cy", "q000", "hidden")]
    assert store.judge_draft("p")  # the project's switch: on, though two of the answers never saw a draft
    # bob answered a page that showed the draft, then the admin hides drafts: his answer stays shown
    switch(boss, False)
    assert drafts(store)[2] == ("bob", "q000", "shown")

    # the rankings export carries it per answer, and the loop's reader keeps it
    lines = [json.loads(line) for line in boss.get("/admin/export?format=rankings").text.splitlines() if line]
    assert sorted((r["labeler"], r["id"], r["judge_draft"]) for r in lines) == drafts(store)
    assert all(ranking_record(r, AssertionError)["judge_draft"] == r["judge_draft"] for r in lines)
    raw = [json.loads(line) for line in boss.get("/admin/export?format=raw").text.splitlines() if line]
    assert sorted(r["judge_draft"] for r in raw) == ["hidden", "hidden", "shown", "shown"]
    said = re.search(r'id="judge-draft-answers">(.*?)</p>', boss.get("/admin").text, re.S).group(1)
    assert said.startswith("Answers so far: 2 made with the judge's draft shown, 2 with it hidden.")


def test_an_edit_keeps_what_its_answer_was_served_with(setup):
    app, store, inv = setup
    ann, boss = client(app, inv["ann"]), client(app, inv["boss"])
    page, aid, _ = open_task(ann)
    answer(ann, page, aid)  # hidden
    switch(boss, True)
    page, aid, _ = open_task(ann)
    answer(ann, page, aid)  # shown
    by_item = {r["id"]: r["submission_id"] for r in store.submissions("p")}
    # the edit page shows the labeler's own answer, never the judge's draft: an edit keeps its answer's flag,
    # whether drafts are on (the hidden answer) or off (the shown one) when it is made
    for item, show in (("q000", True), ("q001", False)):
        switch(boss, show)
        edit = ann.get(f"/history/{by_item[item]}/edit").text
        assert 'id="judge-draft"' not in edit
        r = ann.post(f"/history/{by_item[item]}", data=rank_form(edit), follow_redirects=False)
        assert r.status_code == 303
    rows = {r["id"]: r for r in store.submissions("p")}
    assert [(rows[i]["version"], rows[i]["judge_draft"]) for i in ("q000", "q001")] == [(2, "hidden"), (2, "shown")]


def test_the_store_records_a_lease_served_with_its_draft_once_and_for_all(setup):
    _, store, inv = setup
    ann = store.who(store.login(inv["ann"]))
    first = store.next_task(ann, with_draft=False)  # as the API serves it
    assert first.draft is None
    store.set_judge_draft("p", True)
    assert store.next_task(ann, with_draft=False).draft is None
    with store.engine.connect() as conn:
        assert conn.scalar(select(Assignment.judge_draft).where(Assignment.id == first.assignment_id)) is False
    assert store.next_task(ann).draft == {2: 1, 0: 2, 3: 2, 1: 3}  # the task page: served with the draft
    store.set_judge_draft("p", False)
    assert store.next_task(ann).draft is None  # no longer on the page, but it was seen
    with store.engine.connect() as conn:
        assert conn.scalar(select(Assignment.judge_draft).where(Assignment.id == first.assignment_id)) is True


def test_a_database_of_revision_0007_gets_what_its_event_log_proves_and_unknown_otherwise(db_url):
    """Migration 0008 on answers stored before the app recorded drafts: an answer is hidden when its item had no
    judge's ranking or was gold, its project collected no rankings, or its project had never switched drafts on
    (or stored a judge's ranking) before the answer; otherwise unknown (NULL: the log does not say whether a page
    or the API served the lease). Afterwards new leases record what they were served."""
    engine = database_at(db_url, "0007", [
        "INSERT INTO project (id, name, mode, overlap, created_at, judge_draft) VALUES (1, 'p', 'rank', 3, 0, false), "
        "(2, 'q', 'rank', 3, 0, false), (3, 'r', 'pairwise', 3, 0, true)",
        *(f"INSERT INTO labeler (id, project_id, name, role, invite_hash, created_at) VALUES ({i}, {p}, '{n}', "
          f"'labeler', 'h{i}', 0)" for i, p, n in [(1, 1, "ann"), (2, 1, "bob"), (3, 1, "cy"), (4, 2, "dee"),
                                                   (5, 3, "eve")]),
        "INSERT INTO item (id, project_id, ext_id, prompt, position, taken, is_gold, judge_ranking, judge_name) "
        "VALUES (1, 1, 'a', 'hi', 0, 3, false, '[[0], [1]]', 'j'), (2, 1, 'b', 'hi', 1, 1, false, NULL, NULL), "
        "(3, 1, 'g', 'hi', 2, 0, true, '[[1], [0]]', 'j'), (4, 2, 'a', 'hi', 0, 1, false, '[[0], [1]]', 'j'), "
        "(5, 3, 'a', 'hi', 0, 1, false, '[[0], [1]]', 'j')",
        "INSERT INTO candidate (item_id, idx, text, source, finished) VALUES "
        + ", ".join(f"({i}, {j}, 't{j}', 's', true)" for i in range(1, 6) for j in range(2)),
        # p: judge's rankings stored at t=5, drafts switched on at t=10, off at t=20
        "INSERT INTO event (at, project_id, user_id, kind, data) VALUES (5, 1, NULL, 'judge_rankings', "
        "'{\"judge\": \"j\", \"items\": 2}'), (10, 1, NULL, 'judge_draft', '{\"shown\": true}'), "
        "(20, 1, NULL, 'judge_draft', '{\"shown\": false}'), (1, 3, NULL, 'judge_rankings', '{}'), "
        "(1, 3, NULL, 'judge_draft', '{\"shown\": true}'), (1, 2, NULL, 'judge_draft', '{\"shown\": false}')",
        *(f"INSERT INTO assignment (id, item_id, user_id, state, shown, leased_at, expires_at) VALUES ({a}, {i}, "
          f"{u}, '{state}', '[1, 0]', 0, 4000000000)"
          for a, i, u, state in [(1, 1, 1, "submitted"), (2, 1, 2, "submitted"), (3, 2, 1, "submitted"),
                                 (4, 3, 1, "submitted"), (5, 1, 3, "leased"), (6, 4, 4, "leased"),
                                 (7, 5, 5, "submitted")]),
        *(f"INSERT INTO submission (id, client_id, assignment_id, item_id, user_id, kind, created_at, elapsed_ms) "
          f"VALUES ({a}, 'c{a}', {a}, {i}, {u}, '{kind}', {at}, 1000)"
          for a, i, u, kind, at in [(1, 1, 1, "rank", 8), (2, 1, 2, "rank", 15), (3, 2, 1, "rank", 15),
                                    (4, 3, 1, "rank", 15), (7, 5, 5, "pairwise", 15)]),
    ])
    upgrade(engine)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        if engine.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall() == []
        flags = dict(conn.execute(select(Assignment.id, Assignment.judge_draft)).all())
    # 1: answered before drafts were ever on; 2: after (unknown); 3: its item had no judge's ranking; 4: gold;
    # 5: a live lease of a project that had drafts on (unknown); 6: a project that never had them; 7: pairwise
    assert flags == {1: False, 2: None, 3: False, 4: False, 5: None, 6: False, 7: False}
    store = Store(engine)
    assert [(r["labeler"], r["id"], r["judge_draft"]) for r in store.submissions("p")] == [
        ("ann", "a", "hidden"), ("bob", "a", None), ("ann", "b", "hidden")]
    store.set_judge_draft("q", True)
    dee = store.who(store.login(store.invite("q", "dee", replace=True)))
    assert store.next_task(dee).draft == {0: 1, 1: 2}  # the live lease, now served with the draft
    with engine.connect() as conn:
        assert conn.scalar(select(Assignment.judge_draft).where(Assignment.id == 6)) is True
    engine.dispose()


@pytest.mark.parametrize("value", ["maybe", True, ["shown"]])
def test_a_rankings_file_with_a_judge_draft_other_than_shown_or_hidden_is_one_line(tmp_path, value):
    path = tmp_path / "r.jsonl"
    good = {"id": "a", "prompt": "p", "completions": ["x", "y"], "ranking": [[0], [1]], "judge_draft": "shown"}
    path.write_text(json.dumps(good) + "\n" + json.dumps(good | {"judge_draft": value}) + "\n")
    with pytest.raises(UserError) as exc:
        read_jsonl(path, ranking_record)
    assert str(exc.value) == (f"{path}:2: field 'judge_draft' must be one of shown, hidden, got {value!r}")
    path.write_text(json.dumps(good) + "\n" + json.dumps({k: v for k, v in good.items() if k != "judge_draft"}))
    assert [r.get("judge_draft") for r in read_jsonl(path, ranking_record)] == ["shown", None]  # absent: unknown
