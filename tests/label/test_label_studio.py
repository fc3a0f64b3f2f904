"""A round trip through a real Label Studio (slow: `make test-all`): rankings made in Label Studio's own Ranker,
exported as it exports them, read by `rlhf label convert`, and trained on by `rlhf rm`.

Label Studio 1.23.2 from PyPI runs in its own virtual environment (`.venv-labelstudio` at the repository root,
created on first use: about 7.5 minutes on 2 cores; reused after), on 127.0.0.1 with a data directory of the test.
Its dependencies are pinned by label-studio-constraints.txt beside this file (`pip freeze` of a venv where it starts):
unpinned, pip takes sentry-sdk 3.x, which Label Studio 1.23.2 rejects at start. A venv built from other constraints
(its stamp differs) is built again; a failed install or a Label Studio that dies at start fails the test with the
last lines it printed.
Its API takes `Authorization: Token ...` only when legacy tokens are enabled before the first start
(LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN, LABEL_STUDIO_USER_TOKEN). API: https://api.labelstud.io/api-reference
(projects, import, tasks, annotations, export).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from rlhfkit.cli import main
from rlhfkit.data.jsonl import read_jsonl
from rlhfkit.data.schemas import ranking_record
from rlhfkit.label import interop
from rlhfkit.world.build import world_words
from tests.label.conftest import REPO, free_port

VERSION = "1.23.2"
VENV = REPO / ".venv-labelstudio"
CONSTRAINTS = Path(__file__).with_name("label-studio-constraints.txt")
STAMP = VENV / ".rlhfkit-constraints"  # the sha256 of the constraints the venv was built with
TOKEN = "5f1c0ffee0ddba11ca7b0a7d5e1ec7ed0ddba11c"  # a fixed test token for a throwaway local server
START_TIMEOUT_S = 900  # the first start migrates a fresh database: ~40 s on an idle 2-core machine, minutes under load
K = 4  # outputs per item


def label_studio() -> Path:
    """The label-studio executable of .venv-labelstudio, built on first use (and again when the constraints
    changed); a failed install fails the test with pip's last lines."""
    exe = VENV / "bin" / "label-studio"
    wanted = hashlib.sha256(CONSTRAINTS.read_bytes()).hexdigest()
    if exe.exists() and STAMP.exists() and STAMP.read_text() == wanted:
        return exe
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    done = subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "-c", str(CONSTRAINTS),
                           f"label-studio=={VERSION}"], capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(VENV, ignore_errors=True)
        pytest.fail(f"label-studio=={VERSION} could not be installed with {CONSTRAINTS.name}:\n"
                    + last_lines(done.stdout + done.stderr), pytrace=False)
    STAMP.write_text(wanted)
    return exe


def last_lines(text: str, n: int = 25) -> str:
    return "\n".join(text.rstrip().splitlines()[-n:])


@pytest.fixture
def server(tmp_path):
    exe = label_studio()
    port = free_port()
    env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(tmp_path / "ls-data"),
           "LABEL_STUDIO_USERNAME": "admin@example.org", "LABEL_STUDIO_PASSWORD": "rlhfkit-round-trip",
           "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true", "LABEL_STUDIO_USER_TOKEN": TOKEN,
           "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true"}
    log = open(tmp_path / "label-studio.log", "w")
    proc = subprocess.Popen([str(exe), "start", "--no-browser", "--host", "127.0.0.1", "--port", str(port),
                             "--internal-host", "127.0.0.1"], env=env, stdout=log, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60,
                          headers={"Authorization": f"Token {TOKEN}"})
    try:
        deadline = time.time() + START_TIMEOUT_S
        while True:
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                pytest.fail(f"Label Studio exited with code {proc.returncode} before answering /health; its last "
                            f"lines:\n{last_lines((tmp_path / 'label-studio.log').read_text())}", pytrace=False)
            if time.time() > deadline:
                pytest.fail(f"Label Studio did not answer /health in {START_TIMEOUT_S} s; its last lines:\n"
                            f"{last_lines((tmp_path / 'label-studio.log').read_text())}", pytrace=False)
            time.sleep(2)
        yield client
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def tasks_of(client: httpx.Client, project: int) -> list[dict]:
    found = client.get("/api/tasks", params={"project": project, "page_size": 1000})
    found.raise_for_status()
    body = found.json()
    return body["tasks"] if isinstance(body, dict) else body


@pytest.mark.slow
def test_label_studio_round_trip_trains_a_reward_model(server, tmp_path, tiny_gpt2, capsys):
    words = sorted(world_words())
    rng = random.Random(0)
    items = [{"id": f"q{i}", "prompt": " ".join(rng.sample(words, 5)),
              "items": [{"id": str(j), "title": f"Output {j + 1}", "body": " ".join(rng.sample(words, 3 + j))}
                        for j in range(K)]} for i in range(12)]
    # 1. a Ranker project with one bucket per tier (the config our export writes) and the tasks
    made = server.post("/api/projects", json={"title": "rlhfkit round trip",
                                              "label_config": interop.label_studio_config(K)})
    assert made.status_code == 201, made.text
    project = made.json()["id"]
    imported = server.post(f"/api/projects/{project}/import", json=[{**i} for i in items])
    assert imported.status_code == 201, imported.text
    # 2. an annotation per task through the API: the longest output best, the two shortest tied last
    expected = {}
    for task in tasks_of(server, project):
        data = task["data"]
        order = sorted(data["items"], key=lambda o: -len(o["body"]))
        buckets = {"tier-1": [order[0]["id"]], "tier-2": [order[1]["id"]],
                   "tier-3": sorted(o["id"] for o in order[2:])}
        posted = server.post(f"/api/tasks/{task['id']}/annotations", json={"result": [
            {"from_name": "rank", "to_name": "outputs", "type": "ranker", "value": {"ranker": buckets}}]})
        assert posted.status_code == 201, posted.text
        expected[data["id"]] = [[int(i) for i in b] for b in buckets.values()]
    # 3. Label Studio's own JSON export
    exported = server.get(f"/api/projects/{project}/export", params={"exportType": "JSON"})
    assert exported.status_code == 200, exported.text
    export_file = tmp_path / "label-studio-export.json"
    export_file.write_text(exported.text)
    shape = json.loads(exported.text)[0]["annotations"][0]["result"][0]
    assert shape["type"] == "ranker" and set(shape["value"]["ranker"]) == {"tier-1", "tier-2", "tier-3"}
    # 4. read here: the rankings are the ones posted, ties kept
    rankings_file = tmp_path / "rankings.jsonl"
    assert main(["label", "convert", str(export_file), "--buckets", "tier-1,tier-2,tier-3,tier-4",
                 "--out", str(rankings_file)]) == 0
    rankings = read_jsonl(rankings_file, ranking_record)
    assert {r["id"]: r["ranking"] for r in rankings} == expected and len(rankings) == 12
    assert rankings[0]["completions"] == [o["body"] for o in next(i for i in items
                                                                  if i["id"] == rankings[0]["id"])["items"]]
    # 5. and trained on
    capsys.readouterr()
    assert main(["rm", "--model", str(tiny_gpt2), "--data", str(rankings_file), "--out", str(tmp_path / "rm"),
                 "--batch-size", "4", "--threads", "1"]) == 0
    assert (tmp_path / "rm" / "metrics.jsonl").exists()
