"""What the page lets an item's text and an injected script do: nothing. The probe that records
CSP violations and errors for every test's teardown check is there, and a violation reaches it."""

from __future__ import annotations

import time

XSS_TEXT = "<img src=x onerror=alert(1)>"


def test_the_tests_console_and_csp_probe_is_installed(page):
    assert page.js("return typeof window.__webtest === 'object';")


def inject_inline_script(page) -> tuple[bool, list[str]]:
    """Positive control: an inline script injected into the page must be refused by the CSP nginx
    sent. Returns whether it ran and the console's CSP reports; the probe's record of this
    violation is then dropped (it was provoked)."""
    page.js("const s = document.createElement('script'); s.textContent = 'window.__inlineRan = true;'; document.head.append(s);")
    page.wait("the CSP report", lambda: page.js("return window.__webtest.csp.length;") > 0, timeout=5)
    ran = page.js("return window.__inlineRan === true;")
    reported = [e["message"] for e in page.browser.driver.get_log("browser") if "Content Security Policy" in e.get("message", "")]
    page.js("window.__webtest.csp = [];")
    return ran, reported


def test_the_csp_refuses_an_inline_script_in_the_browser(page):
    ran, _ = inject_inline_script(page)
    assert not ran


def test_a_csp_violation_reaches_the_console_log(page):
    _, reported = inject_inline_script(page)
    assert len(reported) >= 1


def test_html_looking_text_is_rendered_literally(page):
    page.add_and_wait(XSS_TEXT)
    assert page.top() == XSS_TEXT


def test_no_element_is_created_from_item_text(page):
    page.add_and_wait(XSS_TEXT)
    assert page.js("return document.querySelectorAll('#items img').length;") == 0


def test_no_script_runs_from_item_text(page):
    page.add_and_wait(XSS_TEXT)
    time.sleep(0.5)  # time for an onerror handler to fire, were the text parsed as HTML
    page.collect()
    assert page.browser.alerts == []
