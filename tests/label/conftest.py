"""Fixtures for the labeling app: candidate files, a live server, API labelers, PostgreSQL."""

from __future__ import annotations

import glob
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text

from rlhfkit.data.schemas import FLAGS
from rlhfkit.label import db
from rlhfkit.label.db import open_engine

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
XSS_TEXT = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_candidates(path: Path, n: int, k: int = 5, *, sources=("sft", "ppo"), first_text: str | None = None) -> Path:
    """n items of k outputs; output j of item i says how good it is (the stand-in labeler reads it)."""
    lines = []
    for i in range(n):
        outs = [{"text": f"answer {j} to question {i}: " + "word " * (j + 1), "source": sources[j % len(sources)]}
                for j in range(k)]
        if first_text is not None and i == 0:
            outs[0]["text"] = first_text
        lines.append(json.dumps({"id": f"q{i:03d}", "prompt": f"Question {i}: list {i % 5 + 2} things.",
                                 "completions": outs}))
    path.write_text("\n".join(lines) + "\n")
    return path


def invite_login(client, link: str):
    """Log in as a browser does (issue 31, item 14): open the invite page (which changes nothing), then press its
    button, a POST carrying the page's login CSRF token. `link`: a token, or a path /invite/TOKEN. The POST's
    response (303 to / when it worked)."""
    path = link if link.startswith("/") else f"/invite/{link}"
    page = client.get(path)
    assert page.status_code == 200, page.text
    token = re.search(r'id="login-csrf" value="([0-9a-f]+)"', page.text).group(1)
    return client.post(path, data={"csrf_token": token}, follow_redirects=False)


# ------------------------------------------------------------------------------------- stand-in labeler

def stand_in_answer(task: dict, client_id: str | None = None, *, labeler_bias: int = 0) -> dict:
    """A deterministic labeler: longer outputs are better, with the two shortest tied; Likert from the
    tier; flags all false. `labeler_bias` swaps the top two (so labelers disagree a little)."""
    outs = sorted(task["outputs"], key=lambda o: -len(o["text"]))
    idx = [o["index"] for o in outs]
    if labeler_bias % 3 == 1 and len(idx) > 2:
        idx[0], idx[1] = idx[1], idx[0]
    body = {"client_id": client_id or str(uuid.uuid4()), "assignment_id": task["assignment_id"],
            "kind": task["mode"], "elapsed_ms": 1234}
    if task["mode"] == "rank":
        ranking = [[i] for i in idx[:-2]] + [sorted(idx[-2:])] if len(idx) > 2 else [[i] for i in idx]
        likert = {i: max(1, 7 - t) for t, g in enumerate(ranking) for i in g}
        body |= {"ranking": ranking, "likert": [likert[i] for i in range(len(idx))],
                 "flags": [{name: False for name in FLAGS} for _ in idx], "notes": [""] * len(idx)}
    elif task["mode"] == "pairwise":
        a, b = task["outputs"]
        longer = "A" if len(a["text"]) > len(b["text"]) else "B"
        body["choice"] = "equal" if len(a["text"]) == len(b["text"]) else longer
        if labeler_bias % 3 == 1:
            body["choice"] = {"A": "B", "B": "A", "equal": "equal"}[body["choice"]]
    else:
        body["text"] = f"An ideal answer to: {task['prompt']}"
    return body


class ApiLabeler:
    """One labeler driving the JSON API with its own cookie jar and CSRF token."""

    def __init__(self, base_url: str, invite_token: str, timeout: float = 30.0):
        self.client = httpx.Client(base_url=base_url, timeout=timeout)
        self.token = invite_token
        self.csrf = None

    def login(self) -> dict:
        r = self.client.post("/api/session", json={"token": self.token})
        r.raise_for_status()
        self.csrf = r.json()["csrf_token"]
        return r.json()

    def next(self) -> dict | None:
        r = self.client.post("/api/next", headers={"X-CSRF-Token": self.csrf})
        r.raise_for_status()
        return r.json()["task"]

    def submit(self, body: dict) -> httpx.Response:
        return self.client.post("/api/submissions", json=body, headers={"X-CSRF-Token": self.csrf})

    def close(self) -> None:
        self.client.close()


# ---------------------------------------------------------------------------------------- live server

class LiveServer:
    """`rlhf label serve` in a subprocess on a loopback port (so a test can SIGKILL it)."""

    def __init__(self, db: str, *, lease_seconds: float = 1800, port: int | None = None):
        self.db, self.lease_seconds = db, lease_seconds
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> "LiveServer":
        """Start and wait until /healthz answers. The timeout is generous: under a loaded CI machine the server's
        imports alone have taken most of a minute."""
        cmd = [sys.executable, "-m", "rlhfkit.cli", "label", "serve", "--db", self.db, "--host", "127.0.0.1",
               "--port", str(self.port), "--lease-seconds", str(self.lease_seconds)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stdout.read()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=5).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"server did not answer /healthz within {timeout:.0f} s: {self.proc.stdout.read()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers, no flushing — what a crash looks like."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def live_server():
    servers: list[LiveServer] = []

    def start(db: str, **kwargs) -> LiveServer:
        server = LiveServer(db, **kwargs).start()
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.stop()


# ----------------------------------------------------------------------------------------- PostgreSQL

def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL cluster (Debian's binaries) on a loopback port; yields its base URL."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server not installed (/usr/lib/postgresql/*/bin/postgres); "
                    "`sh scripts/system-deps.sh --all` installs it")
    root = tempfile.mkdtemp(prefix="rlhfkit-pg-")
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data = os.path.join(root, "data")
    port = free_port()
    subprocess.run(as_user + [str(bin_dir / "initdb"), "-D", data, "-U", "postgres", "--auth=trust",
                              "-E", "UTF8", "--no-sync"], check=True, capture_output=True)
    proc = subprocess.Popen(as_user + [str(bin_dir / "postgres"), "-D", data, "-p", str(port), "-h", "127.0.0.1",
                                       "-k", root, "-c", "fsync=on", "-c", "max_connections=200"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"postgresql://postgres@127.0.0.1:{port}"
    import psycopg

    deadline = time.monotonic() + 60
    while True:
        try:
            psycopg.connect(url + "/postgres", connect_timeout=2).close()
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("PostgreSQL did not start")
            time.sleep(0.2)
    yield url
    # Immediate shutdown (SIGQUIT to the postmaster itself, which may run under runuser): the cluster is
    # thrown away, so skip the shutdown checkpoint that writes every test database to disk (~10 s when busy).
    try:
        with open(os.path.join(data, "postmaster.pid")) as f:
            os.kill(int(f.readline()), signal.SIGQUIT)
    except (OSError, ValueError):  # it is gone already
        pass
    proc.wait(30)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """A fresh, empty database: a SQLite file, or a new database on the test PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'labels.db'}"
    base = request.getfixturevalue("postgres_server")
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(base + "/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{base}/{name}"


def database_at(url: str, revision: str, rows: list[str]):
    """An engine on a database migrated only to `revision` (an old release's schema), holding `rows` (SQL
    inserts): what a migration test upgrades in place with `db.upgrade`."""
    engine = open_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(db.__file__).parent / "migrations"))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        for sql in rows:
            conn.execute(text(sql))
    return engine
