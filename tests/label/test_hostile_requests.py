"""Issue 31, items 11, 12, 15: hostile requests to every route that takes a body or an id answer 4xx, never 500.

- A lone UTF-16 surrogate (`"\\ud800"`: valid JSON, no Unicode text) in any string of a JSON body, or in any
  field of a form (a multipart form may declare `charset=utf-7`, which decodes `+2AA-` to one): 422 naming
  the field. Neither database nor the response can encode it: these were 500s.
- Integers past what the database holds (2⁶³, 2⁷⁰, −2⁶³ − 1, twenty nines) in a path or a body: 422 (or 404)
  naming the field; SQLite's driver raised OverflowError.
- JSON's types taken as sent (strict models): Likert `true` or `"4"`, a flag `"yes"` were coerced and stored.

Routes are enumerated from the app itself, so a route added later is swept too.
"""

import json
import re
import uuid

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient

from rlhfkit.data.schemas import FLAGS
from rlhfkit.label.app import create_app
from rlhfkit.label.commands import open_store, read_items
from tests.label.conftest import write_candidates

SURROGATES = ["\ud800", "ok \udfff"]
HUGE = [2**63, 2**70, -(2**63) - 1, 99999999999999999999]
FLAG = next(iter(FLAGS))
PATH_IDS = ["99999999999999999999", str(2**63), str(-(2**63) - 1), str(2**31)]


@pytest.fixture
def site(tmp_path):
    return make_site(str(tmp_path / "labels.db"), tmp_path)


@pytest.fixture
def any_site(db_url, tmp_path):
    """`site` on SQLite and on PostgreSQL (whose INTEGER ids end at 2³¹ − 1, SQLite's at 2⁶³ − 1)."""
    return make_site(db_url, tmp_path)


def make_site(db: str, tmp_path):
    """Project `rank` (3 items of 3 outputs); ann (a labeler) has answered one item and leases the next, boss
    is the admin. Clients are logged in through the API (the same cookie serves the pages)."""
    store = open_store(db, migrate=True)
    store.import_items("rank", "rank", 2, read_items(str(write_candidates(tmp_path / "c.jsonl", 3, 3)), "rank"))
    invites = {"ann": store.invite("rank", "ann"), "boss": store.invite("rank", "boss", "admin"),
               "cy": store.invite("rank", "cy")}
    app = create_app(store)
    clients = {"anon": TestClient(app, base_url="http://127.0.0.1")}
    for name in ("ann", "boss"):
        c = TestClient(app, base_url="http://127.0.0.1")
        c.headers["X-CSRF-Token"] = c.post("/api/session", json={"token": invites[name]}).json()["csrf_token"]
        clients[name] = c
    ann = clients["ann"]
    first = ann.post("/api/next").json()["task"]
    r = ann.post("/api/submissions", json=rank_answer(first))
    assert r.status_code == 201
    task = ann.post("/api/next").json()["task"]
    return {"store": store, "app": app, "clients": clients, "invites": invites, "task": task,
            "submission_id": r.json()["submission_id"]}


def rank_answer(task: dict, **fields) -> dict:
    k = len(task["outputs"])
    return {"client_id": str(uuid.uuid4()), "assignment_id": task["assignment_id"], "kind": "rank",
            "elapsed_ms": 1500, "ranking": [[i] for i in range(k)], "likert": [6, 4, 2][:k],
            "flags": [{name: False for name in FLAGS}] * k, "notes": ["good", "", ""][:k], **fields}


def operations(app) -> list[tuple[str, str, APIRoute]]:
    """(method, full path, route) of every operation of the app."""
    out = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute):
            out += [(method, context.path, route) for method in sorted(route.methods)]
    return out


def who_calls(path: str) -> str:
    if path == "/api/session":
        return "anon"
    return "boss" if path.startswith(("/admin", "/api/projects")) else "ann"


def fill(path: str, site, **ids) -> str:
    values = {"project": "rank", "assignment_id": site["task"]["assignment_id"],
              "submission_id": site["submission_id"], "token": site["invites"]["cy"], **ids}
    return re.sub(r"{(\w+)}", lambda m: str(values[m.group(1)]), path)


def leaves(value, path=()):
    """(path, leaf) of every string, integer and boolean inside a JSON value."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from leaves(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from leaves(v, path + (i,))
    else:
        yield path, value


def replaced(value, path, new):
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = replaced(value[path[0]], path[1:], new)
    return copy


def send_json(client, method: str, path: str, body) -> object:
    """`body` as JSON text the way a client writes it (json.dumps escapes a lone surrogate as \\ud800)."""
    return client.request(method, path, content=json.dumps(body).encode(),
                          headers={"content-type": "application/json"})


def json_bases(site) -> dict[str, dict]:
    """A valid body for each JSON route's model, by model name."""
    task = site["task"]
    return {"LoginIn": {"token": site["invites"]["cy"]}, "SubmissionIn": rank_answer(task),
            "EditIn": rank_answer(task, assignment_id=0), "GuidelinesIn": {"markdown": "Prefer honest answers."},
            "ReviewIn": {"action": "send_back", "comment": "rank output 2 higher"}}


def json_routes(site) -> list[tuple[str, str, str]]:
    out = []
    for method, path, route in operations(site["app"]):
        if route.body_field is not None and path.startswith("/api/"):
            out.append((method, path, route.body_field.field_info.annotation.__name__))
    return out


# ------------------------------------------------------------------------------------------ JSON bodies

def test_every_json_body_answers_a_lone_surrogate_or_a_huge_integer_with_422_naming_the_field(any_site):
    site = any_site
    routes = json_routes(site)
    bases = json_bases(site)
    assert {model for _, _, model in routes} == set(bases), "a JSON route without a base body here"
    for method, path, model in routes:
        client, url = site["clients"][who_calls(path)], fill(path, site)
        for where, leaf in leaves(bases[model]):
            is_int = isinstance(leaf, int) and not isinstance(leaf, bool)
            hostile = SURROGATES if isinstance(leaf, str) else HUGE if is_int else []
            for value in hostile:
                r = send_json(client, method, url, replaced(bases[model], where, value))
                assert r.status_code == 422, (method, path, where, value, r.status_code, r.text[:300])
                assert str(where[0]) in json.dumps(r.json()["detail"]), (path, where, r.text[:300])
                r.content.decode("utf-8")  # what comes back is UTF-8 text
    # the bases themselves are valid: what was refused above was the hostile value
    for method, path, model in routes:
        r = send_json(site["clients"][who_calls(path)], method, fill(path, site), bases[model])
        assert r.status_code < 400, (method, path, r.status_code, r.text[:300])


def test_login_with_a_lone_surrogate_and_no_session_is_422(site):
    r = site["clients"]["anon"].post("/api/session", content=b'{"token": "\\ud800"}',
                                     headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "token"]


@pytest.mark.parametrize("field,value", [
    ("likert", [True, 4, 2]), ("likert", ["4", 4, 2]), ("likert", [4.0, 4, 2]),
    ("flags", [{FLAG: "yes"}, {}, {}]), ("flags", [{FLAG: 1}, {}, {}]),
    ("ranking", [[0], [True], [2]]), ("ranking", [["0"], [1], [2]]),
    ("elapsed_ms", "1500"), ("assignment_id", "ASSIGNMENT"), ("assignment_id", True),
])
def test_the_api_takes_json_types_as_sent(site, field, value):
    """Item 15: pydantic's lax mode turned `true` into Likert 1, `"4"` into 4, `"yes"` into a true flag before
    `parse_answer` (which refuses them) saw the answer."""
    task, ann = site["task"], site["clients"]["ann"]
    if value == "ASSIGNMENT":
        value = str(task["assignment_id"])
    r = ann.post("/api/submissions", json=rank_answer(task, **{field: value}))
    assert r.status_code == 422 and field in r.text, r.text
    assert len(site["store"].submissions("rank")) == 1  # nothing stored
    assert ann.post("/api/submissions", json=rank_answer(task)).status_code == 201


# ------------------------------------------------------------------------------------------- path ids

def test_every_id_in_a_path_past_the_database_is_404_or_422_naming_it(any_site):
    site = any_site
    swept = 0
    for method, path, _ in operations(site["app"]):
        for name in re.findall(r"{(\w+_id)}", path):
            for value in PATH_IDS:
                client = site["clients"][who_calls(path)]
                url = fill(path, site, **{name: value})
                if method == "GET":
                    r = client.get(url)
                elif path.startswith("/api/"):
                    r = client.request(method, url, json={})
                else:
                    r = client.request(method, url, data={"csrf_token": client.headers["X-CSRF-Token"]})
                assert r.status_code in (404, 422), (method, url, r.status_code, r.text[:300])
                assert r.status_code == 404 or name in r.text, (method, url, r.text[:300])
                swept += 1
    assert swept >= 6 * len(PATH_IDS)  # /task, /history (3), /admin/review, /api/.../review: all swept


def test_the_task_form_to_an_assignment_past_2_63_is_422(site):
    ann = site["clients"]["ann"]
    r = ann.post("/task/99999999999999999999", data={"csrf_token": ann.headers["X-CSRF-Token"], "kind": "skip",
                                                      "reason": "unclear", "client_id": str(uuid.uuid4())})
    assert r.status_code == 422 and "assignment_id" in r.text


# ---------------------------------------------------------------------------------------------- forms

def utf7_form(fields: dict[str, str]) -> tuple[bytes, dict]:
    """A multipart form that declares charset=utf-7, as any client may: Starlette decodes its fields with it,
    and UTF-7 spells a lone surrogate (`+2AA-`)."""
    boundary = "hostile-boundary"
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="'.encode() + key.encode("utf-7")
                    + b'"\r\n\r\n' + value.encode("utf-7") + b"\r\n" for key, value in fields.items())
    return body + f"--{boundary}--\r\n".encode(), {
        "content-type": f"multipart/form-data; boundary={boundary}; charset=utf-7"}


FORM_FIELDS = {  # what each form posts besides csrf_token (any other form is swept with a made-up field)
    "/task/{assignment_id}": {"kind": "skip", "reason": "other", "notes": "unclear", "client_id": "CLIENT"},
    "/history/{submission_id}": {"kind": "rank", "client_id": "CLIENT", "tier_0": "1", "tier_1": "2",
                                 "tier_2": "3", "likert_0": "5", "likert_1": "4", "likert_2": "2", "note_0": "ok"},
    "/admin/invite": {"name": "dee", "role": "labeler", "expires": "7d"},
    "/admin/revoke": {"name": "cy"},
    "/admin/guidelines": {"markdown": "Prefer honest answers."},
    "/admin/review/{submission_id}": {"action": "send_back", "comment": "rank output 2 higher"},
}


def form_routes(site) -> list[tuple[str, str]]:
    return [(method, path) for method, path, _ in operations(site["app"])
            if method in ("POST", "PUT") and not path.startswith("/api/")]


def test_every_form_answers_a_lone_surrogate_in_any_field_with_422_naming_it(site):
    routes = form_routes(site)
    assert {p for _, p in routes} >= set(FORM_FIELDS)
    for method, path in routes:
        client = site["clients"][who_calls(path)]
        fields = {k: str(uuid.uuid4()) if v == "CLIENT" else v for k, v in FORM_FIELDS.get(path, {"note": "x"}).items()}
        for key in fields:
            for value in SURROGATES:
                body, headers = utf7_form({"csrf_token": client.headers["X-CSRF-Token"], **fields, key: value})
                r = client.request(method, fill(path, site), content=body, headers=headers)
                assert r.status_code == 422 and key in r.text, (path, key, r.status_code, r.text[:300])
        # a field whose *name* is not text
        body, headers = utf7_form({"csrf_token": client.headers["X-CSRF-Token"], **fields, "x\ud800": "1"})
        r = client.request(method, fill(path, site), content=body, headers=headers)
        assert r.status_code == 422, (path, r.status_code, r.text[:300])
    assert {p["name"] for p in site["store"].progress("rank")["people"]} == {"ann", "boss", "cy"}


def test_the_same_utf7_forms_without_surrogates_are_accepted(site):
    """The sweep above is refused for the surrogate alone: the same multipart utf-7 forms, plain, go through."""
    boss = site["clients"]["boss"]
    body, headers = utf7_form({"csrf_token": boss.headers["X-CSRF-Token"], "name": "dee", "role": "labeler",
                               "expires": "7d"})
    assert boss.post("/admin/invite", content=body, headers=headers, follow_redirects=False).status_code == 303
    ann = site["clients"]["ann"]
    body, headers = utf7_form({"csrf_token": ann.headers["X-CSRF-Token"], **FORM_FIELDS["/task/{assignment_id}"],
                               "client_id": str(uuid.uuid4())})
    r = ann.post(f"/task/{site['task']['assignment_id']}", content=body, headers=headers, follow_redirects=False)
    assert r.status_code == 303


@pytest.mark.parametrize("token", ["é" * 64, "ü"])
def test_a_csrf_token_that_is_not_ascii_is_403_not_500(site, token):
    """hmac.compare_digest raises TypeError on non-ASCII strings: a header (Latin-1) or a form field can be one."""
    ann = site["clients"]["ann"]
    r = ann.post("/api/next", headers={"X-CSRF-Token": token.encode("latin-1")})
    assert r.status_code == 403
    assert ann.post("/logout", data={"csrf_token": token}).status_code == 403
