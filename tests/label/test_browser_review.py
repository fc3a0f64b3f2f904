"""Browser tests for issue 19's review and quality control (Chromium through Playwright, as test_browser.py):
edit an answer from the history, an admin sends one back and the labeler corrects it, gold items look like
any other item. Screenshots go to test-artifacts/ (label-history, label-edit, label-review)."""

from __future__ import annotations

import json
import uuid

import pytest

from rlhfkit.label.answers import parse_answer
from rlhfkit.label.commands import open_store, read_items
from tests.label import browsing
from tests.label.browsing import MARKS, expect, log_in
from tests.label.conftest import ARTIFACTS, XSS_TEXT, LiveServer, write_candidates

pytestmark = MARKS
browser, page = browsing.browser, browsing.page  # the shared fixtures


def answer(store, token: str, ranking_by_position) -> int:
    """`token`'s labeler answers their next item: outputs by shown position into tie groups; its id."""
    who = store.who(store.login(token))
    task = store.next_task(who)
    idx = [i for i, _ in task.outputs]
    body = {"client_id": str(uuid.uuid4()), "ranking": [[idx[p] for p in g] for g in ranking_by_position],
            "likert": [4] * len(idx)}
    return store.submit(who, task.assignment_id, parse_answer(body, "rank", len(idx))).submission_id


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser-review")
    db = str(tmp / "labels.db")
    store = open_store(db, migrate=True)
    store.import_items("rv", "rank", 2, read_items(str(write_candidates(tmp / "r.jsonl", 4, 3)), "rank"))
    store.import_items("gq", "rank", 1, read_items(str(write_candidates(tmp / "g.jsonl", 2, 3)), "rank"))
    store.import_gold("gq", [{"id": "gold-1", "prompt": "Which is longest?", "completions": ["a", "bb b", "c"],
                              "ranking": [[1], [0, 2]]}])
    store.set_quality("gq", gold_rate=1.0)
    store.import_items("sk", "rank", 2, read_items(str(write_candidates(tmp / "s.jsonl", 2, 3)), "rank"))
    tokens = {"ed": store.invite("rv", "ed"), "lu": store.invite("rv", "lu"), "cy": store.invite("rv", "cy"),
              "rae": store.invite("rv", "rae", "admin"), "gil": store.invite("gq", "gil"),
              "gadmin": store.invite("gq", "gus", "admin"), "tim": store.invite("sk", "tim"),
              "sam": store.invite("sk", "sam")}
    tim = store.who(store.login(tokens["tim"]))  # tim answered an item in 2 min 5 s
    task = store.next_task(tim)
    store.submit(tim, task.assignment_id, parse_answer({"client_id": str(uuid.uuid4()), "elapsed_ms": 125_000,
                                                        "ranking": [[i] for i, _ in task.outputs],
                                                        "likert": [4] * len(task.outputs)}, "rank", 3))
    # cy and lu answer the same item in opposite orders: the most disputed one in the queue
    disputed = (answer(store, tokens["cy"], [[0], [1], [2]]), answer(store, tokens["lu"], [[2], [1], [0]]))
    store.engine.dispose()
    server = LiveServer(db).start()
    yield server, tokens, db, disputed
    server.stop()


def shot(pg, name: str) -> None:
    pg.screenshot(path=str(ARTIFACTS / f"label-{name}.png"), full_page=True)


def tiers(pg) -> dict[str, str]:
    """Output number (as shown) -> its tier select's value."""
    return pg.eval_on_selector_all("article.output", "els => Object.fromEntries(els.map(e => "
                                   "[e.dataset.n, e.querySelector('select.tier-select').value]))")


def stored(db: str, labeler: str, project: str = "rv") -> list[dict]:
    store = open_store(db)
    try:
        return [r for r in store.submissions(project) if r["labeler"] == labeler]
    finally:
        store.engine.dispose()


def test_edit_an_answer_from_the_history_with_the_keys(world, page):
    server, tokens, db, _ = world
    log_in(page, server.url, tokens["ed"])
    page.wait_for_selector("#task[data-mode=rank]")
    for n in (1, 2, 3):  # output n -> tier n
        if n > 1:
            page.keyboard.press("j")
        page.keyboard.press(str(n))
        page.keyboard.press("Shift+Digit5")
    page.keyboard.press("Enter")
    expect(page.locator("#page-n")).to_have_text("2")
    page.click("nav a[href='/history']")
    page.wait_for_selector("#history")
    shot(page, "history")
    page.click("#history a.edit")
    page.wait_for_selector("#task[data-mode=rank]")
    assert tiers(page) == {"1": "1", "2": "2", "3": "3"}  # the answer, filled in
    assert [c.get_attribute("data-n") for c in page.locator(".tier[data-tier='1'] .chip").all()] == ["1"]
    assert page.locator("#skip").count() == 0  # an edit is not skipped: no form, no key in the help line
    assert "skip" not in page.locator("#help").inner_text()
    page.locator("#output-1").focus()
    page.keyboard.press("3")  # output 1 -> tier 3, output 3 -> tier 1
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.keyboard.press("1")
    shot(page, "edit")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{server.url}/history")
    assert page.locator("#history tbody tr").first.locator("td").nth(2).inner_text() == "3 > 2 > 1"
    (row,) = [r for r in stored(db, "ed") if r["kind"] == "rank"]
    assert row["version"] == 2
    shown = row["shown_order"]
    assert row["tiers"] == {shown[0]: 2, shown[1]: 1, shown[2]: 0}
    assert page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('rlhfkit-draft:'))") == []


def test_send_back_with_a_comment_then_the_labeler_corrects_it(world, browser, page):
    server, tokens, db, (cy_answer, lu_answer) = world
    boss = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
    log_in(boss, server.url, tokens["rae"])
    boss.goto(f"{server.url}/admin/review")
    first = boss.locator("section.review-item").first
    assert "disagreement 100%" in first.inner_text()
    row = boss.locator(f"#answer-{lu_answer}")
    row.locator("input[name=comment]").fill("Longest first, please. " + XSS_TEXT)
    row.locator("button.send-back").click()
    boss.wait_for_selector(f"#answer-{lu_answer} .review-state")
    assert "sent back by rae" in boss.locator(f"#answer-{lu_answer} .review-state").inner_text()
    boss.locator(f"#answer-{cy_answer} button.accept").click()
    boss.wait_for_selector(f"#answer-{cy_answer} .review-state")
    shot(boss, "review")
    assert boss.evaluate("window.__xss") is None
    # the labeler's next item is the correction, with the comment and their answer filled in
    log_in(page, server.url, tokens["lu"])
    page.wait_for_selector("#task[data-mode=rank]")
    assert page.url.endswith(f"/history/{lu_answer}/edit")
    assert "Longest first, please. <script>" in page.inner_text("#review-comment")
    assert page.evaluate("window.__xss") is None and page.dialogs == []
    assert tiers(page) == {"1": "3", "2": "2", "3": "1"}
    page.locator("#output-1").focus()
    for key in ("1", "j", "2", "j", "3"):
        page.keyboard.press(key)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{server.url}/history")
    assert "(corrected)" in page.inner_text(f"#answer-{lu_answer}")
    page.goto(f"{server.url}/task")
    page.wait_for_selector("#task[data-mode=rank]")
    assert "/history/" not in page.url  # back to new items
    boss.reload()
    assert "(corrected)" in boss.inner_text(f"#answer-{lu_answer}") and "disagreement 0%" in boss.inner_text(
        "section.review-item >> nth=0")  # cy and lu now agree: no longer the most disputed
    boss.context.close()


def test_a_gold_item_looks_like_any_other_and_counts_on_the_stats_page(world, browser, page):
    server, tokens, db, _ = world
    log_in(page, server.url, tokens["gil"])
    page.wait_for_selector("#task[data-mode=rank]")
    assert "Which is longest?" in page.inner_text("#prompt")  # rate 1: the gold item comes first
    html = page.content()
    assert "gold" not in html.lower() and "gold" not in page.title().lower()
    assert "gold" not in json.dumps(page.evaluate("Object.assign({}, document.querySelector('#task').dataset)"))
    for n in (1, 2, 3):
        if n > 1:
            page.keyboard.press("j")
        page.keyboard.press(str(n))
        page.keyboard.press("Shift+Digit4")
    page.keyboard.press("Enter")
    expect(page.locator("#page-n")).to_have_text("2")
    assert "gold" not in page.goto(f"{server.url}/history").text().lower()
    boss = browser.new_context().new_page()
    log_in(boss, server.url, tokens["gadmin"])
    quality = boss.inner_text("#quality")
    assert "1 gold items" in quality and "gil\t1\t–\t–" in quality  # one gold answer: too few for a rate
    assert stored(db, "gil", "gq") == []  # the gold answer is no training data
    boss.context.close()


# ------------------------------------------------------------------------------------- issue 31, item 19

def test_an_edit_is_not_item_1_of_n_and_its_timer_goes_on(world, page):
    """The edit page said "Item 1 of 5" and its timer started at 0:00 again; it says what it is, and the timer goes
    on from the answer's stored time (the store adds only this edit's time)."""
    server, tokens, db, _ = world
    log_in(page, server.url, tokens["tim"])
    page.goto(f"{server.url}/history")
    page.click("#history a.edit")
    page.wait_for_selector("#task[data-mode=rank]")
    assert page.locator("#page-n").count() == 0 and "Item" not in page.title()
    assert "Editing my answer (version 1)" in page.inner_text(".task-bar")
    assert int(page.inner_text("#timer").split(":")[0]) == 2  # from 2:05 on, not 0:00
    page.keyboard.press("Enter")  # the stored answer, filled in, stored again
    page.wait_for_url(f"{server.url}/history")
    (row,) = stored(db, "tim", "sk")
    assert row["version"] == 2 and 125_000 < row["elapsed_ms"] < 2 * 125_000


def test_enter_in_the_skip_panels_reason_list_skips(world, page):
    server, tokens, db, _ = world
    log_in(page, server.url, tokens["sam"])
    page.wait_for_selector("#task[data-mode=rank]")
    page.keyboard.press("s")  # opens the skip panel, its reason list focused
    page.select_option("#skip-form select", "expertise")
    page.focus("#skip-form select")
    page.keyboard.press("Enter")
    expect(page.locator("#page-n")).to_have_text("2")
    (row,) = stored(db, "sam", "sk")
    assert (row["kind"], row["skip_reason"]) == ("skip", "expertise")


def test_send_back_without_a_comment_is_checked_in_place(world, browser):
    """A send-back with an empty (or blank) comment left the page for a bare 422 page; the browser now says what is
    missing beside the field and sends nothing. Accept needs no comment."""
    server, tokens, _, _ = world
    boss = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
    log_in(boss, server.url, tokens["rae"])
    boss.goto(f"{server.url}/admin/review")
    posts = []
    boss.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    form = boss.locator("form.review-form:has(button.send-back)").first
    for comment in ("", "   "):
        form.locator("input[name=comment]").fill(comment)
        form.locator("button.send-back").click()
        assert form.locator("input[name=comment]").evaluate("e => !e.validity.valid && e.validationMessage !== ''")
    assert posts == [] and boss.url == f"{server.url}/admin/review"
    boss.context.close()


def test_admin_pages_fit_a_390_px_phone(world, browser):
    """The dashboard and the review queue were 623-660 px wide on a 390-px phone: the page scrolled sideways."""
    server, tokens, _, _ = world
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
                                  device_scale_factor=1)
    boss = context.new_page()
    log_in(boss, server.url, tokens["rae"])
    widths = {}
    for path in ("/admin", "/admin/review"):
        boss.goto(f"{server.url}{path}")
        widths[path] = boss.evaluate("document.documentElement.scrollWidth")
    context.close()
    assert widths == {"/admin": 390, "/admin/review": 390}
