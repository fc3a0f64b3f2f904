"""The web app through its routes (in-process): login, CSRF, roles, escaping, the form and the API."""

import re
import sqlite3
import threading
import urllib.parse
import uuid

import pytest
from fastapi.testclient import TestClient

from rlhfkit.label.app import create_app
from rlhfkit.label.commands import open_store, read_items
from rlhfkit.label.deps import admin_user, form_csrf, header_csrf, login_csrf, project_admin
from rlhfkit.label.routes import admin, api, pages
from rlhfkit.label.store import Store
from tests.label.conftest import XSS_TEXT, invite_login, stand_in_answer, write_candidates


@pytest.fixture
def setup(tmp_path):
    """Two projects: `rank` (5 outputs, one carrying XSS payloads) and `other`; returns (app, invites)."""
    db = str(tmp_path / "labels.db")
    store = open_store(db, migrate=True)
    store.import_items("rank", "rank", 2, read_items(str(write_candidates(tmp_path / "c.jsonl", 3, 5,
                                                                        first_text=XSS_TEXT)), "rank"))
    store.import_items("other", "rank", 1, read_items(str(write_candidates(tmp_path / "o.jsonl", 1, 2)), "rank"))
    invites = {"ann": store.invite("rank", "ann"), "bob": store.invite("rank", "bob"),
               "boss": store.invite("rank", "boss", "admin"), "other-boss": store.invite("other", "oz", "admin")}
    return create_app(store), invites


def client(app, token=None):
    c = TestClient(app, base_url="http://127.0.0.1")
    if token:
        assert invite_login(c, token).status_code == 303
    return c


def open_task(c) -> tuple[str, str]:
    """The task page and its assignment id."""
    page = c.get("/task").text
    return page, re.search(r'action="/task/(\d+)"', page).group(1)


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([0-9a-f]+)"', html).group(1)


def test_invite_sets_an_httponly_samesite_cookie_and_hides_the_token(setup):
    app, inv = setup
    r = invite_login(client(app), inv["ann"])
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert r.headers["location"] == "/" and inv["ann"] not in cookie
    assert r.headers["referrer-policy"] == "no-referrer"


def test_unknown_invite_and_no_session(setup):
    app, _ = setup
    c = client(app)
    assert c.get("/invite/nope").status_code == 404
    assert c.get("/task").status_code == 401
    assert c.post("/api/next").status_code == 401


def test_forms_need_the_csrf_token(setup):
    app, inv = setup
    c = client(app, inv["ann"])
    page, aid = open_task(c)
    body = {"kind": "skip", "reason": "unclear", "client_id": str(uuid.uuid4())}
    assert c.post(f"/task/{aid}", data=body).status_code == 403
    assert c.post(f"/task/{aid}", data=body | {"csrf_token": "0" * 64}).status_code == 403
    assert c.post("/logout", data={}).status_code == 403
    r = c.post(f"/task/{aid}", data=body | {"csrf_token": csrf_of(page)}, follow_redirects=False)
    assert r.status_code == 303


def test_api_mutations_need_the_csrf_header(setup):
    app, inv = setup
    c = client(app)
    csrf = c.post("/api/session", json={"token": inv["ann"]}).json()["csrf_token"]
    assert c.post("/api/next").status_code == 403
    assert c.post("/api/next", headers={"X-CSRF-Token": csrf}).status_code == 200


def test_model_text_is_escaped(setup):
    app, inv = setup
    c = client(app, inv["ann"])
    for _ in range(3):  # find the item carrying the payload
        page = c.get("/task").text
        if "window.__xss" in page:
            break
        aid = re.search(r'action="/task/(\d+)"', page).group(1)
        c.post(f"/task/{aid}", data={"kind": "skip", "reason": "unclear", "client_id": str(uuid.uuid4()),
                                     "csrf_token": csrf_of(page)})
    assert "&lt;script&gt;window.__xss = 1&lt;/script&gt;" in page
    assert "<script>window" not in page and "<img src=x" not in page
    assert "script-src 'self'" in c.get("/task").headers["content-security-policy"]


def test_labelers_get_403_on_admin_export_and_other_projects(setup):
    app, inv = setup
    c = client(app, inv["ann"])
    assert c.get("/admin").status_code == 403
    assert c.get("/admin/export?format=rankings").status_code == 403
    assert c.get("/api/projects/rank/export").status_code == 403
    assert c.get("/api/projects/rank/stats").status_code == 403
    assert c.get("/api/projects/other/stats").status_code == 403
    oz = client(app, inv["other-boss"])
    assert oz.get("/api/projects/rank/stats").status_code == 403
    assert oz.get("/api/projects/other/stats").status_code == 200


def test_api_round_trip_and_resend(setup):
    app, inv = setup
    c = client(app)
    csrf = c.post("/api/session", json={"token": inv["bob"]}).json()["csrf_token"]
    h = {"X-CSRF-Token": csrf}
    task = c.post("/api/next", headers=h).json()["task"]
    assert "source" not in str(task) and len(task["outputs"]) == 5
    body = stand_in_answer(task)
    first = c.post("/api/submissions", json=body, headers=h)
    again = c.post("/api/submissions", json=body, headers=h)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["duplicate"] and again.json()["submission_id"] == first.json()["submission_id"]
    bad = c.post("/api/submissions", json=body | {"client_id": str(uuid.uuid4()), "ranking": [[0]]}, headers=h)
    assert bad.status_code in (409, 422)
    assert c.post("/api/submissions", json={"kind": "rank"}, headers=h).status_code == 422


def test_html_rank_form_with_a_tie(setup):
    app, inv = setup
    c = client(app, inv["ann"])
    page, aid = open_task(c)
    idx = [int(i) for i in re.findall(r'name="tier_(\d+)"', page)]
    form = {"kind": "rank", "client_id": str(uuid.uuid4()), "csrf_token": csrf_of(page), "elapsed_ms": "900"}
    for n, i in enumerate(idx):
        form |= {f"tier_{i}": str(min(n + 1, 4)), f"likert_{i}": str(7 - n)}
    form[f"flag_{idx[0]}"] = "harmful_advice"
    form[f"note_{idx[0]}"] = "too long"
    r = c.post(f"/task/{aid}", data=form, headers={"HX-Request": "true"})
    assert r.status_code == 200 and 'id="task"' in r.text and "<html" not in r.text
    admin = client(app, inv["boss"])
    (record,) = [line for line in admin.get("/admin/export?format=rankings").text.splitlines() if line]
    assert '"labeler": "ann"' in record and "too long" in record and '"harmful_advice": true' in record
    assert admin.get("/admin").status_code == 200


def test_htmx_validation_error_keeps_the_form(setup):
    app, inv = setup
    c = client(app, inv["ann"])
    page, aid = open_task(c)
    r = c.post(f"/task/{aid}", data={"kind": "rank", "client_id": str(uuid.uuid4()), "csrf_token": csrf_of(page)},
               headers={"HX-Request": "true"})
    assert r.status_code == 422 and r.headers["HX-Retarget"] == "#form-error"
    assert "Put every output" in r.text or "missing" in r.text


def test_admin_can_invite_from_the_page(setup):
    """Adapted for issue 19: the form redirects (POST-redirect-GET) and the link starts with the public
    URL (`serve --public-url`, here create_app's default), not with the request's Host."""
    app, inv = setup
    boss = client(app, inv["boss"])
    page = boss.get("/admin").text
    r = boss.post("/admin/invite", data={"name": "new person", "role": "labeler", "csrf_token": csrf_of(page)})
    link = re.search(r'value="(http://127.0.0.1:8000/invite/[^"]+)"', r.text).group(1)
    assert invite_login(client(app), link.replace("http://127.0.0.1:8000", "")).status_code == 303


def test_docs_page_is_served_without_a_cdn(setup):
    app, _ = setup
    c = client(app)
    page = c.get("/docs").text
    assert "/api/submissions" in page and "cdn" not in page.lower()
    assert "/api/next" in c.get("/openapi.json").json()["paths"]
    assert c.get("/static/vendor/htmx-2.0.11.min.js").status_code == 200


def test_an_answer_waiting_on_the_database_does_not_stall_other_requests(setup, monkeypatch):
    """The form routes do their database work in the thread pool, never on the event loop: while one
    answer is held inside `Store.submit`, the same server still serves another request."""
    app, inv = setup
    entered, release, released = threading.Event(), threading.Event(), []
    submit = Store.submit

    def held_submit(self, *args, **kwargs):
        entered.set()
        released.append(release.wait(60))  # False: nobody could release it (the loop was stuck)
        return submit(self, *args, **kwargs)

    monkeypatch.setattr(Store, "submit", held_submit)
    with TestClient(app, base_url="http://127.0.0.1") as c:  # one event loop for every request below
        assert invite_login(c, inv["ann"]).status_code == 303
        page, aid = open_task(c)
        form = {"kind": "skip", "reason": "unclear", "client_id": str(uuid.uuid4()), "csrf_token": csrf_of(page)}
        answered = []
        worker = threading.Thread(target=lambda: answered.append(c.post(f"/task/{aid}", data=form,
                                                                        follow_redirects=False)))
        worker.start()
        assert entered.wait(60)
        assert c.get("/openapi.json").status_code == 200  # served while the answer is held
        release.set()
        worker.join(60)
    assert released == [True] and answered[0].status_code == 303


# ------------------------------------------------------------------------- FastAPI's idiom: deps, models

AREAS = {"pages": pages.router, "admin": admin.router, "api session": api.session, "api labeling": api.labeling,
         "api admin": api.admin}


def routes(*areas: str) -> list:
    return [r for area in areas for r in AREAS[area].routes]


def dependency_calls(route) -> set:
    """Every dependency a route resolves, sub-dependencies included."""
    out, stack = set(), [route.dependant]
    while stack:
        d = stack.pop()
        out.add(d.call)
        stack += d.dependencies
    return out


def test_every_api_operation_documents_its_response_schema(setup):
    app, _ = setup
    paths = client(app).get("/openapi.json").json()["paths"]
    ops = [(method, path, op) for path, item in paths.items() for method, op in item.items()]
    assert {p for _, p, _ in ops} >= {"/api/session", "/api/me", "/api/next", "/api/submissions",
                                      "/api/projects/{project}/stats", "/api/projects/{project}/export"}
    for method, path, op in ops:
        assert path.startswith("/api/"), path  # the pages stay out of the schema
        ok = [code for code in op["responses"] if code.startswith("2")]
        assert ok, (method, path)
        for code in ok + ["401", "403"]:
            content = op["responses"][code].get("content", {})
            assert content and all("schema" in c for c in content.values()), (method, path, code)
    assert paths["/api/submissions"]["post"]["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ReceiptOut"}


def test_export_format_is_validated_on_the_admin_page(setup):
    app, inv = setup
    boss = client(app, inv["boss"])
    r = boss.get("/admin/export?format=bogus")
    assert r.status_code == 422 and "text/html" in r.headers["content-type"] and "rankings" in r.text
    assert boss.get("/admin/export?format=pairs").status_code == 200


def test_a_form_without_csrf_is_refused_by_the_dependency(setup):
    app, inv = setup
    boss = client(app, inv["boss"])
    r = boss.post("/admin/invite", data={"name": "mallory", "role": "admin"})
    assert r.status_code == 403 and "CSRF" in r.text
    assert "mallory" not in boss.get("/admin").text  # nobody was invited
    posts = [r for r in routes("pages", "admin") if "POST" in r.methods]
    assert {r.path for r in posts} == {"/logout", "/task/{assignment_id}", "/admin/invite", "/admin/revoke",
                                       "/admin/guidelines", "/guidelines/read",  # the last three: issue 19
                                       "/invite/{token}",  # issue 31: the login, no longer a GET
                                       "/admin/judge-draft"}  # issue 34: show or hide the judge's drafts
    # every form the pages post; the login's token is tied to the invite page's cookie, there is no session yet
    assert all((login_csrf if r.path == "/invite/{token}" else form_csrf) in dependency_calls(r) for r in posts)
    assert all(header_csrf in dependency_calls(r) for r in routes("api labeling"))


def test_a_labeler_on_an_admin_route_gets_403(setup):
    app, inv = setup
    ann = client(app, inv["ann"])
    csrf = csrf_of(open_task(ann)[0])
    r = ann.post("/admin/invite", data={"name": "eve", "role": "admin", "csrf_token": csrf})
    assert r.status_code == 403 and "admins" in r.text
    assert ann.get("/admin/export?format=bogus").status_code == 403  # the role is checked before the query
    assert client(app).get("/admin").status_code == 401
    # issue 19 added /admin/revoke, /admin/guidelines and PUT /api/projects/{project}/guidelines
    # issue 34 added /admin/judge-draft
    assert len(routes("admin")) == 6 and all(admin_user in dependency_calls(r) for r in routes("admin"))
    assert len(routes("api admin")) == 3 and all(project_admin in dependency_calls(r) for r in routes("api admin"))


# ------------------------------------------------------------------------------ issue 19's bugs (routes)

@pytest.mark.parametrize("value", ["²", "٣", "9" * 5000, "-1", "1e3"])
def test_an_odd_number_in_the_form_is_a_clear_4xx_not_a_500(setup, value):
    """`str.isdigit` takes "²" (and int() refuses it); int() of 5,000 digits raises: both were 500s."""
    app, inv = setup
    c = client(app, inv["ann"])
    page, aid = open_task(c)
    idx = [int(i) for i in re.findall(r'name="tier_(\d+)"', page)]
    form = {"kind": "rank", "client_id": str(uuid.uuid4()), "csrf_token": csrf_of(page)}
    form |= {f"tier_{i}": "1" for i in idx} | {f"likert_{i}": "4" for i in idx} | {f"likert_{idx[0]}": value}
    for headers in ({}, {"HX-Request": "true"}):
        r = c.post(f"/task/{aid}", data=form, headers=headers)
        assert r.status_code == 422 and f"likert_{idx[0]}" in r.text and "must be a number" in r.text
    r = c.post(f"/task/{aid}", data=form | {f"likert_{idx[0]}": "4", f"tier_{idx[1]}": value})
    assert r.status_code == 422 and f"tier_{idx[1]}" in r.text
    r = c.post(f"/task/{aid}", data=form | {f"likert_{idx[0]}": "4", "elapsed_ms": value}, follow_redirects=False)
    assert r.status_code == 303  # the timer is advisory: an odd value counts as 0


@pytest.mark.parametrize("name", ["проект日本", 'say "hi"\\now'])
def test_export_of_a_project_with_any_name(tmp_path, name):
    """Content-Disposition is Latin-1 on the wire (a Cyrillic name was a 500) and a quote ended
    `filename="..."`: RFC 6266 gives an ASCII fallback plus the exact name as `filename*` (RFC 5987)."""
    store = open_store(str(tmp_path / "l.db"), migrate=True)
    store.import_items(name, "rank", 1, read_items(str(write_candidates(tmp_path / "c.jsonl", 1, 2)), "rank"))
    boss = client(create_app(store), store.invite(name, "boss", "admin"))
    for url in ("/admin/export?format=raw", f"/api/projects/{name}/export?format=raw"):
        r = boss.get(url)
        assert r.status_code == 200
        disposition = r.headers["content-disposition"]
        fallback, star = re.fullmatch(r'attachment; filename="([\x20-\x7e]+)"; filename\*=UTF-8\'\'(\S+)',
                                      disposition).groups()
        assert '"' not in fallback and "\\" not in fallback and fallback.endswith("-raw.jsonl")
        assert urllib.parse.unquote(star) == f"{name}-raw.jsonl"


def test_healthz_answers_without_a_session_and_503_when_the_database_does_not(setup, monkeypatch):
    app, _ = setup
    r = client(app).get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    store = app.state.store
    store.engine.dispose()  # no pooled connection left: the next request must connect

    def refuse(*args, **kwargs):
        raise sqlite3.OperationalError("unable to open database file")
    monkeypatch.setattr(store.engine.dialect, "connect", refuse)
    r = client(app).get("/healthz")
    assert r.status_code == 503 and r.json() == {"status": "database unreachable"}
