"""The API going away and coming back: the page says so in its own words, keeps the list, and
afterwards saves an add it could not confirm exactly once (its Idempotency-Key), by itself."""

from __future__ import annotations

import time

import pytest

from support.items_page import ItemsPage

A_FEW = ["Call the plumber", "Renew the passport"]
PENDING = "Water the plants"
# Through nginx the outage is a 502 (the page's requests, its probes).
OUTAGE_ERRORS = (r"/api/\S* - Failed to load resource: the server responded with a status of 50[234]",
                 r"/api/\S* - Failed to load resource: net::ERR_CONNECTION_REFUSED")


@pytest.fixture
def outage_page(site, tab) -> ItemsPage:
    """The page over a few items; the API it talks to is stopped by the test (and started again
    by the test, or else before the next test's data is set)."""
    site.reset(A_FEW)
    tab.allow_errors(*OUTAGE_ERRORS)
    return tab.open()


def add_during_an_outage(page: ItemsPage, stack) -> dict:
    """Stops the API, adds PENDING, waits for the banner: what the page showed."""
    stack.api.stop()
    page.add(PENDING)
    page.wait("the unavailable banner", lambda: page.shown("banner"))
    return {"banner": page.text_of("banner"), "form_error": page.text_of("form-error"), "top": page.top()}


def test_in_an_outage_a_banner_says_so_the_list_stays_and_a_failed_add_is_explained_inline(outage_page, stack):
    seen = add_during_an_outage(outage_page, stack)
    outage_page.screenshot("desktop-outage.png")
    assert "The list cannot be reached right now." in seen["banner"]
    assert "API" not in seen["banner"]
    assert "your item may not be saved yet" in seen["form_error"]
    assert seen["top"] == A_FEW[-1], "the list went away"


def back_after_the_outage(page: ItemsPage, stack, site) -> dict:
    """Starts the API again; once the page has said it saved the add by itself: what it shows."""
    stack.api.start()
    page.wait("the banner to go by itself", lambda: not page.shown("banner"), timeout=40)
    page.wait_ready()
    page.wait_for_text("form-error", "now that the list is back")
    return {"texts": page.texts(), "settled": page.text_of("form-error"), "field": page.field_value(),
            "stored": site.texts().count(PENDING)}


def test_the_page_is_back_within_two_seconds_of_the_api(outage_page, stack, figure, backend):
    add_during_an_outage(outage_page, stack)
    time.sleep(5)  # let the page's probes fail against the stopped API for a while
    stack.api.start()
    back = time.monotonic()
    outage_page.wait("the banner to go by itself", lambda: not outage_page.shown("banner"), timeout=40)
    recovered_s = time.monotonic() - back
    figure(f"browser [{backend}]: back after the API answered, ms", f"{recovered_s * 1000:.0f}")
    assert recovered_s < 2, recovered_s


def test_when_the_api_is_back_the_page_recovers_and_saves_the_add_made_in_the_outage_once_saying_so(
        outage_page, stack, site):
    add_during_an_outage(outage_page, stack)
    seen = back_after_the_outage(outage_page, stack, site)
    assert seen["texts"][:2] == [PENDING, A_FEW[-1]]
    # Sent again with its Idempotency-Key: stored exactly once, whatever became of the first try.
    assert seen["stored"] == 1
    assert seen["settled"] == f"Your item “{PENDING}” was saved now that the list is back."
    assert seen["field"] == ""


def test_opened_while_the_api_is_down_the_page_loads_and_says_so(site, tab, stack):
    site.reset(A_FEW)
    tab.allow_errors(*OUTAGE_ERRORS)
    stack.api.stop()
    tab.open()
    tab.wait("the banner on a fresh load", lambda: tab.shown("banner"))
    tab.wait_for_text("list-status", "can be reached")
    assert {"title": tab.title, "status": tab.text_of("list-status"), "form": tab.shown("add-form")} == {
        "title": "Items", "form": True, "status": "The items will appear here as soon as the list can be reached."}
    # And it comes to life when the API does.
    stack.api.start()
    tab.wait("the banner to go", lambda: not tab.shown("banner"), timeout=40)
    tab.wait_ready()
    assert tab.texts() == A_FEW[::-1]


LOST = "Answer lost on the way"


@pytest.fixture
def lost_answer(site, tab) -> ItemsPage:
    """The add reaches the API but its answer is lost (the page's fetch throws after the POST was
    answered); the page sends it again with its key, and finds it stored."""
    site.reset(A_FEW)
    page = tab.open()
    page.js("""
        const real = window.fetch;
        window.fetch = async (url, options) => {
          if (options && options.method === "POST") {
            window.fetch = real;
            await real(url, options);
            throw new TypeError("the answer was lost");
          }
          return real(url, options);
        };""")
    page.add(LOST)
    page.wait_for_text("form-error", "after all", timeout=20)
    return page


def test_an_add_whose_answer_was_lost_is_stored_once_shown_and_reported_saved(lost_answer, site):
    assert lost_answer.text_of("form-error") == f"Your item “{LOST}” was saved after all."
    assert site.texts().count(LOST) == 1 and lost_answer.top() == LOST
    assert lost_answer.field_value() == ""
