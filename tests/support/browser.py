"""Headless Chromium driven by Selenium through Debian's chromedriver, with a probe that records
CSP violations, uncaught errors and alert() calls in every document."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any, Callable

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--lang=en-US",
    # Tests navigate a lot (each opens its own page): without the back/forward cache a page that
    # is left is unloaded at once, and with one site in play a renderer per site only costs time.
    "--disable-features=BackForwardCache,site-per-process",
    "--disable-site-isolation-trials",
]

# Runs before any page script. Its records live only as long as the document, so collect()
# moves them into the test's records before each navigation.
PROBE_SCRIPT = """
window.__webtest = {csp: [], errors: [], alerts: []};
document.addEventListener("securitypolicyviolation", (e) => {
  window.__webtest.csp.push(`${e.violatedDirective} blocked ${e.blockedURI} at ${e.sourceFile}:${e.lineNumber}`);
});
window.addEventListener("error", (e) => window.__webtest.errors.push(String(e.message)));
window.addEventListener("unhandledrejection", (e) => window.__webtest.errors.push(String(e.reason)));
window.alert = (message) => window.__webtest.alerts.push(String(message));
// How many change streams said "ready": a page that has one open does not poll.
window.__webtestStreamsReady = 0;
if (window.EventSource) {
  const Real = window.EventSource;
  window.EventSource = class extends Real {
    constructor(...args) {
      super(...args);
      this.addEventListener("ready", () => { window.__webtestStreamsReady += 1; });
    }
  };
}
"""


class Browser:
    # The open browser, for the hook that takes a screenshot when a test fails.
    current: "Browser | None" = None

    def __init__(self, chromium: str, chromedriver: str, artifacts: Path) -> None:
        self.artifacts = artifacts
        artifacts.mkdir(parents=True, exist_ok=True)
        self.profile = tempfile.TemporaryDirectory(prefix="webtest-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self.profile.name}")
        options.add_argument("--window-size=1280,900")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(executable_path=chromedriver, log_output=str(artifacts / "chromedriver.log"))
        self.driver = webdriver.Chrome(options=options, service=service)
        self.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": PROBE_SCRIPT})
        self.console_errors: list[str] = []
        self.csp_violations: list[str] = []
        self.page_errors: list[str] = []
        self.alerts: list[str] = []
        # What the records are filed under: the current test's name.
        self.phase = ""
        # Whether the tab shows about:blank, as a test leaves it (see begin()).
        self.blank = False
        # Emulation a test changed, to put back before the next one.
        self._emulated: set[str] = {"viewport", "color scheme", "touch"}
        Browser.current = self

    def close(self) -> None:
        Browser.current = None
        try:
            self.driver.quit()
        finally:
            self.profile.cleanup()

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def wait(self, what: str, condition: Callable[[], Any], timeout: float = 10) -> Any:
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.02).until(lambda _driver: condition())
        except TimeoutException:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}") from None

    def by_id(self, element_id: str) -> WebElement:
        return self.driver.find_element(By.ID, element_id)

    def active_id(self) -> str:
        return self.js("return document.activeElement ? document.activeElement.id : '';")

    def screenshot(self, name: str) -> Path:
        path = self.artifacts / name
        self.driver.save_screenshot(str(path))
        return path

    def viewport(self, width: int, height: int, mobile: bool) -> None:
        self._emulated.add("viewport")
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
        )

    def audit(self, axe_script: str | None) -> list[str] | None:
        """axe-core's WCAG 2.2 A/AA violations in the page as it is now, one line each (rule, the
        elements); None when axe-core is not installed."""
        if axe_script is None:
            return None
        self.js(axe_script)
        result = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa']},"
            " resultTypes: ['violations']}).then((r) => done(r.violations.map("
            "  (v) => `${v.id}: ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`)), (e) => done([`axe failed: ${e}`]));")
        return list(result)

    def touch(self, enabled: bool) -> None:
        """A touch screen as the primary pointer (`pointer: coarse`), or back to none."""
        self._emulated.add("touch")
        self.driver.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": enabled, "maxTouchPoints": 5})

    def color_scheme(self, scheme: str) -> None:
        self._emulated.add("color scheme")
        self.driver.execute_cdp_cmd(
            "Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": scheme}]}
        )

    def collect(self, phase: str, allowed: tuple[str, ...] = ()) -> int:
        """Moves this document's console messages and probe records into the test's records.

        Returns how many console errors matched `allowed` (the failures the test provoked)."""
        # Read and emptied at once, so that a later collect() on the same document does not
        # count these twice.
        probe = self.js("const seen = window.__webtest || {csp: [], errors: [], alerts: []};"
                        "window.__webtest = {csp: [], errors: [], alerts: []}; return seen;")
        self.csp_violations += [f"[{phase}] {v}" for v in probe["csp"]]
        self.page_errors += [f"[{phase}] {e}" for e in probe["errors"]]
        self.alerts += [f"[{phase}] {a}" for a in probe["alerts"]]
        expected = 0
        for entry in self.driver.get_log("browser"):
            message = entry.get("message", "")
            if "Content Security Policy" in message or "Content-Security-Policy" in message:
                self.csp_violations.append(f"[{phase}] {message}")
            elif entry.get("level") == "SEVERE":
                if any(re.search(pattern, message) for pattern in allowed):
                    expected += 1
                else:
                    self.console_errors.append(f"[{phase}] {entry.get('source', '?')}: {message}")
        return expected

    def reload(self, phase: str, allowed: tuple[str, ...] = ()) -> None:
        self.collect(phase, allowed)
        self.driver.refresh()

    def begin(self, phase: str) -> None:
        """A clean tab for the next test: a blank document, the default window (desktop, light,
        no touch screen), and nothing recorded yet."""
        if not self.blank:
            self.driver.get("about:blank")
            self.blank = True
        self.driver.get_log("browser")  # what the last test's page logged while it went
        if "viewport" in self._emulated:
            self.viewport(1280, 900, mobile=False)
        if "color scheme" in self._emulated:
            self.color_scheme("light")
        if "touch" in self._emulated:
            self.touch(False)
        self._emulated.clear()
        for records in (self.console_errors, self.csp_violations, self.page_errors, self.alerts):
            records.clear()
        self.phase = phase

    def end(self, allowed: tuple[str, ...] = ()) -> list[str]:
        """Collects what the test's page logged, leaves it for a blank document (its streams and
        timers stop; a delete still waiting for its undo window is sent, as when a user leaves),
        and returns what no test may cause: unexpected console errors, uncaught page errors and
        CSP violations."""
        try:
            if not self.blank:
                self.collect(self.phase, allowed)
        finally:
            self.driver.get("about:blank")
            self.blank = True
        return ([f"console error: {e}" for e in self.console_errors]
                + [f"uncaught page error: {e}" for e in self.page_errors]
                + [f"CSP violation: {v}" for v in self.csp_violations])
