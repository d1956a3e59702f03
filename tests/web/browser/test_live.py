"""Changes made elsewhere: another client through the change stream, the same without
EventSource (polling with If-None-Match), and two people with the page open at once (on Postgres
each on their own replica)."""

from __future__ import annotations

import time
from typing import Iterator

import pytest

from support.items_page import TEXT_LIMIT, UNDO_SECONDS, ItemsPage
from support.net import free_port
from support.processes import ApiProcess

A_FEW = ["Call the plumber", "Renew the passport"]
OTHER_TEXT = "Added in another tab"


@pytest.fixture
def live_page(site, tab) -> ItemsPage:
    """The page over a few items, its change stream open, the user half way through typing."""
    site.reset(A_FEW)
    tab.open()
    tab.wait_for_stream()
    tab.field.click()
    tab.type("half typed")
    return tab


def test_an_add_and_a_delete_elsewhere_show_within_a_second_announced_and_counted_leaving_the_typing_alone(
        live_page, site, figure, backend):
    started = time.monotonic()
    other = site.add(OTHER_TEXT)
    live_page.wait("the other client's item", lambda: live_page.top() == OTHER_TEXT)
    appeared_s = time.monotonic() - started
    announced, title_after_add = live_page.text_of("announcer"), live_page.title
    total_after_add = len(site.everything())
    started = time.monotonic()
    site.delete(other["id"])
    live_page.wait("the other client's delete", lambda: other["id"] not in live_page.ids())
    gone_s = time.monotonic() - started
    figure(f"browser [{backend}]: another client's add, then delete, shown after ms",
           f"{appeared_s * 1000:.0f}, {gone_s * 1000:.0f}")
    assert appeared_s < 1
    assert announced == "1 item added by someone else."
    assert title_after_add == f"Items ({total_after_add})"
    assert gone_s < 1 and live_page.top() == A_FEW[-1]
    live_page.wait("the count to follow", lambda: live_page.title == f"Items ({len(site.everything())})")
    assert (live_page.focus(), live_page.field_value()) == ("item-text", "half typed"), "the user's typing was disturbed"


def test_while_the_stream_is_open_the_page_does_not_poll(live_page, site):
    other = site.add(OTHER_TEXT)
    live_page.wait("the other client's item", lambda: live_page.top() == OTHER_TEXT)
    site.delete(other["id"])
    live_page.wait("the other client's delete", lambda: other["id"] not in live_page.ids())
    # A read the stream asked for (its start, an event that came during a read) may still be on
    # its way: those are not polls. Past them, nothing for longer than the polling interval.
    before = quiet_list_reads(live_page)
    time.sleep(4)  # longer than the page's polling interval (3 s)
    assert live_page.list_reads() - before == 0


def quiet_list_reads(page: ItemsPage, quiet: float = 0.5) -> int:
    """The page's count of list reads once it has not changed for `quiet` seconds."""
    last = [page.list_reads(), time.monotonic()]

    def settled() -> bool:
        now = page.list_reads()
        if now != last[0]:
            last[:] = [now, time.monotonic()]
        return time.monotonic() - last[1] >= quiet

    page.wait("the page's list reads to settle", settled)
    return last[0]


@pytest.fixture
def polling_page(site, tab) -> Iterator[ItemsPage]:
    """Without EventSource (an old browser, a proxy that will not pass a stream) the page checks
    its first page every few seconds."""
    driver = tab.browser.driver
    hidden = driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": "delete window.EventSource;"})
    try:
        site.reset(A_FEW)
        yield tab.open()
    finally:
        driver.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": hidden["identifier"]})


def test_without_the_stream_changes_elsewhere_arrive_by_polling_and_an_unchanged_list_is_checked_with_304s(
        polling_page, site):
    assert polling_page.js("return typeof EventSource === 'undefined';")
    started = time.monotonic()
    other = site.add("Added while polling")
    polling_page.wait("the item, by polling", lambda: polling_page.top() == "Added while polling")
    appeared_s = time.monotonic() - started
    site.delete(other["id"])
    polling_page.wait("the delete, by polling", lambda: other["id"] not in polling_page.ids())
    assert appeared_s < 5
    # The checks carry If-None-Match; with nothing changing now they are answered 304, without a body.
    polling_page.wait("a check answered 304", lambda: polling_page.list_reads(304) >= 1, timeout=15)
    assert polling_page.list_reads(304) >= 1


@pytest.fixture
def two_pages(site, tab, stack, second_browser, release_binary, repo, artifacts, request) -> Iterator[tuple[ItemsPage, ItemsPage]]:
    """Two people with the page open, streams open: on SQLite both through nginx to the one
    service; on Postgres the second on a replica of its own (which serves the page itself)."""
    site.reset(A_FEW)
    replica = None
    other_url = stack.url
    if stack.backend == "postgres":
        replica = ApiProcess(release_binary, free_port(), stack.api.database, artifacts / "logs" / "browser-postgres-replica.log",
                             MAX_TEXT_CHARS=str(TEXT_LIMIT), STATIC_DIR=str(repo / "web" / "static"))
        replica.start()
        other_url = replica.url
    second_browser.begin(request.node.name)
    other = ItemsPage(second_browser, other_url, site)
    try:
        tab.open()
        other.open()
        for page in (tab, other):
            page.wait_for_stream()
        yield tab, other
        other.screenshot("desktop-second-page.png")
    finally:
        problems = second_browser.end()
        if replica is not None:
            replica.stop()
    assert not problems, "the second page logged what no test may cause:\n" + "\n".join(problems)


def add_in_the_first(first: ItemsPage, second: ItemsPage, text: str) -> float:
    """Adds `text` in the first page; how long until the second showed it, in seconds."""
    started = time.monotonic()
    first.add(text)
    second.wait("the first page's add", lambda: second.top() == text)
    return time.monotonic() - started


def delete_in_the_second(first: ItemsPage, second: ItemsPage, site) -> float:
    """Deletes the newest item in the second page; once its undo window has passed and the API
    has it deleted, how long until the first page no longer showed it, in seconds."""
    newest = second.ids()[0]
    second.js("document.querySelector(`#items .item[data-id='${arguments[0]}'] .item-delete`).click();", newest)
    deadline = time.monotonic() + UNDO_SECONDS + 8
    while site.status_of(newest) != 404 and time.monotonic() < deadline:
        time.sleep(0.02)
    started = time.monotonic()
    first.wait("the second page's delete", lambda: newest not in first.ids())
    return time.monotonic() - started


def test_an_add_in_one_page_shows_in_the_other_within_a_second(two_pages):
    assert add_in_the_first(*two_pages, "Said in the first page") < 1


def test_a_delete_in_one_page_leaves_the_other_within_a_second_and_both_count_the_same(two_pages, site, figure, backend):
    # One test for both: each would wait out the same undo window.
    added_s = add_in_the_first(*two_pages, "Said in the first page")
    deleted_s = delete_in_the_second(*two_pages, site)
    where = "two replicas" if backend == "postgres" else "one service"
    figure(f"browser [{backend}]: two pages on {where}: add, then delete, seen in the other after ms",
           f"{added_s * 1000:.0f}, {deleted_s * 1000:.0f}")
    assert deleted_s < 1
    total = len(site.everything())
    for page in two_pages:
        page.wait("the count", lambda page=page: page.title == f"Items ({total})")
    assert [page.title for page in two_pages] == [f"Items ({total})"] * 2
