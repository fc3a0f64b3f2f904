"""A full disk under the SQLite database: one line from the CLI (exit 2), 507 from the app, nothing half-written.

The database lives on a small tmpfs (mounting one needs root; the test skips otherwise) that a filler file
fills to the last byte. SQLite then answers "database or disk is full" (SQLITE_FULL) and rolls back.
"""

from __future__ import annotations

import errno
import re
import sqlite3
import subprocess
import uuid
from contextlib import closing

import pytest
from fastapi.testclient import TestClient

from rlhfkit.cli import main
from rlhfkit.label.app import create_app
from rlhfkit.label.commands import open_store
from tests.label.conftest import invite_login, stand_in_answer, write_candidates

TMPFS_SIZE = "4m"  # room for the schema, a few items and their write-ahead log


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mount)],
                              capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("no `mount` command here to make a small tmpfs")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk) -> None:
    """Write a filler file until the file system refuses another byte."""
    with open(disk / "filler", "wb", buffering=0) as f:
        for chunk in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    with pytest.raises(OSError):
        (disk / "probe").write_bytes(b"\0" * 4096)


def test_a_full_disk_is_one_line_from_the_cli_and_507_from_the_app(small_disk, tmp_path, capsys):
    db = str(small_disk / "labels.db")
    assert main(["label", "import", "--db", db, "--project", "p", "--overlap", "1",
                 str(write_candidates(tmp_path / "c.jsonl", 3, 3))]) == 0
    store = open_store(db)
    app = TestClient(create_app(store), base_url="http://127.0.0.1")
    csrf = app.post("/api/session", json={"token": store.invite("p", "ann")}).json()["csrf_token"]
    headers = {"X-CSRF-Token": csrf}
    task = app.post("/api/next", headers=headers).json()["task"]  # the lease is written before the disk fills
    cat = store.invite("p", "cat")
    page = app.get("/task").text  # the same lease, as the task page shows it
    form = {"kind": "skip", "reason": "unclear", "client_id": str(uuid.uuid4()),
            "csrf_token": re.search(r'name="csrf_token" value="([0-9a-f]+)"', page).group(1)}
    action = re.search(r'action="(/task/\d+)"', page).group(1)
    with closing(sqlite3.connect(db)) as conn:  # an empty write-ahead log: the next write needs new disk space
        assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0  # 0: not blocked
    capsys.readouterr()
    fill(small_disk)

    more = write_candidates(tmp_path / "more.jsonl", 5, 3)
    more.write_text(more.read_text().replace('"q0', '"new-q0'))  # five new items
    code = main(["label", "import", "--db", db, "--project", "p", str(more)])
    err = capsys.readouterr().err
    assert code == 2 and "disk is full" in err and len(err.strip().splitlines()) == 1
    assert store.progress("p")["items"] == 3  # the import's transaction was rolled back as a whole
    code = main(["label", "invite", "--db", db, "--project", "p", "--name", "bob"])
    err = capsys.readouterr().err
    assert code == 2 and "disk is full" in err and len(err.strip().splitlines()) == 1
    assert [p["name"] for p in store.progress("p")["people"]] == ["ann", "cat"]

    body = stand_in_answer(task, str(uuid.uuid4()))
    r = app.post("/api/submissions", json=body, headers=headers)
    assert r.status_code == 507 and "disk is full" in r.json()["detail"]
    assert store.submissions("p") == []  # not acknowledged, not stored
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT count(*) FROM submission").fetchone()[0] == 0
    r = app.post(action, data=form, headers={"HX-Request": "true"})  # the page's form, sent by htmx
    assert r.status_code == 507 and r.headers["HX-Retarget"] == "#form-error" and "disk is full" in r.text
    login = invite_login(TestClient(create_app(store), base_url="http://127.0.0.1"), cat)  # its page reads only
    assert login.status_code == 507 and "disk is full" in login.text and "set-cookie" not in login.headers

    (small_disk / "filler").unlink()
    again = app.post("/api/submissions", json=body, headers=headers)
    assert again.status_code == 201 and not again.json()["duplicate"]  # the first send was never stored
    assert len(store.submissions("p")) == 1
