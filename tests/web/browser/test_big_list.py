"""5,000 items loaded page by page: in order, and how the page keeps up (figures, not asserted)."""

from __future__ import annotations

import datetime
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest
from selenium.webdriver.common.keys import Keys

from support.items_page import PAGE_SIZE, TEXT_LIMIT, ItemsApi
from support.net import free_port
from support.processes import ApiProcess, Database, sqlite_api_with_rows

MANY = 5000


@pytest.fixture
def big_list(backend, release_binary, scratch, artifacts, make_nginx, request) -> Iterator[str]:
    """An API of its own, on a database holding MANY items written straight into it before the
    API starts (so its list cache and change feed start from them), with nginx in front; yields
    nginx's URL."""
    created_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")
    log = artifacts / "logs" / f"browser-{backend}-big-list-api.log"
    log.unlink(missing_ok=True)
    if backend == "sqlite":
        directory = Path(tempfile.mkdtemp(prefix="big-list-", dir=scratch))
        api = sqlite_api_with_rows(release_binary, directory / "app.db", log,
                                   [(f"Bulk {n:04d}", created_at) for n in range(MANY)])
    else:
        cluster = request.getfixturevalue("postgres")
        url = cluster.create_database()
        api = ApiProcess(release_binary, free_port(), Database("postgres", {"DATABASE_URL": url, "MIGRATE_ON_START": "true"}), log)
        api.start()  # migrates
        api.stop()
        cluster.psql("INSERT INTO items (text, created_at) SELECT 'Bulk ' || to_char(n, 'FM0000'), "
                     f"'{created_at}' FROM generate_series(0, {MANY - 1}) AS n", url.rsplit("/", 1)[1])
    api.env["MAX_TEXT_CHARS"] = str(TEXT_LIMIT)
    try:
        api.start()
        nginx = make_nginx(api.url)
        nginx.start()
        yield nginx.url
    finally:
        api.stop()


def test_all_5000_items_load_page_by_page_in_order(big_list, tab, figure, backend):
    page = tab.open(big_list)
    page.js("window.__longest = 0; new PerformanceObserver((list) => { for (const e of list.getEntries())"
            " window.__longest = Math.max(window.__longest, e.duration); }).observe({type: 'longtask', buffered: true});")
    page_s: list[float] = []
    page.load_all(on_page=page_s.append)
    ids = page.ids()
    site = ItemsApi(big_list)
    try:
        api_ids = [item["id"] for item in site.everything()]
    finally:
        site.close()
    started = time.monotonic()
    page.set_field("On top of 5,000")
    page.field.send_keys(Keys.ENTER)
    page.wait_for_top("On top of 5,000")
    add_ms = (time.monotonic() - started) * 1000
    longest = page.js("return window.__longest;")
    figure(f"browser [{backend}]: Load more of page {MANY // PAGE_SIZE}, ms", f"{page_s[-1] * 1000:.0f}")
    figure(f"browser [{backend}]: add with {MANY} items shown, ms", f"{add_ms:.0f}")
    figure(f"browser [{backend}]: longest main-thread task over 50 ms with {MANY} items (0: none), ms", f"{longest:.0f}")
    assert len(ids) == MANY and ids == api_ids
