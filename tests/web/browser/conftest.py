"""Fixtures of the browser tests: what is expensive is shared, what a test sees is its own.

Shared by the whole run: one headless Chromium (and a second one, made when a test first needs
two people at once), the release binary and the PostgreSQL cluster. Shared per backend (every
test runs on SQLite and on PostgreSQL: the session parameter `backend`): one API process on its
own database, with a text limit small enough to reach by typing, and nginx in front of it.

Each test's own: the data, set through the API's own routes before its page opens
(`site.reset(texts)`, which deletes every other item, so the list cache and the change feed see
it as they would see any user), and a fresh document in the browser (`tab`; `page` is an empty
list with the page open). After every test, its page must have logged no console error it did
not provoke, no uncaught error and no CSP violation: a teardown check, so it names the test.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from support.net import free_port
from support.nginx import Nginx
from support.processes import ApiProcess, Database, api_backends
from support.tools import require_tool

pytest.importorskip("selenium", reason="the pinned Python packages: .venv/bin/pip install -r .ci/requirements.txt")

from support.browser import Browser  # noqa: E402 (only once selenium is known to be there)
from support.items_page import TEXT_LIMIT, ItemsApi, ItemsPage, seed_texts  # noqa: E402

AXE = Path(__file__).resolve().parents[2] / "browser-tools" / "node_modules" / "axe-core" / "axe.min.js"


@dataclass
class Stack:
    """One backend's API (running) and nginx in front of it."""

    backend: str
    api: ApiProcess
    nginx: Nginx
    site: ItemsApi

    @property
    def url(self) -> str:
        return self.nginx.url


def chromium_browser(artifacts: Path) -> Browser:
    chromium = os.environ.get("CHROMIUM_BIN") or require_tool("chromium", "apt-get install chromium")
    chromedriver = os.environ.get("CHROMEDRIVER_BIN") or require_tool("chromedriver", "apt-get install chromium-driver")
    return Browser(chromium, chromedriver, artifacts)


@pytest.fixture(scope="session")
def browser(artifacts: Path) -> Iterator[Browser]:
    """The one Chromium every browser test drives (a fresh document each: `tab`)."""
    for old in (artifacts / "web").glob("**/*.png"):
        old.unlink()
    b = chromium_browser(artifacts / "web")
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(scope="session")
def second_browser(browser: Browser, artifacts: Path) -> Iterator[Browser]:
    """Another person's Chromium (its own profile and connections), made when first needed."""
    second = chromium_browser(artifacts / "web" / "second-page")
    Browser.current = browser  # failure screenshots stay with the first
    try:
        yield second
    finally:
        second.close()
        Browser.current = browser


@pytest.fixture(scope="session")
def axe_script() -> str | None:
    """axe-core, to inject into the page; None when tests/browser-tools is not installed."""
    return AXE.read_text() if AXE.is_file() else None


@pytest.fixture(scope="session", params=api_backends())
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def stack(backend: str, request: pytest.FixtureRequest, release_binary: Path, scratch: Path, html_root: Path,
          repo: Path, artifacts: Path) -> Iterator[Stack]:
    """This backend's API, on a fresh database, with nginx in front; stopped after the last
    test of the backend, their logs in artifacts/logs/ and artifacts/web/logs/."""
    if backend == "sqlite":
        database = Database("sqlite", {"DB_PATH": str(Path(tempfile.mkdtemp(prefix="browser-", dir=scratch)) / "app.db")})
    elif backend == "postgres":
        cluster = request.getfixturevalue("postgres")
        database = Database("postgres", {"DATABASE_URL": cluster.create_database(), "MIGRATE_ON_START": "true"})
    else:
        raise ValueError(f"unknown backend {backend!r} in TEST_BACKENDS")
    log = artifacts / "logs" / f"browser-{backend}-api.log"
    log.unlink(missing_ok=True)
    api = ApiProcess(release_binary, free_port(), database, log, MAX_TEXT_CHARS=str(TEXT_LIMIT))
    nginx = Nginx(scratch / f"browser-{backend}-nginx", free_port(), api.url, html_root,
                  repo / "web" / "templates" / "default.conf.template", repo / "web" / "Dockerfile")
    site = ItemsApi(api.url)
    try:
        api.start()
        nginx.start()
        yield Stack(backend, api, nginx, site)
    finally:
        site.close()
        api.stop()
        nginx.stop()
        nginx.save_logs(artifacts / "web" / "logs", f"browser-{backend}-nginx")


@pytest.fixture
def site(stack: Stack) -> ItemsApi:
    """The API's routes; the test sets its data with `site.reset(...)` before its page opens."""
    if not stack.api.running:
        # Left stopped by a test of an outage: started only now that its page has gone, which
        # would otherwise send its unsaved add again the moment the API answered.
        stack.api.start()
    stack.site.reset_done = False
    return stack.site


@pytest.fixture
def tab(browser: Browser, stack: Stack, site: ItemsApi, request: pytest.FixtureRequest) -> Iterator[ItemsPage]:
    """The items page, not yet opened, in a clean browser tab (desktop size, light, no touch)."""
    browser.begin(request.node.name)
    page = ItemsPage(browser, stack.url, site)
    yield page
    if not browser.blank:
        where, shown = page.js("return [location.href, Array.from(document.querySelectorAll('#items .item'),"
                               " (n) => Number(n.dataset.id))];")
        if where.startswith(stack.url):
            site.page_left(shown)
    problems = browser.end(tuple(page.allowed_errors))
    assert not problems, "the page logged what no test may cause:\n" + "\n".join(problems)


@pytest.fixture
def page(site: ItemsApi, tab: ItemsPage) -> ItemsPage:
    """The page open on an empty list."""
    site.reset()
    return tab.open()


@pytest.fixture
def seeded_page(site: ItemsApi, tab: ItemsPage) -> ItemsPage:
    """The page open on more than one page of items (`seed_texts()`)."""
    site.reset(seed_texts())
    return tab.open()
