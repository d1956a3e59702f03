"""Editing in place: Enter saves, Escape cancels, blank text is refused on the row."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.keys import Keys

TARGET = "Seed item 080"
EDITED = "Seed item 080 (edited)"
LIST = ["Seed item 079", TARGET, "Seed item 081"]
EDIT_REFUSED_400 = r"/api/items/\d+ - Failed to load resource: the server responded with a status of 400"


@pytest.fixture
def list_page(site, tab):
    site.reset(LIST)
    return tab.open()


def open_editor(page, text: str):
    """Clicks Edit on the row showing `text`; returns the row and the focused edit field."""
    row = page.click_in_row(text, ".item-edit")
    return row, page.focused()


def test_enter_saves_the_edit_keeping_the_id_and_creation_time_and_focus_returns_to_edit(list_page, site):
    original = next(item for item in site.everything() if item["text"] == TARGET)
    _, field = open_editor(list_page, TARGET)
    field.send_keys(" (edited)", Keys.ENTER)
    list_page.wait_for_row(EDITED)
    assert site.item(original["id"]) == {**original, "text": EDITED}
    assert list_page.focused_label() == f"Edit “{EDITED}”"


def test_edit_opens_a_field_with_the_items_text_and_escape_cancels_it(list_page):
    row, field = open_editor(list_page, TARGET)
    assert field.get_attribute("value") == TARGET and "item-edit-field" in field.get_attribute("class")
    field.send_keys(" and more", Keys.ESCAPE)
    list_page.wait("the edit to close", lambda: not list_page.js("return document.querySelector('.item.is-editing') !== null;"))
    assert row.find_element("css selector", ".item-text").text == TARGET
    assert list_page.focused_text() == "Edit"


def test_a_blank_edit_is_refused_on_its_row_in_plain_words(list_page, site):
    list_page.allow_errors(EDIT_REFUSED_400)
    original = next(item for item in site.everything() if item["text"] == TARGET)
    row, field = open_editor(list_page, TARGET)
    field.clear()
    field.send_keys("   ", Keys.ENTER)
    list_page.wait("the refusal", lambda: row.find_elements("css selector", ".item-error") != [])
    list_page.js("arguments[0].scrollIntoView({block: 'center'});", row)
    list_page.screenshot("desktop-edit-refused.png")
    assert row.find_element("css selector", ".item-error").text.startswith("Not saved: an item needs some text")
    assert field.get_attribute("aria-invalid") == "true" and "is-editing" in row.get_attribute("class")
    field.send_keys(Keys.ESCAPE)
    assert site.item(original["id"])["text"] == TARGET
