"""Adding from the field: Enter, blank text refused in the page's words, long texts and the
character counter near the API's limit (MAX_TEXT_CHARS=2000 here)."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.keys import Keys

from support.items_page import LONG_TEXT, TEXT_LIMIT, ItemsPage

# A few items already on the list.
A_FEW = ["Call the plumber", "Renew the passport"]
NEW_TEXT = "Book dentist appointment"
BLANK_REFUSED_400 = r"/api/items - Failed to load resource: the server responded with a status of 400"


@pytest.fixture
def few_page(site, tab) -> ItemsPage:
    site.reset(A_FEW)
    return tab.open()


def test_an_item_added_with_enter_is_stored_and_shown_at_the_top_and_the_field_is_ready_for_the_next(few_page, site):
    few_page.add(NEW_TEXT)
    few_page.wait_for_top(NEW_TEXT)
    assert few_page.texts()[:2] == [NEW_TEXT, A_FEW[-1]]
    assert site.items(1)[0]["text"] == NEW_TEXT, "the API has not got it"
    assert few_page.field_value() == "", "the field was not cleared"
    assert few_page.focus() == "item-text", "the field lost focus"


def test_items_persist_across_a_reload(few_page):
    few_page.add_and_wait("Said before the reload")
    few_page.add_and_wait(NEW_TEXT)
    few_page.reload()
    assert few_page.texts()[:3] == [NEW_TEXT, "Said before the reload", A_FEW[-1]]


def add_blank(page: ItemsPage) -> None:
    """Spaces and Enter; waits for the page's refusal."""
    page.allow_errors(BLANK_REFUSED_400)
    page.add("   ")
    page.wait("the inline error", lambda: page.text_of("form-error") != "")


def test_blank_text_is_refused_inline_in_the_users_words_until_the_field_is_edited(few_page, site):
    # The API says "text must not be empty"; the page says it its own way.
    status, body = site.call("POST", "/api/items", {"text": "   "})
    assert (status, body["detail"]) == (400, "text must not be empty")
    add_blank(few_page)
    assert few_page.text_of("form-error") == "Write something first: an item cannot be empty."
    assert few_page.field.get_attribute("aria-invalid") == "true"
    assert few_page.texts() == A_FEW[::-1] and site.texts() == A_FEW[::-1], "something was added"
    assert few_page.focus() == "item-text"
    # Editing the field clears the error.
    few_page.field.send_keys(Keys.CONTROL, "a")
    few_page.field.send_keys(Keys.BACK_SPACE)
    assert few_page.text_of("form-error") == ""


def test_the_browser_console_is_captured_the_provoked_400_was_logged(few_page):
    add_blank(few_page)
    assert few_page.collect(BLANK_REFUSED_400) == 1


CLIPPED = "return arguments[0].scrollHeight > arguments[0].clientHeight + 1;"


def test_a_long_item_is_collapsed_with_show_more_which_shows_all_of_it_and_then_less(site, tab):
    site.reset(A_FEW + [LONG_TEXT])
    tab.open()
    row = tab.wait_for_row(LONG_TEXT)
    text, toggle = row.find_element("css selector", ".item-text"), row.find_element("css selector", ".item-more")
    tab.js("arguments[0].scrollIntoView({block: 'center'});", row)
    tab.screenshot("desktop-long-item-collapsed.png")
    assert tab.js(CLIPPED, text) and (toggle.text, toggle.get_attribute("aria-expanded")) == ("Show more", "false")
    toggle.send_keys(Keys.ENTER)
    assert (tab.js(CLIPPED, text), toggle.text, toggle.get_attribute("aria-expanded")) == (False, "Show less", "true")
    toggle.click()
    assert tab.js(CLIPPED, text), "Show less did not collapse it"


def near_the_limit(page: ItemsPage, text: str):
    """Puts `text` into the field and waits for the character counter, which shows only once the
    page knows the API's limit (it asks for it after loading); returns the counter."""
    counter = page.set_field(text)
    page.wait("the character counter", counter.is_displayed)
    return counter


def test_the_counter_shows_only_near_the_limit_and_counts_characters_not_bytes(page):
    assert near_the_limit(page, "x" * 1850).text == "1,850 of 2,000 characters"
    assert near_the_limit(page, "ü" * (TEXT_LIMIT + 50)).text == "50 characters too many (at most 2,000)"
    assert not page.set_field("x" * 1000).is_displayed(), "the counter shows for a short text"


def test_a_text_over_the_limit_is_refused_before_sending(few_page, site):
    near_the_limit(few_page, "ü" * (TEXT_LIMIT + 50))
    few_page.field.send_keys(Keys.ENTER)
    few_page.wait("the refusal", lambda: few_page.text_of("form-error") != "")
    few_page.screenshot("desktop-text-too-long.png")
    assert few_page.text_of("form-error") == "Too long: an item holds at most 2,000 characters."
    assert len(site.everything()) == len(A_FEW)


def test_announcements_of_long_items_are_shortened(page):
    # A long text that fits: the announcement is shortened like the labels.
    page.set_field("y" * 1990)
    page.field.send_keys(Keys.ENTER)
    page.wait_for_top("y" * 1990)
    assert page.text_of("announcer") == f"Added “{'y' * 59}…”."
