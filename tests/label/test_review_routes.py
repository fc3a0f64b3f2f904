"""Issue 19, review and quality control through the routes and the CLI: history and edits (versions, locks),
the admin review queue (send back, accept), gold items; roles, CSRF, escaping and IDOR on every new route."""

import json
import re
import uuid

import pytest
from fastapi.testclient import TestClient

from rlhfkit.cli import main
from rlhfkit.label.app import create_app
from rlhfkit.label.commands import open_store, read_items
from rlhfkit.label.deps import admin_user, current_user, form_csrf, header_csrf, project_admin
from rlhfkit.label.export import records
from rlhfkit.label.routes import review as review_routes
from rlhfkit.label.stats import project_stats
from tests.label.conftest import XSS_TEXT, stand_in_answer, write_candidates

EVIL_NAME = '<img src=x onerror="window.__xss=3">'


@pytest.fixture
def world(tmp_path):
    """Project `rank` (4 items of 3 outputs, overlap 2): ann, bob (labelers), boss (admin); `other`: oz."""
    db = str(tmp_path / "labels.db")
    store = open_store(db, migrate=True)
    store.import_items("rank", "rank", 2, read_items(str(write_candidates(tmp_path / "c.jsonl", 4, 3)), "rank"))
    store.import_items("other", "rank", 1, read_items(str(write_candidates(tmp_path / "o.jsonl", 1, 2)), "rank"))
    inv = {"ann": store.invite("rank", "ann"), "bob": store.invite("rank", EVIL_NAME),
           "boss": store.invite("rank", "boss", "admin"), "oz": store.invite("other", "oz", "admin")}
    return store, create_app(store), inv, db


class Person:
    """A browser (cookie jar) that also speaks the API with its CSRF token."""

    def __init__(self, app, token):
        self.c = TestClient(app, base_url="http://127.0.0.1")
        self.csrf = self.c.post("/api/session", json={"token": token}).json()["csrf_token"]

    def api(self, method, url, **kw):
        return self.c.request(method, url, headers={"X-CSRF-Token": self.csrf}, **kw)

    def answer(self, ranking=None, notes=None) -> dict:
        """Answer the next item (the stand-in's ranking, or `ranking` by output position as shown)."""
        task = self.api("POST", "/api/next").json()["task"]
        body = stand_in_answer(task)
        if ranking is not None:
            idx = [o["index"] for o in task["outputs"]]
            body["ranking"] = [[idx[p] for p in group] for group in ranking]
        if notes is not None:
            body["notes"] = notes
        r = self.api("POST", "/api/submissions", json=body)
        assert r.status_code == 201, r.text
        return {"task": task, "receipt": r.json(), "body": body}


def edit_body(task, ranking_by_index, **extra) -> dict:
    k = len(task["outputs"])
    return {"client_id": str(uuid.uuid4()), "kind": "rank", "ranking": ranking_by_index, "likert": [4] * k} | extra


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


# ------------------------------------------------------------------------------------ history, edits

def test_history_newest_first_and_an_edit_is_a_new_version_that_exports_take(world):
    store, app, inv, _ = world
    ann = Person(app, inv["ann"])
    first, second = ann.answer(), ann.answer()
    hist = ann.api("GET", "/api/history").json()["answers"]
    assert [h["submission_id"] for h in hist] == [second["receipt"]["submission_id"],
                                                  first["receipt"]["submission_id"]]
    assert hist[0]["item_id"] == second["task"]["item_id"] and hist[0]["editable"] and hist[0]["version"] == 1
    sid, task = first["receipt"]["submission_id"], first["task"]
    body = edit_body(task, [[2], [1], [0]], elapsed_ms=5000)
    r = ann.api("PUT", f"/api/history/{sid}", json=body)
    assert r.status_code == 200 and r.json()["duplicate"] is False
    assert ann.api("PUT", f"/api/history/{sid}", json=body).json()["duplicate"] is True  # a resend: stored once
    entry = ann.api("GET", f"/api/history/{sid}").json()
    assert entry["version"] == 2 and entry["answer"]["tiers"] == {"0": 2, "1": 1, "2": 0}
    (v1,) = entry["versions"]
    assert v1["version"] == 1 and v1["answer"]["tiers"] == {str(i): t for t, g in enumerate(first["body"]["ranking"])
                                                            for i in g}
    assert ann.api("GET", "/api/history").json()["answers"][0]["submission_id"] == sid  # edited: newest now
    imported = {r["public_id"]: r["id"] for r in store.submissions("rank")}  # labelers see the public id
    rows = [r for r in records(store.submissions("rank"), "rankings") if r["id"] == imported[task["item_id"]]]
    assert [r["ranking"] for r in rows] == [[[2], [1], [0]]]  # one record, the latest version
    raw = [r for r in store.submissions("rank") if r["submission_id"] == sid][0]
    assert raw["version"] == 2 and raw["elapsed_ms"] == 1234 + 5000
    r = ann.api("PUT", f"/api/history/{sid}", json=edit_body(task, [[0], [1]]))
    assert r.status_code == 422 and "missing output index: 2" in r.json()["detail"]


def test_the_edit_page_is_filled_in_and_posting_it_stores_a_version(world):
    store, app, inv, _ = world
    ann = Person(app, inv["ann"])
    done = ann.answer(notes=["</script><b>x</b>", "", ""])
    sid = done["receipt"]["submission_id"]
    page = ann.c.get(f"/history/{sid}/edit").text
    assert f'action="/history/{sid}"' in page and 'src="/static/edit.js"' in page
    prefill = json.loads(re.search(r'<script type="application/json" id="prefill">(.*?)</script>', page, re.S).group(1))
    assert ["note_0", "</script><b>x</b>"] in prefill and "</script><b>" not in page  # JSON-escaped in the page
    assert sum(1 for name, _ in prefill if name.startswith("tier_")) == 3
    csrf = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page).group(1)
    form = {"csrf_token": csrf, "client_id": str(uuid.uuid4()), "kind": "rank", "tier_0": "1", "tier_1": "1",
            "tier_2": "2", "likert_0": "5", "likert_1": "5", "likert_2": "2"}
    r = ann.c.post(f"/history/{sid}", data=form, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/history"
    r = ann.c.post(f"/history/{sid}", data=form | {"client_id": str(uuid.uuid4())}, headers={"HX-Request": "true"})
    assert r.headers["HX-Redirect"] == "/history"
    assert store.history_entry(store.who(ann.c.cookies["rlhf_session"]), sid)["version"] == 3
    shown = [o["index"] for o in done["task"]["outputs"]]  # the history numbers outputs as they were shown
    tied = sorted(shown.index(i) + 1 for i in (0, 1))
    expected = f"{tied[0]} = {tied[1]} &gt; {shown.index(2) + 1}"
    assert re.search(rf"<td>{expected}</td>\s*<td>3</td>", ann.c.get("/history").text)


def test_locks_stop_edits_until_unlocked(world, capsys):
    store, app, inv, db = world
    ann = Person(app, inv["ann"])
    done = ann.answer()
    sid, task = done["receipt"]["submission_id"], done["task"]
    code, out, _ = run(capsys, "label", "lock", "--db", db, "--project", "rank", "--item", task["item_id"])
    assert code == 0 and f"item {task['item_id']} of project rank locked" in out
    r = ann.api("PUT", f"/api/history/{sid}", json=edit_body(task, [[0], [1], [2]]))
    assert r.status_code == 409 and "locked" in r.json()["detail"]
    assert ann.api("GET", "/api/history").json()["answers"][0]["editable"] is False
    assert run(capsys, "label", "lock", "--db", db, "--project", "rank", "--item", task["item_id"], "--unlock")[0] == 0
    assert ann.api("PUT", f"/api/history/{sid}", json=edit_body(task, [[0], [1], [2]])).status_code == 200
    assert run(capsys, "label", "lock", "--db", db, "--project", "rank")[0] == 0
    assert ann.api("PUT", f"/api/history/{sid}", json=edit_body(task, [[1], [0], [2]])).status_code == 409
    assert store.progress("rank")["locked"] is True
    code, _, err = run(capsys, "label", "lock", "--db", db, "--project", "rank", "--item", "nope")
    assert code == 2 and "has no item 'nope'" in err


def test_nobody_sees_or_edits_another_persons_answers(world):
    """IDOR: another labeler's (or project's) submission id is 404 on every route, and nothing changes."""
    store, app, inv, _ = world
    ann, bob, oz = Person(app, inv["ann"]), Person(app, inv["bob"]), Person(app, inv["oz"])
    done = ann.answer()
    sid, task = done["receipt"]["submission_id"], done["task"]
    for who in (bob, oz):
        assert who.api("GET", f"/api/history/{sid}").status_code == 404
        assert who.api("PUT", f"/api/history/{sid}", json=edit_body(task, [[2], [1], [0]])).status_code == 404
        assert who.c.get(f"/history/{sid}/edit").status_code == 404
        assert who.c.post(f"/history/{sid}", data={"csrf_token": who.csrf, "kind": "rank"}).status_code == 404
        assert all(h["submission_id"] != sid for h in who.api("GET", "/api/history").json()["answers"])
    # an admin of another project reviews only their own project's answers
    r = oz.c.post(f"/admin/review/{sid}", data={"csrf_token": oz.csrf, "action": "send_back", "comment": "no"})
    assert r.status_code == 404
    assert oz.api("POST", f"/api/projects/other/review/{sid}", json={"action": "accept"}).status_code == 404
    assert ann.api("GET", f"/api/history/{sid}").json()["version"] == 1
    assert ann.api("GET", f"/api/history/{sid}").json()["review"] is None


def test_every_new_route_needs_its_role_and_the_csrf_token(world):
    store, app, inv, _ = world
    ann, boss = Person(app, inv["ann"]), Person(app, inv["boss"])
    done = ann.answer()
    sid, task = done["receipt"]["submission_id"], done["task"]
    stranger = TestClient(app, base_url="http://127.0.0.1")
    for url in ("/history", f"/history/{sid}/edit", "/api/history", "/admin/review", "/api/projects/rank/review"):
        assert stranger.get(url).status_code == 401, url
    # a labeler cannot review
    assert ann.c.get("/admin/review").status_code == 403
    assert ann.api("GET", "/api/projects/rank/review").status_code == 403
    assert ann.api("POST", f"/api/projects/rank/review/{sid}", json={"action": "accept"}).status_code == 403
    r = ann.c.post(f"/admin/review/{sid}", data={"csrf_token": ann.csrf, "action": "send_back", "comment": "x"})
    assert r.status_code == 403
    # CSRF: a form without the token, an API call without the header
    assert boss.c.post(f"/admin/review/{sid}", data={"action": "accept"}).status_code == 403
    assert boss.c.post(f"/api/projects/rank/review/{sid}", json={"action": "accept"}).status_code == 403
    assert ann.c.put(f"/api/history/{sid}", json=edit_body(task, [[2], [1], [0]])).status_code == 403
    assert ann.c.post(f"/history/{sid}", data={"kind": "rank", "tier_0": "1"}).status_code == 403
    assert ann.api("GET", f"/api/history/{sid}").json()["version"] == 1
    assert store.submissions("rank")[0]["review"] is None
    # and every one of them says so in its dependencies (a route added later without them fails here)
    for route in review_routes.pages.routes + review_routes.api.routes:
        calls = dependency_calls(route)
        assert current_user in calls or project_admin in calls, route.path
        if route.methods & {"POST", "PUT"}:
            assert form_csrf in calls or header_csrf in calls, route.path
    assert all(admin_user in dependency_calls(r) for r in review_routes.admin_pages.routes)
    assert all(project_admin in dependency_calls(r) for r in review_routes.api.routes if "/projects/" in r.path)


def dependency_calls(route) -> set:
    out, stack = set(), [route.dependant]
    while stack:
        d = stack.pop()
        out.add(d.call)
        stack += d.dependencies
    return out


# ------------------------------------------------------------------------------------------- review

def test_review_queue_by_disagreement_then_send_back_returns_the_item_with_the_comment(world, capsys):
    store, app, inv, db = world
    ann, bob, boss = Person(app, inv["ann"]), Person(app, inv["bob"]), Person(app, inv["boss"])
    a1 = ann.answer(ranking=[[0], [1], [2]], notes=["n0", "", ""])  # item 1
    b1 = bob.answer(ranking=[[0], [1], [2]])  # item 1 again (most-started first)
    assert b1["task"]["item_id"] == a1["task"]["item_id"]
    a2 = ann.answer()
    b2 = bob.answer()
    assert a2["task"]["item_id"] == b2["task"]["item_id"]
    # bob reverses ann's order on item 2 (by candidate index): the most disputed item
    by_index = [[i] for g in a2["body"]["ranking"] for i in g][::-1]
    assert bob.api("PUT", f"/api/history/{b2['receipt']['submission_id']}",
                   json=edit_body(b2["task"], by_index)).status_code == 200
    q = boss.api("GET", "/api/projects/rank/review").json()["items"]
    assert q[0]["public_id"] == a2["task"]["item_id"] and q[0]["disagreement"] == 1
    assert q[1]["public_id"] == a1["task"]["item_id"] and q[1]["disagreement"] == 0
    first = {a["labeler"]: a for a in q[1]["answers"]}
    assert first["ann"]["output_notes"][0] == "n0"  # notes go by output index
    assert first["ann"]["elapsed_ms"] == 1234 and first[EVIL_NAME]["version"] == 1
    code, out, _ = run(capsys, "label", "review", "--db", db, "--project", "rank")
    assert code == 0 and out.index(a2["task"]["item_id"] + "): disagreement 100%") < out.index(a1["task"]["item_id"])
    # send back needs a comment; then ann's next /task is the correction, with the comment and her answer
    sid = a2["receipt"]["submission_id"]
    r = boss.c.post(f"/admin/review/{sid}", data={"csrf_token": boss.csrf, "action": "send_back", "comment": " "})
    assert r.status_code == 422 and "needs a comment" in r.text
    r = boss.c.post(f"/admin/review/{sid}", data={"csrf_token": boss.csrf, "action": "send_back",
                                                  "comment": "Output order? " + XSS_TEXT}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/admin/review?offset=0#answer-{sid}"
    r = ann.c.get("/task", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/history/{sid}/edit"
    page = ann.c.get(f"/history/{sid}/edit").text
    assert "Output order? &lt;script&gt;window.__xss = 1&lt;/script&gt;" in page and "<script>window" not in page
    entry = ann.api("GET", f"/api/history/{sid}").json()
    assert entry["review"] == {"action": "send_back", "comment": "Output order? " + XSS_TEXT, "open": True}
    assert ann.api("PUT", f"/api/history/{sid}", json=edit_body(a2["task"], by_index)).status_code == 200
    assert ann.api("GET", f"/api/history/{sid}").json()["review"]["open"] is False
    assert ann.c.get("/task", follow_redirects=False).status_code == 200  # back to new items
    # accept; the review page escapes comments and names
    assert boss.api("POST", f"/api/projects/rank/review/{sid}", json={"action": "accept"}).json()["version"] == 2
    html = boss.c.get("/admin/review").text
    assert "&lt;img src=x onerror=" in html and EVIL_NAME not in html and "<script>window" not in html
    assert "accepted by boss" in html


def test_a_skip_is_shown_for_review_but_cannot_be_sent_back(world):
    store, app, inv, _ = world
    ann, boss = Person(app, inv["ann"]), Person(app, inv["boss"])
    task = ann.api("POST", "/api/next").json()["task"]
    r = ann.api("POST", "/api/submissions", json={"client_id": str(uuid.uuid4()), "assignment_id":
                                                  task["assignment_id"], "kind": "skip", "reason": "expertise",
                                                  "notes": "medical"})
    sid = r.json()["submission_id"]
    (item,) = boss.api("GET", "/api/projects/rank/review").json()["items"]
    assert item["answers"][0]["skip_reason"] == "expertise" and item["answers"][0]["notes"] == "medical"
    r = boss.api("POST", f"/api/projects/rank/review/{sid}", json={"action": "send_back", "comment": "please"})
    assert r.status_code == 409
    assert ann.api("PUT", f"/api/history/{sid}", json=edit_body(task, [[0], [1], [2]])).status_code == 409


# --------------------------------------------------------------------------------------------- gold

def gold_file(path, n: int, k: int = 3, prefix: str = "gold-"):
    """n gold items; the known answer: the longest output first (what the stand-in labeler does)."""
    lines = []
    for i in range(n):
        outs = [f"gold answer {j}: " + "word " * (j + 1) for j in range(k)]
        lines.append(json.dumps({"id": f"{prefix}{i}", "prompt": f"Gold question {i}", "completions": outs,
                                 "ranking": [[j] for j in reversed(range(k))]}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_gold_items_mixed_in_hidden_scored_and_never_exported(tmp_path, capsys):
    db = str(tmp_path / "l.db")
    store = open_store(db, migrate=True)
    store.import_items("p", "rank", 1, read_items(str(write_candidates(tmp_path / "c.jsonl", 40, 3)), "rank"))
    inv = {"ann": store.invite("p", "ann"), "boss": store.invite("p", "boss", "admin")}
    code, out, _ = run(capsys, "label", "gold", "--db", db, "--project", "p", str(gold_file(tmp_path / "g.jsonl", 8)),
                       "--rate", "0.3", "--threshold", "0.9")
    assert code == 0 and "8 gold items added" in out and "gold rate 30%" in out
    app = create_app(open_store(db))
    ann, boss = Person(app, inv["ann"]), Person(app, inv["boss"])
    seen = []
    while (task := ann.api("POST", "/api/next").json()["task"]) is not None:
        body = stand_in_answer(task)
        if task["prompt"].startswith("Gold") and len(seen) % 2:  # every other gold item answered the wrong way
            body["ranking"] = body["ranking"][::-1]
        receipt = ann.api("POST", "/api/submissions", json=body).json()
        seen.append((task, receipt))
    gold_tasks = [t for t, _ in seen if t["prompt"].startswith("Gold")]
    assert len(seen) == 48 and len(gold_tasks) == 8  # every gold item, mixed in among the 40
    is_gold = [t["prompt"].startswith("Gold") for t, _ in seen]
    assert True in is_gold[:20] and False in is_gold[:20]  # mixed in, not after the regular items
    # the gold ids never reach the labeler: not in tasks, receipts, history, pages
    everything = json.dumps(seen) + ann.c.get("/api/history").text + ann.c.get("/history").text
    assert "gold-" not in everything
    st = boss.api("GET", "/api/projects/p/stats").json()
    assert st["items"] == 40 and st["gold_items"] == 8 and st["gold_rate"] == 0.3
    q = st["quality"]["ann"]
    assert q["gold_answers"] == 8 and 0 < q["gold_accuracy"] < 0.9 and q["flagged"]
    assert q["reasons"] == [f"gold accuracy {100 * q['gold_accuracy']:.0f}% < 90%"]
    assert all(not r["id"].startswith("gold-") for r in store.submissions("p"))
    for fmt in ("rankings", "pairs", "raw"):
        assert "gold" not in boss.c.get(f"/admin/export?format={fmt}").text.replace("gold_", "")
    assert "flagged" in boss.c.get("/admin").text
    code, out, _ = run(capsys, "label", "stats", "--db", db, "--project", "p")
    assert code == 0 and "quality control (gold rate 30%, 8 gold items" in out and "gold accuracy" in out


def test_gold_rates_are_hidden_until_there_is_enough_data(tmp_path, capsys):
    db = str(tmp_path / "l.db")
    store = open_store(db, migrate=True)
    store.import_items("p", "rank", 1, read_items(str(write_candidates(tmp_path / "c.jsonl", 3, 3)), "rank"))
    store.import_gold("p", [{"id": "g", "prompt": "G", "completions": ["a", "bb", "ccc"], "ranking": [[2], [1], [0]]}])
    store.set_quality("p", gold_rate=1.0)
    ann = Person(create_app(store), store.invite("p", "ann"))
    task = ann.api("POST", "/api/next").json()["task"]
    assert task["prompt"] == "G"  # rate 1: the gold item first
    ann.api("POST", "/api/submissions", json=stand_in_answer(task))
    q = project_quality(store)["ann"]
    assert q["gold_answers"] == 1 and q["gold_accuracy"] is None and not q["flagged"]


def project_quality(store):
    return project_stats(store.progress("p"), store.submissions("p"), store.gold_answers("p"))["quality"]


@pytest.mark.parametrize("argv, message", [
    (["{db}", "demo", "{gold}"], "collects demonstrations: gold items need rank or pairwise"),
    (["{db}", "p", "{regular}"], "a candidates file; gold items are rankings records"),
    (["{db}", "p", "{clash}"], "gold item 'q000': project 'p' has a regular item with this id"),
    (["{db}", "p", "--rate", "1.5"], "--rate must be from 0 to 1, got 1.5"),
    (["{db}", "p"], "give a gold FILE, --rate or --threshold"),
])
def test_gold_errors_are_one_line(tmp_path, capsys, argv, message):
    db = str(tmp_path / "l.db")
    cands = write_candidates(tmp_path / "c.jsonl", 2, 3)
    store = open_store(db, migrate=True)
    store.import_items("p", "rank", 1, read_items(str(cands), "rank"))
    store.import_items("demo", "demo", 1, read_items(str(cands), "demo"))
    paths = {"db": db, "gold": str(gold_file(tmp_path / "g.jsonl", 2)), "regular": str(cands),
             "clash": str(gold_file(tmp_path / "x.jsonl", 1, prefix="q00"))}
    db_, project, *rest = [a.format(**paths) for a in argv]
    code, _, err = run(capsys, "label", "gold", "--db", db_, "--project", project, *rest)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert store.progress("p")["gold_items"] == 0


@pytest.mark.parametrize("mode, k", [("pairwise", 2), ("demo", 2)])
def test_pairwise_and_demonstration_answers_are_edited_too(tmp_path, mode, k):
    store = open_store(str(tmp_path / "l.db"), migrate=True)
    store.import_items("p", mode, 1, read_items(str(write_candidates(tmp_path / "c.jsonl", 1, k)), mode))
    ann = Person(create_app(store), store.invite("p", "ann"))
    task = ann.api("POST", "/api/next").json()["task"]
    body = stand_in_answer(task) | ({"choice": "A", "notes": "first"} if mode == "pairwise" else {})
    sid = ann.api("POST", "/api/submissions", json=body).json()["submission_id"]
    new = {"client_id": str(uuid.uuid4()), "kind": mode} | (
        {"choice": "B", "notes": "second"} if mode == "pairwise" else {"text": "A better demonstration."})
    assert ann.api("PUT", f"/api/history/{sid}", json=new).status_code == 200
    entry = ann.api("GET", f"/api/history/{sid}").json()
    (row,) = store.submissions("p")
    if mode == "pairwise":
        a, b = [o["index"] for o in task["outputs"]]
        assert row["tiers"] == {b: 0, a: 1} and row["notes"] == "second" and row["choice"] == "B"
        assert entry["versions"][0]["answer"]["choice"] == "A" and entry["versions"][0]["answer"]["notes"] == "first"
        assert records(store.submissions("p"), "rankings")[0]["ranking"] == [[b], [a]]
    else:
        assert row["demonstration"] == "A better demonstration." and entry["version"] == 2
        assert entry["versions"][0]["answer"]["text"].startswith("An ideal answer to")
        assert records(store.submissions("p"), "demos")[0]["completion"] == "A better demonstration."
    wrong = {"client_id": str(uuid.uuid4()), "kind": "skip", "reason": "unclear"}
    assert ann.api("PUT", f"/api/history/{sid}", json=wrong).status_code == 422  # an answer stays an answer


# -------------------------------------------------------------------------------------------- issue 31

def output_html(page: str, name: str) -> str:
    """The HTML of the task page's Output `name` (1, 2, ... or A, B)."""
    return re.search(rf'id="output-{name}".*?</article>', page, re.S).group(0)


@pytest.fixture
def shuffled(tmp_path):
    """Project `r` (1 item of 4 outputs, the odd ones imported with finished=false, overlap 2): ann and bob open it
    on the page and rank it by shown position, ann best first, bob worst first; boss is its admin. Project `ab`
    (1 pair, the second output cut off): cy has it open."""
    db = str(tmp_path / "labels.db")
    store = open_store(db, migrate=True)
    store.import_items("r", "rank", 2, [{"id": "x", "prompt": "Say it.", "completions": [
        {"text": f"output text {j}", "source": "s", "finished": j % 2 == 0} for j in range(4)]}])
    store.import_items("ab", "pairwise", 1, [{"id": "y", "prompt": "Pick.", "completions": [
        {"text": "left text", "source": "s"}, {"text": "right text", "source": "s", "finished": False}]}])
    app = create_app(store)
    ann, bob = Person(app, store.invite("r", "ann")), Person(app, store.invite("r", "bob"))
    boss, cy = Person(app, store.invite("r", "boss", "admin")), Person(app, store.invite("ab", "cy"))
    pages = {who: (who.c.get("/task").text, who.api("POST", "/api/next").json()["task"]) for who in (ann, bob, cy)}
    a, b = ann.answer(ranking=[[0], [1], [2], [3]]), bob.answer(ranking=[[3], [2], [1], [0]])
    shown = {"ann": [o["index"] for o in a["task"]["outputs"]], "bob": [o["index"] for o in b["task"]["outputs"]]}
    assert shown["ann"] != shown["bob"] and shown["ann"] != [0, 1, 2, 3]  # two shuffles, neither the imported order
    return {"db": db, "ann": ann, "boss": boss, "pages": pages, "answers": {"ann": a, "bob": b}, "shown": shown}


def test_cut_off_outputs_are_marked_on_every_page_that_shows_outputs(shuffled):
    """Issue 31, item 18: an output imported with finished=false looked like the others (only the API had the flag);
    it is marked "cut off" on the rank and A/B pages, the edit page and the review queue."""
    for page, task in shuffled["pages"].values():
        for n, o in enumerate(task["outputs"], start=1):  # the page's Output n is the task's outputs[n - 1]
            name = "AB"[n - 1] if task["mode"] == "pairwise" else n
            assert ("cut off" in output_html(page, name)) == (not o["finished"]) == (o["index"] % 2 == 1)
    ann, shown = shuffled["ann"], shuffled["shown"]["ann"]
    edit = ann.c.get(f"/history/{shuffled['answers']['ann']['receipt']['submission_id']}/edit").text
    assert ["cut off" in output_html(edit, n) for n in (1, 2, 3, 4)] == [i % 2 == 1 for i in shown]
    hist = ann.api("GET", "/api/history").json()["answers"][0]
    assert [o["finished"] for o in hist["outputs"]] == [i % 2 == 0 for i in shown]
    review_page = shuffled["boss"].c.get("/admin/review").text
    assert review_page.count('<span class="cut-off"') == 2 * 2  # two cut-off outputs in each of two answers


def test_answers_are_reviewed_in_their_labelers_numbering(shuffled, capsys):
    """Issue 31, item 17: the review queue numbered outputs in imported order, the labeler's page as shown (each
    labeler's own shuffle), so "Output 4 is cut off" pointed at another output; now each answer is shown in its
    labeler's numbering (ranking, Likert, flags, notes, the outputs themselves), and the API gives the mapping."""
    boss, shown = shuffled["boss"], shuffled["shown"]
    review_page = boss.c.get("/admin/review").text
    for who, ranking in (("ann", "1 &gt; 2 &gt; 3 &gt; 4"), ("bob", "4 &gt; 3 &gt; 2 &gt; 1")):
        sid = shuffled["answers"][who]["receipt"]["submission_id"]
        row = re.search(rf'id="answer-{sid}".*?</tr>', review_page, re.S).group(0)
        assert f'<span class="ranking">{ranking}</span>' in row  # as the labeler ranked what they saw
        outs = re.findall(r'<b>Output (\d)</b>.*?<pre class="text">(.*?)</pre>', row, re.S)
        assert outs == [(str(n), f"output text {i}") for n, i in enumerate(shown[who], start=1)]
    (item,) = boss.api("GET", "/api/projects/r/review").json()["items"]
    assert {x["labeler"]: x["shown_order"] for x in item["answers"]} == shown
    code, out, _ = run(capsys, "label", "review", "--db", shuffled["db"], "--project", "r")
    assert code == 0 and "1 > 2 > 3 > 4" in out and "4 > 3 > 2 > 1" in out


def test_api_next_hands_back_a_sent_back_answer_before_a_new_item(world):
    """Issue 31, item 19: after a send-back the pages show the correction first, but /api/next leased API labelers a
    new item; now it answers with the sent-back answer (and no task) until it is edited."""
    _, app, inv, _ = world
    ann, boss = Person(app, inv["ann"]), Person(app, inv["boss"])
    done = ann.answer()
    sid = done["receipt"]["submission_id"]
    r = boss.api("POST", f"/api/projects/rank/review/{sid}", json={"action": "send_back", "comment": "Tie 1 and 2?"})
    assert r.status_code == 200
    nxt = ann.api("POST", "/api/next").json()
    assert nxt == {"task": None, "sent_back": {"submission_id": sid, "comment": "Tie 1 and 2?"}}
    assert ann.api("PUT", f"/api/history/{sid}", json=edit_body(done["task"], [[0, 1], [2]])).status_code == 200
    nxt = ann.api("POST", "/api/next").json()
    assert nxt["sent_back"] is None and nxt["task"]["item_id"] != done["task"]["item_id"]
