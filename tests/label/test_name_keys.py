"""Look-alike names refused by the database (migration 0007): `labeler.name_key` is unique per project.

The store's check ("ANN" beside "ann" is refused, tests/label/test_names.py) reads the project's people, then
inserts. On PostgreSQL two invites at once each ran their check before the other's insert was committed, found
nobody, and both were stored. Here the two invites meet at a barrier right after their checks, so both pass before
either inserts: exactly one person must be stored and the other invite refused as the check refuses it (not a 500,
not a traceback), through the store, the admin page and the CLI.
"""

import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rlhfkit.cli import main
from rlhfkit.label import commands
from rlhfkit.label.app import create_app
from rlhfkit.label.db import Base, User, open_engine, upgrade
from rlhfkit.label.inputs import person_name
from rlhfkit.label.store import AlreadyInvited, Conflict, Store
from rlhfkit.label.store.people import PeopleStore
from tests.label.conftest import database_at

BARRIER_S = 120  # only ends a broken run (a thread that never comes); the barrier is met in well under a second


@pytest.fixture
def project_db(db_url):
    """A PostgreSQL database (SQLite runs one writer at a time: no race there) with project "p" and its admin."""
    url = db_url
    engine = open_engine(url)
    upgrade(engine)
    store = Store(engine)
    store.import_items("p", "rank", 1, [{"id": "a", "prompt": "hi", "completions": [{"text": "x", "source": "s"}]}])
    store.invite("p", "boss", "admin")
    yield url, store
    engine.dispose()


@pytest.fixture
def meet_after_check(monkeypatch):
    """The next two look-alike checks (the two racing invites') each wait, after reading, for the other: both find
    nobody. Later checks (the loser's second run, the test's own) do not wait."""
    barrier, lock, waiting = threading.Barrier(2), threading.Lock(), [2]
    check = PeopleStore._person_named

    def checked_then_meet(self, s, p, name):
        found = check(self, s, p, name)
        with lock:
            meet, waiting[0] = waiting[0] > 0, waiting[0] - 1
        if meet:
            barrier.wait(BARRIER_S)
        return found

    monkeypatch.setattr(PeopleStore, "_person_named", checked_then_meet)
    return barrier


def at_once(*calls):
    """Run each call in its own thread; what each returned or raised."""
    results = [None] * len(calls)

    def run(i):
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # noqa: B036 — reported to the test, which names it
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def people(store) -> set[str]:
    return {p["name"] for p in store.progress("p")["people"]}


def refusal(store, name):
    """What the store says, one invite at a time, to inviting `name` now."""
    with pytest.raises(Conflict) as exc:
        store.invite("p", name)
    return exc.value


postgres_only = pytest.mark.parametrize("db_url", [pytest.param("postgres", marks=pytest.mark.postgres)],
                                        indirect=True)


@postgres_only
@pytest.mark.parametrize("names", [("ann", "ANN"), ("ａｎｎ", "Ann"), ("ann", "ann")])
def test_two_lookalike_invites_at_once_store_one_person_and_refuse_the_other(project_db, meet_after_check, names):
    url, store = project_db
    engines = [open_engine(url) for _ in names]  # two servers (processes): two engines, two connections
    results = at_once(*(lambda e=e, n=n: Store(e).invite("p", n) for e, n in zip(engines, names)))
    for e in engines:
        e.dispose()
    assert not meet_after_check.broken  # both checks ran before either invite was stored
    won = [i for i, r in enumerate(results) if isinstance(r, str)]
    assert len(won) == 1, results
    winner, loser = person_name(names[won[0]]), person_name(names[1 - won[0]])
    lost = results[1 - won[0]]
    assert people(store) == {"boss", winner}
    # the refusal the check gives one invite at a time, word for word: a look-alike, or the same name (--replace)
    expected = refusal(store, loser)
    assert type(lost) is type(expected) and str(lost) == str(expected)
    assert isinstance(lost, AlreadyInvited) == (winner == loser)


@postgres_only
def test_the_admin_page_refuses_the_losing_lookalike_with_409(project_db, meet_after_check):
    url, store = project_db
    admin_token = store.invite("p", "boss", "admin", replace=True)
    engines, clients = [open_engine(url) for _ in range(2)], []
    for e in engines:  # two app processes, one admin logged in to each
        c = TestClient(create_app(Store(e)), base_url="http://127.0.0.1")
        csrf = c.post("/api/session", json={"token": admin_token}).json()["csrf_token"]
        clients.append((c, csrf))
    results = at_once(*(lambda c=c, csrf=csrf, n=n: c.post("/admin/invite", follow_redirects=False,
                                                           data={"csrf_token": csrf, "name": n, "role": "labeler"})
                        for (c, csrf), n in zip(clients, ("cy", "CY"))))
    for e in engines:
        e.dispose()
    assert sorted(r.status_code for r in results) == [303, 409], [r.text[:300] for r in results]
    lost = next(r for r in results if r.status_code == 409)
    assert "would look like" in lost.text
    assert people(store) in ({"boss", "cy"}, {"boss", "CY"})


@postgres_only
def test_the_cli_refuses_the_losing_lookalike_in_one_line_with_exit_2(project_db, meet_after_check, capsys,
                                                                     monkeypatch):
    url, store = project_db
    # Each command first runs the migrations (none is due: the database is at head). Alembic keeps its context in
    # the module, one per process: two commands in two threads of one process take turns there, as two processes
    # need not. The invites themselves are not serialized.
    one_at_a_time = threading.Lock()

    def migrate(engine):
        with one_at_a_time:
            upgrade(engine)

    monkeypatch.setattr(commands, "upgrade", migrate)
    base = ["label", "invite", "--db", url, "--project", "p", "--name"]
    results = at_once(lambda: main(base + ["dee"]), lambda: main(base + ["ＤＥＥ"]))
    assert sorted(results, key=str) == [0, 2], results
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "would look like" in err, err
    assert people(store) in ({"boss", "dee"}, {"boss", "DEE"})


def test_the_database_itself_refuses_a_lookalike_row(db_url):
    """Two connections, each in its own transaction, past any check in Python: the unique index refuses the
    second row on SQLite and PostgreSQL (on PostgreSQL the second waits for the first to commit, then fails)."""
    engine = open_engine(db_url)
    upgrade(engine)
    store = Store(engine)
    store.import_items("p", "rank", 1, [{"id": "a", "prompt": "hi", "completions": [{"text": "x", "source": "s"}]}])
    pid = store.project("p").id
    with Session(engine) as s, s.begin():
        s.add(User(project_id=pid, name="ann", role="labeler", invite_hash="1" * 64, created_at=0.0))
    with pytest.raises(IntegrityError), Session(engine) as s, s.begin():
        s.add(User(project_id=pid, name="ＡＮＮ", role="labeler", invite_hash="2" * 64, created_at=0.0))
    with Session(engine) as s:
        assert s.scalars(select(User.name_key).where(User.project_id == pid)).all() == ["ann"]
    engine.dispose()


def test_a_database_of_revision_0006_gets_name_keys_and_keeps_people_who_already_look_alike(db_url):
    """Migration 0007 on people stored before the look-alike rule: "ann", "ANN" and "ａｎｎ" in one project stay three
    people (names, links, sessions); the first keeps the key, the others NULL. Another project's "Ann" has its own
    key. Afterwards nobody new may look like any of them, and the old look-alikes can still be re-invited."""
    engine = database_at(db_url, "0006", [
        "INSERT INTO project (id, name, mode, overlap, created_at) VALUES (1, 'p', 'rank', 2, 0), "
        "(2, 'q', 'rank', 2, 0)",
        *(f"INSERT INTO labeler (project_id, name, role, invite_hash, created_at) VALUES ({project}, '{name}', "
          f"'{role}', 'h{i}', 0)"  # one at a time, in this order: ids 1 to 5
          for i, (project, name, role) in enumerate([(1, "ann", "admin"), (1, "ANN", "labeler"),
                                                      (1, "ａｎｎ", "labeler"), (1, "cy\u200b", "labeler"),
                                                      (2, "Ann", "labeler")])),
        # a row that points at `labeler`: the migration must not rebuild the table (see 0003)
        "INSERT INTO session (token_hash, user_id, created_at, expires_at) VALUES ('t', 2, 0, 1)"])
    upgrade(engine)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        if engine.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall() == []
        keys = dict(conn.execute(select(User.id, User.name_key)).all())
    assert keys == {1: "ann", 2: None, 3: None, 4: "cy", 5: "ann"}
    store = Store(engine)
    assert people(store) == {"ann", "ANN", "ａｎｎ", "cy\u200b"}
    for name in ("Ann", "CY"):
        refusal(store, name)
    ann2 = store.who(store.login(store.invite("p", "ANN", replace=True)))  # a legacy look-alike keeps working
    assert ann2.name == "ANN"
    store.invite("p", "dee")
    with engine.connect() as conn:
        assert conn.scalar(select(User.name_key).where(User.name == "dee")) == "dee"
    engine.dispose()
