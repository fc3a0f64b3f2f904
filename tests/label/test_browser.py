"""Browser tests: Playwright drives Debian's Chromium through every page type, keyboard first.

Screenshots of each page go to test-artifacts/ (README's come from test_browser_layout.py).
"""

from __future__ import annotations

import pytest

from rlhfkit.label.commands import open_store, read_items
from rlhfkit.label.export import records
from tests.label import browsing
from tests.label.browsing import MARKS, expect, log_in
from tests.label.conftest import ARTIFACTS, XSS_TEXT, LiveServer, write_candidates

pytestmark = MARKS
browser, page = browsing.browser, browsing.page  # the shared fixtures


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    db = str(tmp / "labels.db")
    store = open_store(db, migrate=True)
    store.import_items("rank", "rank", 3, read_items(str(write_candidates(tmp / "r.jsonl", 3, 5, first_text=XSS_TEXT)),
                                                     "rank"))
    store.import_items("ab", "pairwise", 3, read_items(str(write_candidates(tmp / "p.jsonl", 3, 2,
                                                                            first_text=XSS_TEXT)), "pairwise"))
    store.import_items("sft", "demo", 3, read_items(str(write_candidates(tmp / "d.jsonl", 3, 2)), "demo"))
    store.import_items("kb", "rank", 3, read_items(str(write_candidates(tmp / "k.jsonl", 6, 5)), "rank"))
    store.import_items("guide", "rank", 3, read_items(str(write_candidates(tmp / "g.jsonl", 2, 3)), "rank"))
    store.set_guidelines("guide", "# Our rules\n\nPrefer **short** answers.\n\n" + XSS_TEXT)
    tokens = {"rank": store.invite("rank", "rita"), "ab": store.invite("ab", "abe"), "sft": store.invite("sft", "dee"),
              "skip": store.invite("rank", "sam"), "admin": store.invite("rank", "ada", "admin"),
              "focus": store.invite("kb", "fay"), "flags": store.invite("kb", "flo"),
              "draft": store.invite("kb", "dru"), "error": store.invite("kb", "eve"),
              "guide": store.invite("guide", "gil")}
    store.engine.dispose()
    server = LiveServer(db).start()
    yield server, tokens, db
    server.stop()


def shot(pg, name: str, at: str | None = None) -> None:
    """The whole page, and one screenful as NAME-top.png: the first (what a labeler sees first), or the
    one showing the element `at` (e.g. the opened skip form at the bottom of a long page)."""
    pg.evaluate("window.scrollTo(0, 0)")
    pg.screenshot(path=str(ARTIFACTS / f"label-{name}.png"), full_page=True)
    if at is not None:
        pg.locator(at).scroll_into_view_if_needed()
    pg.screenshot(path=str(ARTIFACTS / f"label-{name}-top.png"))


def open_task(world, page, who: str, mode: str) -> None:
    server, tokens, _ = world
    log_in(page, server.url, tokens[who])
    page.wait_for_selector(f"#task[data-mode={mode}]")


def admin_export(world, project: str, fmt: str = "raw") -> list[dict]:
    _, _, db = world
    store = open_store(db)
    try:
        return records(store.submissions(project), fmt)
    finally:
        store.engine.dispose()


def test_rank_with_keyboard_tie_likert_flags_notes_then_next_item(world, page):
    open_task(world, page, "rank", "rank")
    assert page.inner_text("#page-n") == "1"
    # The XSS payload is on this first item: shown as text, nothing ran.
    assert "<script>window.__xss = 1</script>" in page.inner_text("#task")
    assert page.evaluate("window.__xss") is None and page.dialogs == []
    indices = page.eval_on_selector_all("article.output", "els => els.map(e => Number(e.dataset.index))")
    # Output 1 -> tier 1; outputs 2 and 3 tied in tier 2; output 4 -> tier 3; output 5 -> tier 4.
    page.keyboard.press("Escape")
    page.keyboard.press("1")
    for tier, likert in (("2", "6"), ("2", "6"), ("3", "3"), ("4", "1")):
        page.keyboard.press("j")
        page.keyboard.press(tier)
        page.keyboard.press(f"Shift+Digit{likert}")
    page.keyboard.press("k")
    page.keyboard.press("k")
    page.keyboard.press("k")
    page.keyboard.press("k")  # back on output 1
    page.keyboard.press("Shift+Digit7")
    page.keyboard.press("f")
    page.keyboard.press("7")  # flag 7 of output 1: gives harmful advice
    page.keyboard.press("n")
    page.keyboard.type("has a script tag <b>")
    page.keyboard.press("Escape")
    assert [c.get_attribute("data-n") for c in page.locator(".tier[data-tier='2'] .chip").all()] == ["2", "3"]
    shot(page, "rank")
    page.keyboard.press("Enter")
    expect(page.locator("#page-n")).to_have_text("2")
    assert page.evaluate("window.__xss") is None and page.dialogs == []
    (record,) = [r for r in admin_export(world, "rank", "rankings") if r["labeler"] == "rita"]
    assert record["ranking"] == [[indices[0]], sorted(indices[1:3]), [indices[3]], [indices[4]]]
    assert record["likert"][indices[0]] == 7 and record["likert"][indices[4]] == 1
    assert record["flags"][indices[0]]["harmful_advice"] is True
    assert record["notes"][indices[0]] == "has a script tag <b>"


def test_rank_refuses_an_incomplete_ranking_then_drag_and_drop_works(world, page):
    open_task(world, page, "rank", "rank")
    page.keyboard.press("Escape")
    page.keyboard.press("Enter")
    assert "Put every output in a tier" in page.inner_text("#form-error")
    page.drag_and_drop(".unplaced .chip:text-is('Output 3')", ".tier[data-tier='1']")  # on the ranking board
    assert page.input_value("#output-3 select.tier-select") == "1"


def test_pairwise_choice_with_keys(world, page):
    open_task(world, page, "ab", "pairwise")
    assert "<img src=x" in page.inner_text("#task") and page.evaluate("window.__xss") is None
    page.keyboard.press("b")
    page.keyboard.press("n")
    page.keyboard.type("B is clearer")
    page.keyboard.press("Escape")
    shot(page, "pairwise")
    page.keyboard.press("Enter")
    expect(page.locator("#page-n")).to_have_text("2")
    page.keyboard.press("e")
    page.keyboard.press("Enter")
    expect(page.locator("#page-n")).to_have_text("3")
    rows = [r for r in admin_export(world, "ab") if r["labeler"] == "abe"]
    assert [r["choice"] for r in rows] == ["B", "equal"] and rows[0]["notes"] == "B is clearer"
    assert page.dialogs == []


def test_demo_written_and_submitted_with_ctrl_enter(world, page):
    open_task(world, page, "sft", "demo")
    page.keyboard.type("Here are three things:\n1. a\n2. b\n3. c")
    shot(page, "demo")
    page.keyboard.press("Control+Enter")
    expect(page.locator("#page-n")).to_have_text("2")
    (demo,) = admin_export(world, "sft", "demos")
    assert demo["completion"].startswith("Here are three things:")


def test_skip_with_a_reason(world, page):
    open_task(world, page, "skip", "rank")
    page.keyboard.press("Escape")
    page.keyboard.press("s")
    page.select_option("#skip select[name=reason]", "expertise")
    page.fill("#skip input[name=notes]", "medical question")
    shot(page, "skip", at="#skip")
    page.press("#skip input[name=notes]", "Enter")
    expect(page.locator("#page-n")).to_have_text("2")
    (row,) = [r for r in admin_export(world, "rank") if r["labeler"] == "sam"]
    assert (row["kind"], row["skip_reason"], row["notes"]) == ("skip", "expertise", "medical question")
    assert row["elapsed_ms"] > 0  # the page's timer is sent with the answer


def test_labeler_gets_403_on_admin_and_export_admin_sees_the_dashboard(world, page, browser):
    server, tokens, _ = world
    log_in(page, server.url, tokens["rank"])
    assert page.goto(f"{server.url}/admin").status == 403
    assert page.goto(f"{server.url}/admin/export?format=rankings").status == 403
    assert page.goto(f"{server.url}/api/projects/rank/stats").status == 403
    boss = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
    log_in(boss, server.url, tokens["admin"])
    assert boss.url.endswith("/admin")
    assert "Agreement" in boss.inner_text("main") and "rita" in boss.inner_text("main")
    shot(boss, "admin")
    boss.context.close()


# ------------------------------------------------------------------------------------------- issue 19

def rank_all_with_keys(page, k: int = 5) -> None:
    """From output 1: output n -> tier n, quality 8 - n; ends focused on the last output."""
    for n in range(1, k + 1):
        if n > 1:
            page.keyboard.press("j")
        page.keyboard.press(str(n))
        page.keyboard.press(f"Shift+Digit{8 - n}")


def in_view(page, selector: str) -> bool:
    box = page.locator(selector).bounding_box()
    return box is not None and 0 <= box["y"] < page.viewport_size["height"]


def test_after_a_keyboard_submit_the_next_item_opens_at_its_prompt_with_its_title(world, page):
    page.set_viewport_size({"width": 1200, "height": 500})  # the outputs sit side by side: a short window
    open_task(world, page, "focus", "rank")
    assert page.title().startswith("Item 1 of ")
    rank_all_with_keys(page)  # focus ends on output 5, far down the page
    assert not in_view(page, "#prompt")
    page.keyboard.press("Enter")
    expect(page.locator("#page-n")).to_have_text("2")
    expect(page.locator("#task")).to_have_attribute("data-ready", "1")  # the new item's set-up has run
    # htmx gave focus back to the new `output-5` (same id): the page used to open there, the prompt above it.
    assert in_view(page, "#prompt") and page.evaluate("window.scrollY") == 0
    assert page.evaluate("document.activeElement.id") == "output-1"
    assert page.title().startswith("Item 2 of ")
    page.keyboard.press("2")  # the keys work on the new item at once
    assert page.input_value("#output-1 select.tier-select") == "2"


def test_flag_mode_lasts_one_key(world, page):
    open_task(world, page, "flags", "rank")
    page.keyboard.press("f")
    page.keyboard.press("j")  # not a digit: flag mode ends; moves to output 2
    page.keyboard.press("2")
    assert page.input_value("#output-2 select.tier-select") == "2"  # tiered
    assert page.locator("#output-2 input[data-flag='2']").is_checked() is False  # not flagged
    page.keyboard.press("f")
    page.keyboard.press("3")
    assert page.locator("#output-2 input[data-flag='3']").is_checked()
    page.keyboard.press("3")  # flag mode is over: a tier again
    assert page.input_value("#output-2 select.tier-select") == "3"


def test_a_validation_error_is_shown_in_view_and_goes_once_fixed(world, page):
    open_task(world, page, "error", "rank")
    for _ in range(4):
        page.keyboard.press("j")
    page.keyboard.press("Enter")  # nothing placed yet, from the last output
    expect(page.locator("#form-error")).to_contain_text("Put every output in a tier")
    assert in_view(page, "#form-error")
    page.locator("#output-1").focus()
    rank_all_with_keys(page)
    expect(page.locator("#form-error")).to_have_text("")  # fixed: the message is gone before submitting


def test_a_draft_survives_a_reload_and_is_discarded_on_submit(world, page):
    open_task(world, page, "draft", "rank")
    item = page.evaluate("document.querySelector('#task').dataset.draftKey")
    page.keyboard.press("1")
    page.keyboard.press("Shift+Digit6")
    page.keyboard.press("f")
    page.keyboard.press("4")
    page.keyboard.press("n")
    page.keyboard.type("keep me")
    page.keyboard.press("Escape")
    page.reload()
    page.wait_for_selector("#task[data-mode=rank]")
    assert page.evaluate("document.querySelector('#task').dataset.draftKey") == item  # the same lease
    assert page.input_value("#output-1 select.tier-select") == "1"
    assert page.locator("#output-1 input[type=radio][value='6']").is_checked()
    assert page.locator("#output-1 input[data-flag='4']").is_checked()
    assert page.input_value("#output-1 textarea") == "keep me"
    assert [c.get_attribute("data-n") for c in page.locator(".tier[data-tier='1'] .chip").all()] == ["1"]
    page.locator("#output-1").focus()
    rank_all_with_keys(page)
    page.keyboard.press("Enter")
    expect(page.locator("#page-n")).to_have_text("2")
    assert page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('rlhfkit-draft:'))") == []
    (row,) = [r for r in admin_export(world, "kb", "rankings") if r["labeler"] == "dru"]
    assert "keep me" in row["notes"]


def test_guidelines_before_the_first_item_and_in_a_panel(world, page):
    server, tokens, _ = world
    log_in(page, server.url, tokens["guide"])
    page.wait_for_selector("#guidelines")
    assert "Prefer short answers." in page.inner_text("#guidelines")
    assert "<script>window.__xss = 1</script>" in page.inner_text("#guidelines")  # shown as text
    assert page.evaluate("window.__xss") is None and page.dialogs == []
    shot(page, "guidelines")
    page.click("#start")
    page.wait_for_selector("#task[data-mode=rank]")
    assert not page.locator("#guidelines-panel .markdown").is_visible()  # collapsed
    page.click("#guidelines-panel summary")
    assert "Prefer short answers." in page.inner_text("#guidelines-panel")
    assert "Gives harmful advice" in page.inner_text("#guidelines-panel .flag-help")
