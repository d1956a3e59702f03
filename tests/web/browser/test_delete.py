"""Deleting, from the keyboard and with the mouse, and undoing it (the toast's button, Ctrl+Z):
the DELETE goes out only once the undo window has passed, and never for a delete undone."""

from __future__ import annotations

import time

import pytest
from selenium.webdriver.common.keys import Keys

from support.items_page import UNDO_SECONDS, ItemsPage

# The newest is deleted from the keyboard; the one below it is then on top.
LIST = ["Call the plumber", "Seed item 090", "Book dentist appointment", "Buy oat milk"]
DOOMED = "Buy oat milk"
# An item further down, deleted and brought back.
UNDONE = "Seed item 090"


@pytest.fixture
def list_page(site, tab) -> ItemsPage:
    site.reset(LIST)
    return tab.open()


def delete_newest_by_keyboard(page: ItemsPage) -> int:
    """From the field (focused on load): Tab to Add, to the newest item's Edit, to its Delete,
    Enter. Returns the deleted item's id once its row has gone."""
    doomed = page.ids()[0]
    page.press(Keys.TAB)
    page.press(Keys.TAB)
    page.press(Keys.TAB)
    page.press(Keys.ENTER)
    page.wait("the item to go", lambda: doomed not in page.ids())
    return doomed


def test_a_delete_takes_the_row_away_at_once_and_offers_undo_in_a_toast_and_an_announcement(list_page, site):
    doomed = delete_newest_by_keyboard(list_page)
    list_page.screenshot("desktop-undo-toast.png")
    assert list_page.top() == LIST[-2]
    assert list_page.js("return document.activeElement.classList.contains('item-delete');"), \
        "focus did not move to the next item's Delete"
    assert list_page.toast() == f"Deleted “{DOOMED}”.\nUndo Ctrl+Z"
    assert list_page.text_of("announcer").startswith(f"Deleted “{DOOMED}”. To undo")
    assert site.status_of(doomed) == 200, "sent before the undo window had passed"


def delete_and_undo_with_the_mouse(page: ItemsPage) -> list[int]:
    """Deletes UNDONE with the mouse and clicks Undo; returns the ids shown before."""
    before = page.ids()
    page.delete(UNDONE)
    page.by_id("toast-undo").click()
    page.wait_for_row(UNDONE)
    return before


def delete_and_undo_by_keyboard(page: ItemsPage) -> list[int]:
    """Focus on UNDONE's Delete, Enter, then Ctrl+Z; returns the ids shown before."""
    before = page.ids()
    page.row(UNDONE).find_element("css selector", ".item-delete").send_keys(Keys.ENTER)
    page.wait("the row to go", lambda: page.row(UNDONE) is None)
    page.press(Keys.CONTROL, "z")
    page.wait_for_row(UNDONE)
    return before


def test_undo_puts_the_item_back_in_its_place_with_focus_on_its_delete(list_page):
    before = delete_and_undo_with_the_mouse(list_page)
    assert list_page.ids() == before
    assert list_page.focused_label() == f"Delete “{UNDONE}”"
    assert not list_page.shown("toast")


def test_ctrl_z_undoes_a_delete_from_the_keyboard(list_page):
    before = delete_and_undo_by_keyboard(list_page)
    assert list_page.ids() == before
    assert list_page.text_of("announcer") == f"Restored “{UNDONE}”."


def test_once_the_undo_window_has_passed_a_delete_is_sent_for_good_and_an_undone_one_never(list_page, site):
    # One test, as both wait out the same window.
    original = next(item for item in site.everything() if item["text"] == UNDONE)
    doomed = delete_newest_by_keyboard(list_page)
    assert site.status_of(doomed) == 200, "sent before the undo window had passed"
    delete_and_undo_with_the_mouse(list_page)
    delete_and_undo_by_keyboard(list_page)
    last_undo = time.monotonic()
    list_page.wait("the delete to reach the API", lambda: site.status_of(doomed) == 404, timeout=UNDO_SECONDS + 8)
    time.sleep(max(0.0, last_undo + UNDO_SECONDS + 1 - time.monotonic()))  # past the undone ones' windows
    assert site.item(original["id"]) == original, "an undone delete changed the item"
    list_page.reload()
    assert DOOMED not in list_page.texts(), "the deleted item came back with a reload"
