"""What the page lets an item's text and an injected script do: nothing. The probe that records
CSP violations and errors for every test's teardown check is in the page, and a violation
reaches it."""

from __future__ import annotations

import time

XSS_TEXT = "<img src=x onerror=alert(1)>"


def test_the_csp_refuses_an_inline_script_and_the_tests_probe_and_the_console_both_report_it(page):
    # Positive control for every test's teardown check: the probe is in the page, the CSP nginx
    # sent refuses an injected inline script, and the refusal shows where the check looks.
    assert page.js("return typeof window.__webtest === 'object';"), "the tests' probe is not in the page"
    page.js("const s = document.createElement('script'); s.textContent = 'window.__inlineRan = true;'; document.head.append(s);")
    page.wait("the CSP report", lambda: page.js("return window.__webtest.csp.length;") > 0, timeout=5)
    ran = page.js("return window.__inlineRan === true;")
    reported = [e["message"] for e in page.browser.driver.get_log("browser") if "Content Security Policy" in e.get("message", "")]
    page.js("window.__webtest.csp = [];")  # provoked here: not the teardown check's business
    assert not ran
    assert len(reported) >= 1


def test_html_looking_text_is_shown_literally_and_never_runs(page):
    page.add_and_wait(XSS_TEXT)
    time.sleep(0.5)  # time for an onerror handler to fire, were the text parsed as HTML
    page.collect()
    assert page.top() == XSS_TEXT
    assert page.js("return document.querySelectorAll('#items img').length;") == 0, "an element made from item text"
    assert page.browser.alerts == [], "a script ran from item text"
