"""Deleting, from the keyboard and with the mouse, and undoing it (the toast's button, Ctrl+Z):
the DELETE goes out only once the undo window has passed."""

from __future__ import annotations

import time

import pytest
from selenium.webdriver.common.keys import Keys

from support.items_page import UNDO_SECONDS, seed_texts

# The newest is deleted from the keyboard; the one below it is then on top.
LIST = ["Call the plumber", "Book dentist appointment", "Buy oat milk"]
DOOMED = "Buy oat milk"
# An item well down the first page, deleted and brought back.
UNDONE = "Seed item 090"


@pytest.fixture
def list_page(site, tab):
    site.reset(LIST)
    return tab.open()


def delete_newest_by_keyboard(page) -> int:
    """From the field (focused on load): Tab to Add, to the newest item's Edit, to its Delete,
    Enter. Returns the deleted item's id once its row has gone."""
    doomed = page.ids()[0]
    page.press(Keys.TAB)
    page.press(Keys.TAB)
    page.press(Keys.TAB)
    page.press(Keys.ENTER)
    page.wait("the item to go", lambda: doomed not in page.ids())
    return doomed


def test_a_delete_offers_undo_in_a_toast(list_page):
    delete_newest_by_keyboard(list_page)
    list_page.screenshot("desktop-undo-toast.png")
    assert list_page.toast() == f"Deleted “{DOOMED}”.\nUndo Ctrl+Z"


def test_a_delete_is_announced_with_how_to_undo_it(list_page):
    delete_newest_by_keyboard(list_page)
    assert list_page.text_of("announcer").startswith(f"Deleted “{DOOMED}”. To undo")


def test_the_item_is_kept_until_the_undo_window_has_passed(list_page, site):
    doomed = delete_newest_by_keyboard(list_page)
    assert site.status_of(doomed) == 200


def test_a_deleted_item_leaves_the_list(list_page):
    delete_newest_by_keyboard(list_page)
    assert list_page.top() == LIST[-2]


def test_focus_moves_to_the_next_items_delete(list_page):
    delete_newest_by_keyboard(list_page)
    assert list_page.js("return document.activeElement.classList.contains('item-delete');")


def wait_out_the_undo_window(page, site, doomed: int) -> None:
    page.wait("the undo window to pass", lambda: page.toast() is None, timeout=UNDO_SECONDS + 8)
    page.wait("the delete to reach the API", lambda: site.status_of(doomed) == 404)


def test_after_the_undo_window_the_api_no_longer_has_the_item_and_a_reload_does_not_bring_it_back(list_page, site):
    # One test for both: each would wait out the same undo window.
    doomed = delete_newest_by_keyboard(list_page)
    list_page.wait("the undo window to pass", lambda: list_page.toast() is None, timeout=UNDO_SECONDS + 8)
    list_page.wait("the delete to reach the API", lambda: site.status_of(doomed) == 404)
    assert site.status_of(doomed) == 404
    list_page.reload()
    assert DOOMED not in list_page.texts()


def delete_and_undo_with_the_mouse(page) -> list[int]:
    """Deletes UNDONE with the mouse and clicks Undo; returns the ids shown before."""
    before = page.ids()
    page.delete(UNDONE)
    page.by_id("toast-undo").click()
    page.wait_for_row(UNDONE)
    return before


def test_undo_puts_the_item_back_in_its_place(seeded_page):
    before = delete_and_undo_with_the_mouse(seeded_page)
    assert seeded_page.ids() == before


def test_after_undo_focus_is_on_the_restored_items_delete(seeded_page):
    delete_and_undo_with_the_mouse(seeded_page)
    assert seeded_page.focused_label() == f"Delete “{UNDONE}”"
    assert not seeded_page.shown("toast")


def delete_and_undo_by_keyboard(page) -> list[int]:
    """Focus on UNDONE's Delete, Enter, then Ctrl+Z; returns the ids shown before."""
    before = page.ids()
    page.row(UNDONE).find_element("css selector", ".item-delete").send_keys(Keys.ENTER)
    page.wait("the row to go", lambda: page.row(UNDONE) is None)
    page.press(Keys.CONTROL, "z")
    page.wait_for_row(UNDONE)
    return before


def test_ctrl_z_undoes_a_delete_from_the_keyboard(seeded_page):
    before = delete_and_undo_by_keyboard(seeded_page)
    assert seeded_page.ids() == before
    assert seeded_page.text_of("announcer") == f"Restored “{UNDONE}”."


def test_an_undone_delete_keeps_the_items_id_and_creation_time(seeded_page, site):
    original = next(item for item in site.everything() if item["text"] == UNDONE)
    delete_and_undo_with_the_mouse(seeded_page)
    delete_and_undo_by_keyboard(seeded_page)
    time.sleep(UNDO_SECONDS + 1)  # past both undo windows: nothing may be sent
    assert site.item(original["id"]) == original
