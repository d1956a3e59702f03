"""Showing the list: the empty state, the first page, item times, "Load more" to the end."""

from __future__ import annotations

import re

from selenium.webdriver.common.keys import Keys

from support.items_page import PAGE_SIZE

RTL_TEXT = "שלום, עולם!"
# Exactly three pages, the newest right-to-left.
THREE_PAGES = [f"Filler {n:03d}" for n in range(3 * PAGE_SIZE - 1)] + [RTL_TEXT]


def wait_for_empty_state(page) -> str:
    return page.wait("the empty state", lambda: page.shown("list-status") and "No items yet" in page.text_of("list-status")
                     and page.text_of("list-status"))


def test_the_empty_state_explains_what_to_do(page):
    assert "Add the first one" in wait_for_empty_state(page)


def test_no_load_more_on_an_empty_list(page):
    wait_for_empty_state(page)
    assert not page.load_more.is_displayed()


def test_the_title_and_the_heading_count_every_item_not_just_those_shown(seeded_page, site):
    total = len(site.everything())
    assert total > PAGE_SIZE
    heading = seeded_page.js("return document.querySelector('h1').textContent;")
    assert (seeded_page.title, heading) == (f"Items ({total})", f"Items {total}")


def test_the_first_page_shows_100_items(seeded_page):
    assert len(seeded_page.texts()) == PAGE_SIZE


def test_the_list_shows_the_newest_first(seeded_page, site):
    assert seeded_page.ids()[:3] == [item["id"] for item in site.items(3)]


def test_load_more_is_offered_when_there_is_a_second_page(seeded_page):
    assert seeded_page.load_more.is_displayed()


def load_second_page(page, site) -> int:
    """Presses "Load more" once; returns how many items the list should show then."""
    expected = min(len(site.everything()), 2 * PAGE_SIZE)
    page.load_more.send_keys(Keys.ENTER)
    page.wait("the second page", lambda: len(page.texts()) == expected)
    return expected


def test_load_more_appends_the_rest(seeded_page, site):
    expected = load_second_page(seeded_page, site)
    assert len(seeded_page.ids()) == expected


def test_after_load_more_there_are_no_duplicates_and_still_newest_first(seeded_page, site):
    load_second_page(seeded_page, site)
    ids = seeded_page.ids()
    assert ids == sorted(set(ids), reverse=True)


def test_load_more_is_hidden_after_the_last_page(seeded_page, site):
    load_second_page(seeded_page, site)
    assert not seeded_page.load_more.is_displayed()


def newest_time(site, tab) -> dict:
    """The <time> of the newest row, on a page opened just after its item was added."""
    site.reset(["Added a moment ago"])
    tab.open()
    return tab.js("const t = document.querySelector('#items time');"
                  "return {text: t.textContent, title: t.title, datetime: t.getAttribute('datetime')};")


def test_a_new_item_shows_a_relative_time(site, tab):
    assert newest_time(site, tab)["text"] == "just now"


def test_the_exact_utc_time_shows_on_hover(site, tab):
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", newest_time(site, tab)["title"])


def test_the_time_is_machine_readable(site, tab):
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", newest_time(site, tab)["datetime"] or "")


def open_three_pages(site, tab):
    site.reset(THREE_PAGES)
    return tab.open()


def test_right_to_left_text_is_shown_right_to_left(site, tab):
    page = open_three_pages(site, tab)
    page.screenshot("desktop-rtl.png")
    direction = page.js(
        "const p = Array.from(document.querySelectorAll('#items .item-text')).find((n) => n.textContent === arguments[0]);"
        "return p ? [p.dir, getComputedStyle(p).direction] : null;", RTL_TEXT)
    assert direction == ["auto", "rtl"]


def load_two_more_pages_by_keyboard(page) -> dict:
    """"Load more" twice from the keyboard (focus stays on it); what was seen on the way."""
    page.load_more.send_keys(Keys.ENTER)
    page.wait("the second page", lambda: len(page.ids()) == 2 * PAGE_SIZE)
    page.wait_ready()
    seen = {"focus_after_second_page": page.focus(), "offered_after_second_page": page.load_more.is_displayed()}
    page.press(Keys.ENTER)
    page.wait("the third page", lambda: len(page.ids()) == 3 * PAGE_SIZE)
    page.wait("the button to go", lambda: not page.load_more.is_displayed())
    return seen


def test_focus_stays_on_load_more_while_there_is_more(site, tab):
    page = open_three_pages(site, tab)
    seen = load_two_more_pages_by_keyboard(page)
    assert seen["focus_after_second_page"] == "load-more"
    assert seen["offered_after_second_page"]


def test_at_a_multiple_of_the_page_size_load_more_goes_with_the_last_page(site, tab):
    page = open_three_pages(site, tab)
    load_two_more_pages_by_keyboard(page)
    page.screenshot("desktop-end-of-list.png")
    assert page.ids() == [item["id"] for item in site.everything()]


def test_after_the_last_page_focus_moves_to_its_first_item(site, tab):
    page = open_three_pages(site, tab)
    load_two_more_pages_by_keyboard(page)
    focused_item = page.js(
        "const a = document.activeElement;"
        "return a.closest('.item') ? Array.from(a.closest('#items').children).indexOf(a.closest('.item')) : null;")
    assert focused_item == 2 * PAGE_SIZE
