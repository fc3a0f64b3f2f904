"""Issue 19: people (revoke, re-invite, expiring and single-use links, the public URL, the last admin,
POST-redirect-GET), guidelines (CLI, API, pages, escaping) and conversation prompts, through the routes."""

import json
import re
import uuid

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from rlhfkit.cli import main
from rlhfkit.label.app import create_app
from rlhfkit.label.commands import open_store, read_items
from rlhfkit.label.guidelines import FLAG_HELP
from rlhfkit.label.store import AlreadyInvited, Conflict, InviteGone, Store
from tests.label.conftest import XSS_TEXT, invite_login, write_candidates

PUBLIC = "https://labels.example.org"


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


@pytest.fixture
def world(tmp_path):
    """Project `rank` (3 items of 3 outputs, overlap 2) with a labeler and an admin; `other` with its admin."""
    db = str(tmp_path / "labels.db")
    base = open_store(db, migrate=True)
    store = Store(base.engine, clock=Clock())
    store.import_items("rank", "rank", 2, read_items(str(write_candidates(tmp_path / "c.jsonl", 3, 3)), "rank"))
    store.import_items("other", "rank", 1, read_items(str(write_candidates(tmp_path / "o.jsonl", 1, 2)), "rank"))
    inv = {"ann": store.invite("rank", "ann"), "boss": store.invite("rank", "boss", "admin"),
           "oz": store.invite("other", "oz", "admin")}
    return store, create_app(store, public_url=PUBLIC + "/"), inv, db


def client(app, token=None, base_url="http://127.0.0.1"):
    c = TestClient(app, base_url=base_url)
    if token:
        assert invite_login(c, token).status_code == 303
    return c


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([0-9a-f]+)"', html).group(1)


def admin_csrf(c) -> str:
    return csrf_of(c.get("/admin").text)


# ------------------------------------------------------------------------------------------- people

def test_reinviting_a_person_with_a_live_link_needs_replace(world):
    store, _, inv, _ = world
    ann = store.login(inv["ann"])
    with pytest.raises(AlreadyInvited, match="--replace"):
        store.invite("rank", "ann")
    assert store.who(ann) is not None and store.login(inv["ann"]) is not None  # nothing changed
    new = store.invite("rank", "ann", replace=True)
    assert store.who(ann) is None and store.login(inv["ann"]) is None  # old link and session ended
    assert store.login(new) is not None


def test_admin_page_asks_before_replacing_then_shows_the_link_once(world):
    store, app, inv, _ = world
    ann = client(app, inv["ann"])
    boss = client(app, inv["boss"], base_url="http://evil.example")  # the Host header is not the link's host
    form = {"name": "ann", "role": "labeler", "expires": "7d", "csrf_token": admin_csrf(boss)}
    r = boss.post("/admin/invite", data=form, follow_redirects=False)
    assert r.status_code == 200 and 'name="replace" value="true"' in r.text and "already invited" in r.text
    assert ann.get("/task").status_code == 200  # asking changed nothing
    r = boss.post("/admin/invite", data=form | {"replace": "true"}, follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/admin")  # POST-redirect-GET
    page = boss.get("/admin").text
    link = re.search(r'value="([^"]*/invite/[^"]+)"', page).group(1)
    assert link.startswith(PUBLIC + "/invite/") and "evil.example" not in page
    assert "/invite/" not in boss.get("/admin").text  # shown once: a reload does not show it again
    assert ann.get("/task").status_code == 401  # replaced: logged out
    assert invite_login(client(app), link.removeprefix(PUBLIC)).status_code == 303


def test_invite_links_expire_and_single_use_links_log_in_once(world):
    store, app, _, _ = world
    soon = store.invite("rank", "sue", expires_in=60)
    once = store.invite("rank", "una", single_use=True)
    assert store.login(soon) is not None
    store.clock.now += 61
    with pytest.raises(InviteGone, match="expired or was already used"):
        store.login(soon)
    assert client(app).get(f"/invite/{soon}").status_code == 410
    assert client(app).post("/api/session", json={"token": soon}).status_code == 410
    assert invite_login(client(app), once).status_code == 303
    r = client(app).get(f"/invite/{once}")  # a second browser
    assert r.status_code == 410 and "ask your admin" in r.text


def test_opening_an_invite_link_logs_nobody_in_its_page_posts_the_login(world):
    """Issue 31, item 14 (login CSRF): a GET of /invite/TOKEN (an <img> of someone else's link on a page of the site,
    a chat's link preview) changes nothing: no session, no switched session, a single-use link not used up. The
    page's button posts the login with a token tied to a SameSite=Strict cookie, so another site cannot forge it."""
    store, app, inv, _ = world
    ann = client(app, inv["ann"])
    assert ann.get("/api/me").json()["name"] == "ann"
    evil = store.invite("rank", "mallory")
    page = ann.get(f"/invite/{evil}")  # what <img src="/invite/EVIL"> in ann's browser fetches
    assert page.status_code == 200 and "mallory" in page.text and "logged in as ann" in page.text
    assert "rlhf_session" not in page.headers.get("set-cookie", "")
    assert ann.get("/api/me").json()["name"] == "ann"  # still ann
    once = store.invite("rank", "una", single_use=True)
    preview = client(app)
    for _ in range(3):  # a chat preview, a second preview, ...
        assert preview.get(f"/invite/{once}").status_code == 200
    assert preview.get("/task").status_code == 401
    login = client(app).get(f"/invite/{once}")
    cookie = login.headers["set-cookie"].lower()
    assert "rlhf_login=" in cookie and "samesite=strict" in cookie and "httponly" in cookie
    # a form another site posts: no login cookie (SameSite=Strict), or a made-up token
    assert client(app).post(f"/invite/{once}", data={"csrf_token": "0" * 64}).status_code == 403
    stranger = client(app)
    stranger.get(f"/invite/{evil}")
    assert stranger.post(f"/invite/{once}", data={"csrf_token": "0" * 64}).status_code == 403
    assert stranger.get("/task").status_code == 401
    una = client(app)
    assert invite_login(una, once).status_code == 303  # the person's own click: the link still works once
    assert una.get("/api/me").json()["name"] == "una"
    assert client(app).get(f"/invite/{once}").status_code == 410


def test_revoke_ends_link_and_sessions_and_returns_the_lease(world):
    store, app, inv, _ = world
    ann = client(app, inv["ann"])
    assert ann.get("/task").status_code == 200  # leases an item
    before = store.progress("rank")["live_leases"]
    boss = client(app, inv["boss"])
    r = boss.post("/admin/revoke", data={"name": "ann", "csrf_token": admin_csrf(boss)}, follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/admin")
    assert ann.get("/task").status_code == 401
    assert client(app).get(f"/invite/{inv['ann']}").status_code == 404
    assert store.progress("rank")["live_leases"] == before - 1
    (row,) = [p for p in store.progress("rank")["people"] if p["name"] == "ann"]
    assert (row["role"], row["active"], row["status"]) == ("labeler", False, "revoked")
    assert "revoked" in boss.get("/admin").text
    again = store.invite("rank", "ann")  # a revoked person is re-invited without --replace
    assert store.login(again) is not None


def person_row(page: str, name: str) -> str:
    return re.search(rf'<tr class="person" data-name="{re.escape(name)}">(.*?)</tr>', page, re.S).group(1)


def test_the_people_table_tells_invited_from_active_shows_the_link_and_no_revoke_on_the_last_admin(world):
    """Issue 31, item 19: the People table said "active" for someone who never logged in, showed no link expiry or
    single use, and offered Revoke on the last admin (which then answered 409)."""
    store, app, inv, _ = world
    once = store.invite("rank", "una", single_use=True, expires_in=86400)
    store.invite("rank", "nel", expires_in=None)
    boss = client(app, inv["boss"])
    page = boss.get("/admin").text
    una = person_row(page, "una")
    assert "invited, not logged in yet" in una and "expires 1970-01-13 13:46 UTC" in una and "single use" in una
    assert "never expires" in person_row(page, "nel") and "invited, not logged in yet" in person_row(page, "ann")
    assert "Revoke" not in person_row(page, "boss") and "last admin" in person_row(page, "boss")
    assert "Revoke" in person_row(page, "ann")
    store.clock.now += 60
    assert invite_login(client(app), once).status_code == 303
    page = boss.get("/admin").text
    assert "active, last login 1970-01-12 13:47 UTC" in person_row(page, "una") and "used" in person_row(page, "una")
    assert "active, last login" in person_row(page, "boss")
    store.invite("rank", "deputy", "admin")
    assert "Revoke" in person_row(boss.get("/admin").text, "boss")  # another admin: either may go
    stats = boss.get("/api/projects/rank/stats").json()["people"]
    una = next(p for p in stats if p["name"] == "una")
    assert (una["status"], una["link"], una["single_use"], una["last_login_at"]) == ("active", "used", True,
                                                                                     store.clock.now)


def test_the_last_admin_cannot_be_demoted_or_revoked(world):
    store, app, inv, _ = world
    boss = client(app, inv["boss"])
    r = boss.post("/admin/invite", data={"name": "boss", "role": "labeler", "replace": "true",
                                         "csrf_token": admin_csrf(boss)})
    assert r.status_code == 409 and "last admin" in r.text
    r = boss.post("/admin/revoke", data={"name": "boss", "csrf_token": admin_csrf(boss)})
    assert r.status_code == 409 and "last admin" in r.text
    assert boss.get("/admin").status_code == 200  # still an admin
    store.invite("rank", "deputy", "admin")
    store.invite("rank", "boss", "labeler", replace=True)  # with another admin, fine
    with pytest.raises(Conflict, match="last admin"):
        store.revoke("rank", "deputy")


def test_admin_forms_need_an_admin_of_the_project_and_the_csrf_token(world):
    store, app, inv, _ = world
    ann, boss, oz = client(app, inv["ann"]), client(app, inv["boss"]), client(app, inv["oz"])
    ann_csrf = csrf_of(ann.get("/task").text)
    for path, data in (("/admin/revoke", {"name": "boss"}), ("/admin/guidelines", {"markdown": "x"}),
                       ("/admin/invite", {"name": "eve", "role": "admin"})):
        assert client(app).post(path, data=data).status_code == 401
        assert ann.post(path, data=data | {"csrf_token": ann_csrf}).status_code == 403
        assert boss.post(path, data=data).status_code == 403  # no CSRF token
        assert boss.post(path, data=data | {"csrf_token": ann_csrf}).status_code == 403  # someone else's
    # An admin of another project acts on their own project only: "boss" is not theirs.
    r = oz.post("/admin/revoke", data={"name": "boss", "csrf_token": admin_csrf(oz)})
    assert r.status_code == 404 and store.who(store.login(inv["boss"])) is not None
    assert store.guidelines("rank") == "" and "eve" not in str(store.progress("rank")["people"])


def test_names_are_escaped_on_the_admin_pages(world):
    store, app, inv, _ = world
    store.invite("rank", XSS_TEXT[:60])
    boss = client(app, inv["boss"])
    page = boss.get("/admin").text
    assert "<script>window" not in page and "&lt;script&gt;window" in page
    r = boss.post("/admin/invite", data={"name": XSS_TEXT[:60], "role": "labeler", "csrf_token": csrf_of(page)})
    assert r.status_code == 200 and "<script>window" not in r.text and "&lt;script&gt;" in r.text


def test_cli_invite_replace_expires_single_use_and_revoke(tmp_path, capsys):
    db = str(tmp_path / "l.db")
    cands = str(write_candidates(tmp_path / "c.jsonl", 2, 2))
    assert main(["label", "import", "--db", db, "--project", "p", cands]) == 0
    capsys.readouterr()
    base = ["label", "invite", "--db", db, "--project", "p", "--name", "ann"]
    assert main(base + ["--public-url", PUBLIC, "--expires", "48h", "--single-use"]) == 0
    assert capsys.readouterr().out.startswith(PUBLIC + "/invite/")
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "already invited" in err and "--replace" in err and len(err.strip().splitlines()) == 1
    assert main(base + ["--replace"]) == 0
    assert main(base + ["--replace", "--expires", "soon"]) == 2 and "'expires'" in capsys.readouterr().err
    assert main(base + ["--replace", "--public-url", "labels.example.org"]) == 2
    assert main(["label", "revoke", "--db", db, "--project", "p", "--name", "ann"]) == 0
    assert main(["label", "revoke", "--db", db, "--project", "p", "--name", "nobody"]) == 2
    people = {p["name"]: p for p in open_store(db).progress("p")["people"]}
    assert people["ann"]["active"] is False


# --------------------------------------------------------------------------------------- guidelines

GUIDE = "# How to rank\n\nPrefer **honest** answers.\n\n" + XSS_TEXT + "\n\n[click](javascript:alert(1))\n"


def test_guidelines_are_shown_before_the_first_item_then_on_every_item(world):
    store, app, inv, _ = world
    store.set_guidelines("rank", GUIDE)
    ann = client(app, inv["ann"])
    first = ann.get("/task").text
    assert 'action="/guidelines/read"' in first and 'action="/task/' not in first
    assert "<strong>honest</strong>" in first and "<h1>How to rank</h1>" in first
    assert "<script>window" not in first and "&lt;script&gt;window.__xss" in first and "href=\"javascript" not in first
    assert all(str(escape(help_)) in first for help_ in FLAG_HELP.values())  # the eight flags, each with its meaning
    assert ann.post("/guidelines/read", data={}).status_code == 403  # CSRF
    r = ann.post("/guidelines/read", data={"csrf_token": csrf_of(first)}, follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/task")
    page = ann.get("/task").text
    assert 'action="/task/' in page and 'id="guidelines-panel"' in page and "<strong>honest</strong>" in page
    assert f'title="{escape(FLAG_HELP["harmful_advice"])}"' in page
    store.clock.now += 1
    store.set_guidelines("rank", GUIDE + "\nNew rule.")
    assert 'action="/guidelines/read"' in ann.get("/task").text  # changed: shown again


def test_guidelines_api_and_admin_page(world):
    store, app, inv, _ = world
    boss, ann, oz = client(app), client(app), client(app)
    h = {"X-CSRF-Token": boss.post("/api/session", json={"token": inv["boss"]}).json()["csrf_token"]}
    ann_h = {"X-CSRF-Token": ann.post("/api/session", json={"token": inv["ann"]}).json()["csrf_token"]}
    oz_h = {"X-CSRF-Token": oz.post("/api/session", json={"token": inv["oz"]}).json()["csrf_token"]}
    url = "/api/projects/rank/guidelines"
    assert client(app).put(url, json={"markdown": "x"}).status_code == 401
    assert boss.put(url, json={"markdown": "x"}).status_code == 403  # no CSRF header
    assert ann.put(url, json={"markdown": "x"}, headers=ann_h).status_code == 403  # a labeler
    assert oz.put(url, json={"markdown": "x"}, headers=oz_h).status_code == 403  # another project's admin
    r = boss.put(url, json={"markdown": GUIDE}, headers=h)
    assert r.status_code == 200 and "<script>" not in r.json()["html"] and "&lt;script&gt;" in r.json()["html"]
    got = ann.get("/api/guidelines").json()
    assert got["markdown"] == GUIDE and got["project"] == "rank"
    assert oz.get("/api/guidelines").json()["markdown"] == ""  # each reads their own project's
    assert client(app).get("/api/guidelines").status_code == 401
    assert client(app).get("/guidelines").status_code == 401
    assert "Prefer <strong>honest</strong>" in client(app, inv["ann"]).get("/guidelines").text
    assert "honest" not in client(app, inv["oz"]).get("/guidelines").text  # IDOR: only one's own project
    page = client(app, inv["boss"])
    r = page.post("/admin/guidelines", data={"markdown": "Be *kind*.", "csrf_token": admin_csrf(page)},
                  follow_redirects=False)
    assert r.status_code == 303 and store.guidelines("rank") == "Be *kind*."
    assert "<em>kind</em>" in page.get("/admin").text


def test_cli_guidelines(tmp_path, capsys):
    db = str(tmp_path / "l.db")
    main(["label", "import", "--db", db, "--project", "p", str(write_candidates(tmp_path / "c.jsonl", 2, 2))])
    capsys.readouterr()
    md = tmp_path / "guide.md"
    md.write_text("Rank by **helpfulness** first.\n", encoding="utf-8")
    cmd = ["label", "guidelines", "--db", db, "--project", "p"]
    assert main(cmd + [str(md)]) == 0 and "set, 31 characters" in capsys.readouterr().out
    assert main(cmd + ["--show"]) == 0 and "helpfulness" in capsys.readouterr().out
    assert main(cmd + [str(tmp_path / "none.md")]) == 2 and "no such file" in capsys.readouterr().err
    assert main(cmd) == 2 and "give one of" in capsys.readouterr().err
    assert main(cmd + ["--clear"]) == 0 and open_store(db).guidelines("p") == ""


# ------------------------------------------------------------------------------- conversation prompts

CHAT = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi " + XSS_TEXT},
        {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "List 3 fruits."}]


def test_a_conversation_prompt_is_shown_as_turns_and_exported_as_the_list(world):
    store, app, _, _ = world
    store.import_items("chat", "rank", 1, [{"id": "c1", "prompt": CHAT, "completions": [
        {"text": "apple, pear, fig"}, {"text": "banana"}]}])
    token = store.invite("chat", "cat")
    c = client(app, token)
    page = c.get("/task").text
    turns = re.findall(r'<li class="turn turn-(\w+)"[^>]*>\s*<span class="role">(\w+)</span>', page)
    assert turns == [("system", "system"), ("user", "user"), ("assistant", "assistant"), ("user", "user")]
    assert "<script>window" not in page and "Hi &lt;script&gt;window.__xss" in page
    h = {"X-CSRF-Token": c.post("/api/session", json={"token": token}).json()["csrf_token"]}
    task = c.post("/api/next", headers=h).json()["task"]
    assert task["prompt"] == CHAT
    body = {"client_id": str(uuid.uuid4()), "assignment_id": task["assignment_id"], "kind": "rank",
            "ranking": [[0], [1]], "likert": [6, 2]}
    assert c.post("/api/submissions", json=body, headers=h).status_code == 201
    (row,) = store.submissions("chat")
    assert row["prompt"] == CHAT
    assert store.submissions("rank") == [] or all(isinstance(r["prompt"], str) for r in store.submissions("rank"))
    assert json.loads(json.dumps(row["prompt"])) == CHAT
