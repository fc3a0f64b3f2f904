"""/openapi.json says what the server does: fields a kind of answer requires, and each output's `finished`."""

import json
import uuid

from fastapi.testclient import TestClient

from rlhfkit.label.app import create_app
from rlhfkit.label.commands import open_store, read_items


def logged_in(tmp_path, finished=(True, False, True)):
    cands = tmp_path / "c.jsonl"
    cands.write_text(json.dumps({"id": "q1", "prompt": "Say hi.", "completions": [
        {"text": f"hi {i}", "source": "sft", "finished": f} for i, f in enumerate(finished)]}) + "\n")
    store = open_store(str(tmp_path / "labels.db"), migrate=True)
    store.import_items("p", "rank", 1, read_items(str(cands), "rank"))
    c = TestClient(create_app(store), base_url="http://127.0.0.1")
    csrf = c.post("/api/session", json={"token": store.invite("p", "ann")}).json()["csrf_token"]
    c.headers["X-CSRF-Token"] = csrf
    return c


def test_next_gives_each_output_its_finished_flag(tmp_path):
    c = logged_in(tmp_path)
    task = c.post("/api/next").json()["task"]
    assert {o["index"]: o["finished"] for o in task["outputs"]} == {0: True, 1: False, 2: True}
    schema = c.get("/openapi.json").json()["components"]["schemas"]["Output"]
    assert schema["properties"]["finished"]["type"] == "boolean"


def test_the_fields_the_schema_requires_for_a_kind_are_those_the_server_requires(tmp_path):
    c = logged_in(tmp_path)
    schema = c.get("/openapi.json").json()["components"]["schemas"]["SubmissionIn"]
    required = {rule["if"]["properties"]["kind"]["const"]: rule["then"]["required"] for rule in schema["allOf"]}
    assert required["rank"] == ["ranking", "likert"] and required["skip"] == ["reason"]
    task = c.post("/api/next").json()["task"]
    full = {"rank": {"ranking": [[0], [1], [2]], "likert": [6, 3, 1]}, "skip": {"reason": "unclear"}}
    for kind in ("rank", "skip"):
        for missing in required[kind]:
            body = {"client_id": str(uuid.uuid4()), "assignment_id": task["assignment_id"], "kind": kind,
                    **{k: v for k, v in full[kind].items() if k != missing}}
            r = c.post("/api/submissions", json=body)
            assert r.status_code == 422, (kind, missing, r.text)
    body = {"client_id": str(uuid.uuid4()), "assignment_id": task["assignment_id"], "kind": "rank", **full["rank"]}
    assert c.post("/api/submissions", json=body).status_code == 201
