"""What the browser tests share: Debian's Chromium through Playwright (headless, no sandbox, no network beyond
the test's server), a browser per module and a fresh page per test."""

from __future__ import annotations

import os

import pytest

from tests.label.conftest import ARTIFACTS

playwright = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
expect, sync_playwright = playwright.expect, playwright.sync_playwright
CHROMIUM = "/usr/bin/chromium"
MARKS = [pytest.mark.browser,
         pytest.mark.skipif(not os.path.exists(CHROMIUM),
                            reason="Debian's chromium is not installed (apt-get install chromium, "
                                   "or sh scripts/system-deps.sh)")]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def log_in(page, url: str, token: str) -> None:
    """Open an invite link and press its "Log in" button (a GET alone logs nobody in: issue 31, item 14)."""
    page.goto(f"{url}/invite/{token}")
    page.click("#login")
    page.wait_for_load_state()


@pytest.fixture(scope="module")
def browser():
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A 1200×900 page; dialogs are dismissed and kept in `page.dialogs`."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    pg = context.new_page()
    pg.dialogs = []
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    yield pg
    context.close()
