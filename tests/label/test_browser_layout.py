"""The comparison layout in Chromium (issue 19, item 4): outputs side by side on a wide screen, the flags behind a
per-output toggle, a sticky ranking board whose chips show a snippet, and a touch layout at a 390-px phone width.
Also the blind A/B item (item 6) as a labeler sees it: no source, a click on an output card chooses it.

Screenshots go to test-artifacts/; `LABEL_UPDATE_DOCS=1` copies the README's to docs/.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from rlhfkit.label import blind
from rlhfkit.label.commands import open_store, read_items
from rlhfkit.label.export import records
from tests.label import browsing
from tests.label.browsing import MARKS, expect, log_in
from tests.label.conftest import ARTIFACTS, LiveServer, write_candidates

pytestmark = MARKS
browser = browsing.browser  # the shared fixture
WIDE = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}  # an iPhone 12-14 CSS viewport
MIN_TAP_PX = 44  # WCAG 2.5.5 target size; Apple's HIG minimum
DOCS = ARTIFACTS.parent / "docs"
# Page heights of a 4-output rank item measured on the layout before this one (one output per row, the eight
# flags open under each): the new layout must be clearly shorter.
ANSWERS = {"sft": "Red ({i}).", "ppo": "Blue ({i}), the colour of a clear sky at noon."}  # what each policy writes
OLD_HEIGHT = {"wide": 1981, "phone": 2772}  # /tmp measure: main at 8922d42, Chromium, this fixture's texts


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("layout")
    db = str(tmp / "labels.db")
    store = open_store(db, migrate=True)
    store.import_items("four", "rank", 3, read_items(str(write_candidates(tmp / "r.jsonl", 4, 4)), "rank"))
    arms = {}
    for arm, policy in (("A", "sft"), ("B", "ppo")):
        path = tmp / f"{policy}.jsonl"
        path.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"Question {i}: name a colour.",
                                            "completions": [{"text": ANSWERS[policy].format(i=i), "source": policy},
                                                            {"text": "unused", "source": policy}]}) + "\n"
                                for i in range(4)))
        arms[arm] = blind.read_arm(str(path))
    store.import_items("eval", "pairwise", 1, blind.pair_items(arms["A"], arms["B"], seed=1))
    tokens = {name: store.invite("four", name) for name in ("wide", "phone", "keys")}
    tokens["judge"] = store.invite("eval", "jo")
    tokens["tapper"] = store.invite("eval", "tia")
    store.engine.dispose()
    server = LiveServer(db).start()
    yield server, tokens, db
    server.stop()


def open_page(browser, world, who: str, mode: str, *, phone: bool = False):
    server, tokens, _ = world
    context = browser.new_context(viewport=PHONE if phone else WIDE, has_touch=phone, is_mobile=phone,
                                  device_scale_factor=1)
    page = context.new_page()
    log_in(page, server.url, tokens[who])
    page.wait_for_selector(f"#task[data-mode={mode}]")
    return context, page


def page_height(page) -> int:
    return page.evaluate("document.documentElement.scrollHeight")


def screenshot(page, name: str) -> None:
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / f"labeling-{name}.png"))


def test_wide_outputs_side_by_side_flags_behind_a_toggle_sticky_board_with_snippets(world, browser):
    context, page = open_page(browser, world, "wide", "rank")
    try:
        boxes = [page.locator(f"#output-{n}").bounding_box() for n in range(1, 5)]
        assert boxes[0]["y"] == boxes[1]["y"] and boxes[1]["x"] > boxes[0]["x"] + boxes[0]["width"] - 1  # a row
        assert not page.locator("#output-1 .flags input").first.is_visible()  # behind the toggle
        page.click("#output-2 .flags-toggle summary")
        assert page.locator("#output-2 .flags input").first.is_visible()
        assert not page.locator("#output-1 .flags input").first.is_visible()  # per output
        page.click("#output-2 .flags-toggle summary")
        height = page_height(page)
        print(f"4-output rank item at 1280 px: {height} px tall (before: {OLD_HEIGHT['wide']})")
        assert height < 0.6 * OLD_HEIGHT["wide"]
        page.keyboard.press("2")  # the output whose toggle was clicked has the focus: it goes to tier 2
        chip = page.locator(".tier[data-tier='2'] .chip")
        expect(chip).to_have_count(1)
        snippet = page.inner_text("#output-2 pre.text")[:20]
        assert chip.inner_text().startswith("Output 2 · ") and snippet in chip.inner_text()
        screenshot(page, "rank-wide")
        page.set_viewport_size({"width": WIDE["width"], "height": 500})  # a short window: the page scrolls
        page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
        bar = page.locator(".task-bar").bounding_box()
        board = page.locator("#board").bounding_box()
        assert abs(board["y"] - (bar["y"] + bar["height"])) < 2  # sticky: right under the task bar at the bottom
    finally:
        context.close()


def test_keyboard_flags_open_the_toggle_and_rank_a_tie_without_the_mouse(world, browser):
    context, page = open_page(browser, world, "keys", "rank")
    try:
        page.keyboard.press("f")
        page.keyboard.press("3")  # flag 3 of output 1: its flags open to show it
        assert page.locator("#output-1 input[data-flag='3']").is_checked()
        assert page.locator("#output-1 .flags input[data-flag='3']").is_visible()
        assert "1" in page.inner_text("#output-1 .flags-toggle summary")  # the count shows while closed too
        for n, (tier, likert) in enumerate((("1", "7"), ("2", "5"), ("2", "5"), ("3", "2")), start=1):
            if n > 1:
                page.keyboard.press("j")
            page.keyboard.press(tier)
            page.keyboard.press(f"Shift+Digit{likert}")
        assert [c.strip() for c in page.locator(".tier[data-tier='2'] .chip").all_inner_texts()][0].startswith(
            "Output 2")
        page.keyboard.press("Enter")
        expect(page.locator("#page-n")).to_have_text("2")
        expect(page.locator("#task")).to_have_attribute("data-ready", "1")  # the new item's set-up has run
        assert page.evaluate("window.scrollY") == 0
        box = page.locator("#prompt").bounding_box()
        assert 0 <= box["y"] < WIDE["height"]  # the next item's prompt is in view
        (row,) = [r for r in records(_submissions(world, "four"), "rankings") if r["labeler"] == "keys"]
        assert [len(g) for g in row["ranking"]] == [1, 2, 1]
    finally:
        context.close()


def _submissions(world, project):
    store = open_store(world[2])
    try:
        return store.submissions(project)
    finally:
        store.engine.dispose()


def test_phone_width_touch_layout(world, browser):
    context, page = open_page(browser, world, "phone", "rank", phone=True)
    try:
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]  # no sideways scrolling
        assert not page.locator("#help").is_visible()  # key hints are for keyboards
        assert not page.locator("#output-1 .likert kbd, #output-1 summary kbd").first.is_visible()
        # "7" sits next to its radio, on the same line
        radio = page.locator("#output-1 .likert input[value='7']").bounding_box()
        seven = page.locator("#output-1 .likert label", has_text="7").bounding_box()
        assert abs((radio["y"] + radio["height"] / 2) - (seven["y"] + seven["height"] / 2)) < seven["height"] / 2
        for selector in ("#output-1 .likert label", "#output-1 .tier-select", "#output-1 .flags-toggle summary",
                         "button.primary"):
            box = page.locator(selector).first.bounding_box()
            assert box["height"] >= MIN_TAP_PX and box["width"] >= MIN_TAP_PX, selector
        height = page_height(page)
        print(f"4-output rank item at 390 px: {height} px tall (before: {OLD_HEIGHT['phone']})")
        assert height < 0.8 * OLD_HEIGHT["phone"]
        page.locator("#output-1 .tier-select").select_option("1")
        page.locator("#output-1 .likert label", has_text="6").tap()
        assert page.locator("#output-1 .likert input[value='6']").is_checked()
        screenshot(page, "rank-phone")
        page.screenshot(path=str(ARTIFACTS / "labeling-rank-phone-full.png"), full_page=True)
    finally:
        context.close()


def test_blind_ab_hides_the_policy_and_a_click_on_a_card_chooses_it(world, browser):
    for who, phone in (("judge", False), ("tapper", True)):
        context, page = open_page(browser, world, who, "pairwise", phone=phone)
        try:
            text = page.inner_text("#task")
            assert "Red (" in text and "Blue (" in text
            content = page.content()  # nothing says which is which
            assert "eval-" not in content and "source" not in content and "sft" not in content and "ppo" not in content
            b_text = page.inner_text("#output-B pre.text")
            if phone:
                page.locator("#output-B").tap()
            else:
                page.click("#output-B")
            assert page.locator("input[name='choice'][value='B']").is_checked()
            expect(page.locator("#output-B")).to_have_class("output card side chosen")
            screenshot(page, "ab-phone" if phone else "ab-wide")
            page.locator("button.primary").click()
            expect(page.locator("#page-n")).to_have_text("2")
            (row,) = [r for r in _submissions(world, "eval") if r["labeler"] == ("jo" if who == "judge" else "tia")]
            chosen = [c for c in row["completions"] if c["text"] == b_text][0]
            tiers = {int(i): t for i, t in row["tiers"].items()}
            assert tiers[row["completions"].index(chosen)] == 0  # the clicked one won
        finally:
            context.close()


def test_publish_the_layout_screenshots():
    """Copies the layout screenshots to docs/ when LABEL_UPDATE_DOCS=1 (a manual step)."""
    names = ["labeling-rank-wide.png", "labeling-rank-phone.png", "labeling-ab-wide.png"]
    if os.environ.get("LABEL_UPDATE_DOCS") != "1" or not all((ARTIFACTS / n).exists() for n in names):
        pytest.skip("set LABEL_UPDATE_DOCS=1 to refresh docs/labeling-*.png")
    for name in names:
        shutil.copy(ARTIFACTS / name, DOCS / name)
