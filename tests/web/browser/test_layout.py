"""The page on a phone (390 px), on a touch screen, and in the dark colour scheme."""

from __future__ import annotations

import pytest

from support.items_page import one_of_each_kind


@pytest.fixture
def phone_page(site, tab):
    """A phone's viewport, then the page (a row of each kind, one with a long unbroken word)."""
    site.reset(one_of_each_kind())
    tab.browser.viewport(390, 844, mobile=True)
    return tab.open()


def test_at_390_px_nothing_scrolls_sideways_the_field_and_add_share_a_row_and_delete_is_easy_to_tap(phone_page):
    phone_page.screenshot("phone.png")
    overflow = phone_page.js("return document.documentElement.scrollWidth - document.documentElement.clientWidth;")
    row = phone_page.js(
        "const i = document.getElementById('item-text').getBoundingClientRect();"
        "const a = document.getElementById('add-button').getBoundingClientRect();"
        "return {inputWidth: i.width, sameRow: Math.abs(i.top - a.top) < 2, addRight: a.right};")
    tap = phone_page.js("return document.querySelector('#items .item-delete').getBoundingClientRect().height;")
    phone_page.browser.color_scheme("dark")
    phone_page.screenshot("phone-dark.png")
    assert overflow <= 0, "horizontal scrolling"
    assert row["sameRow"] and row["addRight"] <= 390 and row["inputWidth"] > 150
    assert tap >= 40, "Delete is too small a tap target"


@pytest.fixture
def touch_page(site, tab):
    """A phone with a touch screen as its pointer, then the page."""
    site.reset(one_of_each_kind())
    tab.browser.viewport(390, 844, mobile=True)
    tab.browser.touch(True)
    return tab.open()


def test_on_a_touch_screen_there_is_no_focus_on_load_enter_says_send_and_no_hover_looks(touch_page):
    assert touch_page.js("return matchMedia('(pointer: coarse)').matches;"), "the touch emulation did not take"
    # The on-screen keyboard would cover the list.
    assert touch_page.focus() != "item-text"
    assert touch_page.field.get_attribute("enterkeyhint") == "send"
    # :hover rules outside an @media (hover: hover) block.
    bare_hover = touch_page.js(
        "const bare = [];"
        "for (const sheet of document.styleSheets) for (const rule of sheet.cssRules)"
        "  if (rule.selectorText && rule.selectorText.includes(':hover')) bare.push(rule.selectorText);"
        "return bare;")
    hover_rules = touch_page.js(
        "let n = 0;"
        "for (const sheet of document.styleSheets) for (const rule of sheet.cssRules)"
        "  if (rule.media && rule.conditionText === '(hover: hover)') n += rule.cssRules.length;"
        "return n;")
    assert bare_hover == [] and hover_rules >= 3


def test_prefers_color_scheme_dark_changes_the_colours(site, tab):
    site.reset(one_of_each_kind())
    page = tab.open()
    page.screenshot("desktop.png")
    light = page.js("return getComputedStyle(document.body).backgroundColor;")
    page.browser.color_scheme("dark")
    dark = page.js("return getComputedStyle(document.body).backgroundColor;")
    page.screenshot("desktop-dark.png")
    assert dark != light
