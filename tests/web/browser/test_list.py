"""Showing the list: the empty state, the first page and its count, "Load more" to the end (by
keyboard too), "Back to top", item times, right-to-left text."""

from __future__ import annotations

import re

from selenium.webdriver.common.keys import Keys

from support.items_page import PAGE_SIZE

RTL_TEXT = "שלום, עולם!"
# Exactly three pages, the newest right-to-left.
THREE_PAGES = [f"Filler {n:03d}" for n in range(3 * PAGE_SIZE - 1)] + [RTL_TEXT]


def test_the_empty_state_explains_what_to_do_and_offers_no_load_more(page):
    status = page.wait("the empty state", lambda: page.shown("list-status") and "No items yet" in page.text_of("list-status")
                       and page.text_of("list-status"))
    page.screenshot("desktop-empty.png")
    assert "Add the first one" in status
    assert not page.shown("load-more")


def test_the_first_page_shows_the_newest_100_items_offers_more_and_counts_them_all_in_the_title(seeded_page, site):
    total = len(site.everything())
    assert total > PAGE_SIZE
    assert len(seeded_page.texts()) == PAGE_SIZE
    assert seeded_page.ids()[:3] == [item["id"] for item in site.items(3)], "not newest first"
    assert seeded_page.shown("load-more")
    # The title and the heading count every item, not just those shown.
    heading = seeded_page.js("return document.querySelector('h1').textContent;")
    assert (seeded_page.title, heading) == (f"Items ({total})", f"Items {total}")


def test_load_more_appends_the_rest_newest_first_and_then_goes(seeded_page, site):
    expected = min(len(site.everything()), 2 * PAGE_SIZE)
    seeded_page.load_more.send_keys(Keys.ENTER)
    seeded_page.wait("the second page", lambda: len(seeded_page.texts()) == expected)
    ids = seeded_page.ids()
    assert len(ids) == expected
    assert ids == sorted(set(ids), reverse=True), "duplicates, or not newest first"
    assert not seeded_page.shown("load-more")


def test_back_to_top_returns_to_the_field(seeded_page):
    seeded_page.load_all()
    assert len(seeded_page.ids()) > PAGE_SIZE
    seeded_page.js("window.scrollTo(0, document.body.scrollHeight);")
    assert seeded_page.js("return window.scrollY;") > 0 and seeded_page.shown("back-to-top")
    seeded_page.by_id("back-to-top").click()
    assert (seeded_page.js("return window.scrollY;"), seeded_page.focus()) == (0, "item-text")


def test_a_new_items_time_is_relative_exact_in_utc_on_hover_and_machine_readable(site, tab):
    site.reset(["Added a moment ago"])
    tab.open()
    time = tab.js("const t = document.querySelector('#items time');"
                  "return {text: t.textContent, title: t.title, datetime: t.getAttribute('datetime')};")
    assert time["text"] == "just now"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", time["title"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", time["datetime"] or "")


def test_right_to_left_text_is_shown_right_to_left(site, tab):
    site.reset(THREE_PAGES)
    page = tab.open()
    page.screenshot("desktop-rtl.png")
    direction = page.js(
        "const p = Array.from(document.querySelectorAll('#items .item-text')).find((n) => n.textContent === arguments[0]);"
        "return p ? [p.dir, getComputedStyle(p).direction] : null;", RTL_TEXT)
    assert direction == ["auto", "rtl"]


def test_load_more_keeps_focus_and_at_a_multiple_of_the_page_size_goes_with_the_last_page(site, tab):
    site.reset(THREE_PAGES)
    page = tab.open()
    page.load_more.send_keys(Keys.ENTER)
    page.wait("the second page", lambda: len(page.ids()) == 2 * PAGE_SIZE)
    page.wait_ready()
    # While there is more, focus stays on the button, for the next Enter.
    assert (page.focus(), page.shown("load-more")) == ("load-more", True)
    page.press(Keys.ENTER)
    page.wait("the third page", lambda: len(page.ids()) == 3 * PAGE_SIZE)
    page.wait("the button to go", lambda: not page.shown("load-more"))
    page.screenshot("desktop-end-of-list.png")
    assert page.ids() == [item["id"] for item in site.everything()]
    # With the button gone, focus moves to the first item of the last page.
    focused_item = page.js(
        "const a = document.activeElement;"
        "return a.closest('.item') ? Array.from(a.closest('#items').children).indexOf(a.closest('.item')) : null;")
    assert focused_item == 2 * PAGE_SIZE
