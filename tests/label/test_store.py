"""Store: leases, overlap, expiry, idempotent answers — on SQLite (and PostgreSQL with -m postgres)."""

import re
import threading
import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.exc import IntegrityError

from rlhfkit.label.answers import parse_answer
from rlhfkit.label.db import Base, open_engine, upgrade
from rlhfkit.label.store import Conflict, NotFound, Store
from tests.label.conftest import database_at


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


def items(n, k=3):
    return [{"id": f"i{n_}", "prompt": f"p{n_}", "completions": [{"text": f"t{j}", "source": "s"} for j in range(k)]}
            for n_ in range(n)]


@pytest.fixture
def store(db_url):
    engine = open_engine(db_url)
    upgrade(engine)
    yield Store(engine, lease_seconds=60, clock=Clock())
    engine.dispose()


def people(store, n, project="p"):
    out = []
    for i in range(n):
        store.invite(project, f"l{i}")
    for i in range(n):
        token = store.invite(project, f"l{i}", replace=True)  # a re-invite replaces the link (when asked to)
        out.append(store.who(store.login(token)))
    return out


def rank(task, cid=None):
    k = len(task.outputs)
    return parse_answer({"client_id": cid or str(uuid.uuid4()), "ranking": [[i] for i in range(k)],
                         "likert": [4] * k}, "rank", k)


def test_migrations_match_the_models(store):
    with store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_each_item_goes_to_k_distinct_labelers_and_never_twice(store):
    store.import_items("p", "rank", 2, items(3))
    crew = people(store, 3)
    answered = {w.name: [] for w in crew}
    for _ in range(3):
        for w in crew:
            task = store.next_task(w)
            if task:
                store.submit(w, task.assignment_id, rank(task))
                answered[w.name].append(task.item_id)
    assert all(len(v) == len(set(v)) for v in answered.values())
    assert [(n, d) for _, n, d in store.item_answer_counts("p")] == [(2, 2)] * 3
    assert all(store.next_task(w) is None for w in crew)


def test_the_current_lease_is_returned_until_answered(store):
    store.import_items("p", "rank", 1, items(2))
    (w,) = people(store, 1)
    first = store.next_task(w)
    assert store.next_task(w).assignment_id == first.assignment_id
    assert (first.page, first.pages) == (1, 2)


def test_an_expired_lease_returns_the_item_and_a_late_answer_is_refused(store):
    store.import_items("p", "rank", 1, items(1))
    a, b = people(store, 2)
    task = store.next_task(a)
    assert store.next_task(b) is None  # the only slot is leased
    store.clock.now += 61
    got = store.next_task(b)
    assert got is not None and got.item_id == task.item_id
    with pytest.raises(Conflict, match="expired"):
        store.submit(a, task.assignment_id, rank(task))
    store.submit(b, got.assignment_id, rank(got))
    assert store.next_task(a) is None  # a never gets the item again


def test_a_late_answer_is_kept_when_the_slot_is_still_free(store):
    store.import_items("p", "rank", 2, items(1))
    (a,) = people(store, 1)
    task = store.next_task(a)
    store.clock.now += 61
    store.expire_leases()
    store.submit(a, task.assignment_id, rank(task))
    assert [(n, d) for _, n, d in store.item_answer_counts("p")] == [(1, 1)]


def test_a_labeler_cannot_tell_gold_items_apart(store):
    """Issue 31, item 13: every item a labeler sees has an opaque id of the same shape (gold ones had a digest,
    the others their imported id), "Item n of N" keeps its N whichever kind is on screen (it grew by one on gold),
    gold outputs carry their imported `finished` (they were all finished), and a late answer on an expired gold
    lease is kept as on any item with room (it was refused once k others had answered it)."""
    regular = [{"id": f"q{n}", "prompt": f"p{n}", "completions": [
        {"text": f"t{j}", "source": "s", "finished": j != 1} for j in range(3)]} for n in range(6)]
    store.import_items("p", "rank", 2, regular)
    store.import_gold("p", [{"id": f"gold-{n}", "prompt": f"g{n}", "completions": ["a", "b", "c"],
                             "ranking": [[0], [1], [2]], "finished": [True, False, True]} for n in range(3)])
    store.set_quality("p", gold_rate=0.5)
    (ann,) = people(store, 1)
    seen = []
    while (task := store.next_task(ann)) is not None:
        seen.append(task)
        store.submit(ann, task.assignment_id, rank(task))
    gold = [t for t in seen if t.prompt.startswith("g")]
    assert gold and len(gold) < len(seen)  # both kinds were shown
    ids = [t.item_id for t in seen]
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids) and len(set(ids)) == len(ids)
    assert {t.pages for t in seen} == {9}  # 6 + 3 items, on every page, gold or not
    assert [t.page for t in seen] == list(range(1, len(seen) + 1))
    assert all(t.finished.count(False) == 1 for t in seen)  # one cut-off output, as imported, on every item
    assert [e["item_id"] for e in store.history(ann)] == ids[::-1]  # "My answers" shows the same ids
    assert {r["public_id"] for r in store.submissions("p")} == {t.item_id for t in seen if t not in gold}
    # k = 1: ann answers the gold item, bob holds it past his lease, then answers
    store.import_items("q", "rank", 1, regular)
    store.import_gold("q", [{"id": "gold", "prompt": "g", "completions": ["a", "b"], "ranking": [[0], [1]]}])
    store.set_quality("q", gold_rate=1.0)
    ann, bob = people(store, 2, project="q")
    first, late = store.next_task(ann), store.next_task(bob)
    assert first.prompt == late.prompt == "g"
    store.submit(ann, first.assignment_id, rank(first))
    store.clock.now += 61
    store.expire_leases()
    assert not store.submit(bob, late.assignment_id, rank(late)).duplicate  # kept, as a regular item's would be


def test_resending_an_answer_stores_it_once(store):
    store.import_items("p", "rank", 1, items(1))
    (a,) = people(store, 1)
    task = store.next_task(a)
    cid = str(uuid.uuid4())
    first = store.submit(a, task.assignment_id, rank(task, cid))
    again = store.submit(a, task.assignment_id, rank(task, cid))
    assert (again.submission_id, again.duplicate, first.duplicate) == (first.submission_id, True, False)
    with pytest.raises(Conflict, match="already answered"):
        store.submit(a, task.assignment_id, rank(task))  # a different client id for the same lease
    assert len(store.submissions("p")) == 1


def test_a_skip_gives_the_slot_to_someone_else(store):
    store.import_items("p", "rank", 1, items(1))
    a, b = people(store, 2)
    task = store.next_task(a)
    store.submit(a, task.assignment_id,
                 parse_answer({"client_id": str(uuid.uuid4()), "kind": "skip", "reason": "unclear"}, "rank", 3))
    assert store.next_task(b) is not None
    assert store.next_task(a) is None
    assert store.progress("p")["answers"]["skip"] == 1


def test_someone_elses_assignment_is_not_found(store):
    store.import_items("p", "rank", 2, items(1))
    a, b = people(store, 2)
    task = store.next_task(a)
    with pytest.raises(NotFound):
        store.submit(b, task.assignment_id, rank(task))


def test_import_is_all_or_nothing_and_keeps_the_mode(store):
    store.import_items("p", "rank", 3, items(2))
    with pytest.raises(IntegrityError):  # a NOT NULL prompt: the whole import is rolled back
        store.import_items("p", "rank", None, items(1) + [{"id": "bad", "prompt": None, "completions": []}])
    assert store.progress("p")["items"] == 2
    with pytest.raises(Exception, match="collects 'rank'"):
        store.import_items("p", "pairwise", None, items(1))


def test_a_database_of_the_first_schema_is_upgraded_in_place(tmp_path):
    """Revision 0002 (issue 19) adds columns to tables that hold data: people, projects and items stay."""
    engine = database_at(str(tmp_path / "old.db"), "0001", [
        "INSERT INTO project (id, name, mode, overlap, created_at) VALUES (1, 'p', 'rank', 2, 0)",
        "INSERT INTO labeler (project_id, name, role, invite_hash, created_at) VALUES (1, 'ann', 'labeler', 'h', 0)",
        "INSERT INTO item (project_id, ext_id, prompt, position, taken) VALUES (1, 'a', 'hi', 0, 0)",
        # rows that point at `labeler`: SQLite refused to drop it when 0002 rebuilt the table (foreign keys on)
        "INSERT INTO session (token_hash, user_id, created_at, expires_at) VALUES ('t', 1, 0, 1)"])
    upgrade(engine)
    store = Store(engine)
    assert store.guidelines("p") == ""
    (ann,) = store.progress("p")["people"]
    assert (ann["name"], ann["role"], ann["active"], ann["status"]) == ("ann", "labeler", True, "active")  # a session
    with pytest.raises(Conflict, match="--replace"):
        store.invite("p", "ann")
    engine.dispose()


def test_a_database_of_revision_0002_with_answers_is_upgraded_in_place(db_url):
    """Revision 0003 (issue 19: versions, reviews, gold) adds columns to tables other tables point at
    (submission, item): on SQLite only ALTER TABLE ADD COLUMN, no table rebuild, so the answers, their
    ratings and rank entries and every foreign key stay; then an old answer can be edited."""
    engine = database_at(db_url, "0002", [
        "INSERT INTO project (id, name, mode, overlap, created_at) VALUES (1, 'p', 'rank', 2, 0)",
        "INSERT INTO labeler (id, project_id, name, role, invite_hash, created_at) "
        "VALUES (1, 1, 'ann', 'labeler', 'h', 0)",
        "INSERT INTO item (id, project_id, ext_id, prompt, position, taken) VALUES (1, 1, 'a', 'hi', 0, 1)",
        "INSERT INTO candidate (item_id, idx, text, source, finished) VALUES (1, 0, 'x', 's', true), "
        "(1, 1, 'y', 's', true)",
        "INSERT INTO assignment (id, item_id, user_id, state, shown, leased_at, expires_at) "
        "VALUES (1, 1, 1, 'submitted', '[1, 0]', 0, 60)",
        "INSERT INTO submission (id, client_id, assignment_id, item_id, user_id, kind, created_at, elapsed_ms) "
        "VALUES (1, 'c1', 1, 1, 1, 'rank', 1, 1000)",
        "INSERT INTO ranking (submission_id, candidate_idx, tier) VALUES (1, 0, 0), (1, 1, 1)",
        "INSERT INTO rating (submission_id, candidate_idx, likert, flags, notes) "
        "VALUES (1, 0, 6, '{}', 'good'), (1, 1, 2, '{}', '')"])
    upgrade(engine)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        if engine.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall() == []
    store = Store(engine)
    (row,) = store.submissions("p")
    assert (row["version"], row["tiers"], row["likert"], row["output_notes"]) == (1, {0: 0, 1: 1}, [6, 2],
                                                                                 ["good", ""])
    assert store.progress("p")["gold_items"] == 0 and store.progress("p")["locked"] is False
    ann = store.who(store.login(store.invite("p", "ann", replace=True)))
    store.edit(ann, 1, parse_answer({"client_id": str(uuid.uuid4()), "ranking": [[1], [0]], "likert": [3, 5]},
                                    "rank", 2))
    entry = store.history_entry(ann, 1)
    assert entry["version"] == 2 and entry["answer"]["tiers"] == {"0": 1, "1": 0}
    assert entry["versions"][0]["answer"]["output_notes"] == ["good", ""]
    engine.dispose()


def test_edits_at_the_same_time_lose_no_version(store):
    """Eight edits of one answer at once: each is stored as its own version or refused (409), never lost;
    the versions are 1..n with no gap and the rows hold the last stored one."""
    store.import_items("p", "rank", 1, items(1))
    (ann,) = people(store, 1)
    task = store.next_task(ann)
    sid = store.submit(ann, task.assignment_id, rank(task)).submission_id
    results = []

    def edit(n):
        ranking = [[n % 3], [(n + 1) % 3], [(n + 2) % 3]]
        try:
            ans = parse_answer({"client_id": str(uuid.uuid4()), "ranking": ranking, "likert": [4] * 3,
                                "notes": [f"edit {n}", "", ""]}, "rank", 3)
            store.edit(ann, sid, ans)
            results.append(n)
        except Conflict:
            results.append(None)

    threads = [threading.Thread(target=edit, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stored = [n for n in results if n is not None]
    entry = store.history_entry(ann, sid)
    assert len(results) == 8 and stored and entry["version"] == 1 + len(stored)
    assert [v["version"] for v in entry["versions"]] == list(range(1, len(stored) + 1))
    # every stored edit is exactly one version (the newest in the rows), after the original answer
    notes = [v["answer"]["output_notes"][0] for v in entry["versions"]] + [entry["answer"]["output_notes"][0]]
    assert notes[0] == "" and sorted(notes[1:]) == sorted(f"edit {n}" for n in stored)
