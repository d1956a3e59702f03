"""Keyboard and screen-reader use: focus on load, labels and names, the Tab order, visible focus;
and axe-core (WCAG 2.2 A/AA) on each state of the page that differs in what it shows."""

from __future__ import annotations

from typing import Callable

import pytest
from selenium.webdriver.common.keys import Keys

from support.items_page import TEXT_LIMIT, ItemsPage, one_of_each_kind, seed_texts
from support.tools import unavailable


NEWEST = "Buy oat milk"


@pytest.fixture
def keyboard_page(site, tab):
    """The page (its field focused on load) over a short list, NEWEST on top."""
    site.reset(["Call the plumber", NEWEST])
    return tab.open()


def test_tab_goes_from_the_field_to_add_with_focus_visible_then_to_the_newest_items_edit_and_delete(keyboard_page):
    newest = keyboard_page.ids()[0]
    keyboard_page.press(Keys.TAB)
    assert keyboard_page.focus() == "add-button"
    style, width = keyboard_page.js("const s = getComputedStyle(document.activeElement); return [s.outlineStyle, s.outlineWidth];")
    assert style != "none" and width != "0px", "keyboard focus is not visible"
    keyboard_page.press(Keys.TAB)
    focused_item = keyboard_page.js(
        "const a = document.activeElement; return a.closest('.item') ? Number(a.closest('.item').dataset.id) : null;")
    first_control = keyboard_page.focused_text()
    keyboard_page.press(Keys.TAB)
    assert focused_item == newest
    assert (first_control, keyboard_page.focused_label()) == ("Edit", f"Delete “{NEWEST}”")


@pytest.fixture
def short_page(site, tab) -> ItemsPage:
    site.reset(one_of_each_kind())
    return tab.open()


def test_on_load_the_field_has_focus_and_a_visible_label_and_every_control_has_an_accessible_name(short_page):
    assert short_page.focus() == "item-text"
    label = short_page.js("const i = document.getElementById('item-text'); return i.labels.length ? i.labels[0].textContent : '';")
    assert label == "New item"
    unnamed = short_page.js(
        "return Array.from(document.querySelectorAll('button, input'))"
        ".filter((n) => !(n.getAttribute('aria-label') || n.textContent.trim() || (n.labels && n.labels.length)))"
        ".length;")
    assert unnamed == 0, "controls without an accessible name"


# ---- axe-core: each state that shows something the others do not, built from scratch

GATEWAY_ERRORS = (r"/api/\S* - Failed to load resource: the server responded with a status of 50[234]",
                  r"/api/\S* - Failed to load resource: net::ERR_CONNECTION_REFUSED")


def empty(site, tab, stack) -> None:
    site.reset()
    tab.open()
    tab.wait("the empty state", lambda: "No items yet" in tab.text_of("list-status"))


def first_page(site, tab, stack) -> None:
    """More than a page of items, all loaded with "Load more"."""
    site.reset(seed_texts())
    tab.open()
    tab.load_all()


def blank_text_refused(site, tab, stack) -> None:
    site.reset(one_of_each_kind())
    tab.open()
    tab.allow_errors(r"/api/items - Failed to load resource: the server responded with a status of 400")
    tab.add("   ")
    tab.wait("the inline error", lambda: tab.text_of("form-error") != "")


def undo_toast(site, tab, stack) -> None:
    site.reset(one_of_each_kind())
    tab.open()
    tab.delete("Seed item 090")
    tab.wait("the toast", lambda: tab.shown("toast"))


def edit_refused(site, tab, stack) -> None:
    site.reset(one_of_each_kind())
    tab.open()
    tab.allow_errors(r"/api/items/\d+ - Failed to load resource: the server responded with a status of 400")
    row = tab.click_in_row("Seed item 080", ".item-edit")
    field = tab.focused()
    field.clear()
    field.send_keys("   ", Keys.ENTER)
    tab.wait("the refusal", lambda: row.find_elements("css selector", ".item-error") != [])
    tab.js("arguments[0].scrollIntoView({block: 'center'});", row)


def outage_banner(site, tab, stack) -> None:
    site.reset(one_of_each_kind())
    tab.open()
    tab.allow_errors(*GATEWAY_ERRORS)
    # Started again before the next test sets its data, once this page is gone (it would send
    # its add again as soon as the API answered).
    stack.api.stop()
    tab.add("Water the plants")
    tab.wait("the unavailable banner", lambda: tab.shown("banner"))


def phone(site, tab, stack) -> None:
    site.reset(one_of_each_kind())
    tab.browser.viewport(390, 844, mobile=True)
    tab.open()


def phone_dark(site, tab, stack) -> None:
    phone(site, tab, stack)
    tab.browser.color_scheme("dark")


def text_too_long(site, tab, stack) -> None:
    site.reset(one_of_each_kind())
    tab.open()
    counter = tab.set_field("ü" * (TEXT_LIMIT + 50))
    tab.wait("the character counter", counter.is_displayed)
    tab.field.send_keys(Keys.ENTER)
    tab.wait("the refusal", lambda: tab.text_of("form-error") != "")


# In an order that keeps the items one state leaves for the next (the first states' are those of
# the tests above): each test still sets its own.
STATES: dict[str, Callable[..., None]] = {
    "blank text refused": blank_text_refused, "edit refused": edit_refused, "outage banner": outage_banner,
    "phone": phone, "phone dark": phone_dark, "text too long": text_too_long, "undo toast": undo_toast,
    "empty": empty, "first page": first_page,
}


@pytest.mark.parametrize("state", STATES)
def test_axe_finds_no_wcag_2_2_aa_violation(state, site, tab: ItemsPage, stack, axe_script):
    if axe_script is None:
        unavailable("axe-core is not installed", "scripts/venv, which runs npm ci in tests/browser-tools")
    STATES[state](site, tab, stack)
    assert tab.audit(axe_script) == []
