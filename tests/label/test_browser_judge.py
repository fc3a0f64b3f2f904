"""A judge's ranking in the labeling app (issue 34, item 2): hidden from labelers by default; an admin shows it as a
starting draft (the tiers filled in, a line naming the judge) or hides it again, in Chromium. Each answer records
whether its page showed the draft (migration 0008), whatever the switch says by the time it is sent."""

from __future__ import annotations

import pytest

from rlhfkit.label.commands import open_store, read_items
from tests.label import browsing
from tests.label.browsing import MARKS, expect, log_in
from tests.label.conftest import LiveServer, write_candidates

pytestmark = MARKS
browser, page = browsing.browser, browsing.page


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("judge")
    db = str(tmp / "labels.db")
    store = open_store(db, migrate=True)
    store.import_items("loop", "rank", 3, read_items(str(write_candidates(tmp / "r.jsonl", 4, 4)), "rank"))
    # the judge ranks output 2 best, 0 and 3 tied, 1 last, on every item
    assert store.set_judge_rankings("loop", "world:gold", {f"q{i:03d}": [[2], [0, 3], [1]] for i in range(4)}) == 4
    tokens = {name: store.invite("loop", name) for name in ("hal", "sue", "tim")}
    tokens["admin"] = store.invite("loop", "ada", "admin")
    store.engine.dispose()
    server = LiveServer(db).start()
    yield server, tokens, db
    server.stop()


def tiers(pg) -> dict[int, str]:
    """The tier each candidate (by its imported index) has on the page ('' when not placed)."""
    return {int(i): v for i, v in pg.eval_on_selector_all(
        "article.output", "els => els.map(e => [e.dataset.index, e.querySelector('.tier-select').value])")}


def submit_as_drafted(pg) -> None:
    """Keep the tiers the page filled in (an output it left unplaced goes to its own tier, in the order shown),
    rate every output 4, and send the answer (the next item replaces it)."""
    before = pg.get_attribute("form#answer", "action")
    for n, (i, tier) in enumerate(tiers(pg).items()):
        if not tier:
            pg.select_option(f"article.output[data-index='{i}'] .tier-select", str(n + 1))
        pg.check(f"input[name='likert_{i}'][value='4']")
    pg.click("#task .actions button[type=submit]")
    expect(pg.locator("form#answer")).not_to_have_attribute("action", before)


def draft_of_answers(db) -> dict[str, str | None]:
    """Each labeler's answer: whether it was made with the judge's draft shown, as the raw export says."""
    store = open_store(db)
    try:
        return {r["labeler"]: r["judge_draft"] for r in store.submissions("loop")}
    finally:
        store.engine.dispose()


def test_the_draft_is_hidden_by_default_and_shown_when_the_admin_says_so(world, browser):
    server, tokens, db = world
    pg = browser.new_page()
    log_in(pg, server.url, tokens["hal"])
    pg.wait_for_selector("#task[data-mode=rank]")
    assert set(tiers(pg).values()) == {""} and pg.locator("#judge-draft").count() == 0  # hidden by default
    assert pg.locator(".tier.unplaced .chips .chip").count() == 4  # every output waits, unplaced

    admin = browser.new_page()
    log_in(admin, server.url, tokens["admin"])
    admin.goto(f"{server.url}/admin")
    assert "do not see" in admin.inner_text("#judge-draft-state")
    admin.click("#judge-draft-toggle")
    admin.wait_for_load_state()
    assert "see the judge's ranking as a starting draft" in admin.inner_text("#judge-draft-state")
    store = open_store(db)
    assert store.judge_draft("loop")
    store.engine.dispose()

    shown = browser.new_page()
    log_in(shown, server.url, tokens["sue"])
    shown.wait_for_selector("#task[data-mode=rank]")
    assert tiers(shown) == {2: "1", 0: "2", 3: "2", 1: "3"}
    assert "A judge (world:gold) filled in this ranking as a draft" in shown.inner_text("#judge-draft")
    # the board shows the draft too: candidate 2's chip in tier 1's row, candidate 1's in tier 3's
    n = {i: shown.get_attribute(f"article.output[data-index='{i}']", "data-n") for i in range(4)}
    assert shown.inner_text('.tier[data-tier="1"] .chips').startswith(f"Output {n[2]}")
    assert shown.inner_text('.tier[data-tier="3"] .chips').startswith(f"Output {n[1]}")
    assert shown.locator(".tier.unplaced .chips .chip").count() == 0
    # hal's page, opened before the admin showed drafts, is answered now: it had no draft, and is stored so
    submit_as_drafted(pg)
    assert draft_of_answers(db) == {"hal": "hidden"}

    admin.click("#judge-draft-toggle")  # hidden again
    admin.wait_for_load_state()
    assert "do not see" in admin.inner_text("#judge-draft-state")
    # sue answers the page that showed her the draft, after the admin hid drafts: stored as shown
    submit_as_drafted(shown)
    assert draft_of_answers(db) == {"hal": "hidden", "sue": "shown"}
    hidden = browser.new_page()
    log_in(hidden, server.url, tokens["tim"])
    hidden.wait_for_selector("#task[data-mode=rank]")
    assert set(tiers(hidden).values()) == {""} and hidden.locator("#judge-draft").count() == 0
