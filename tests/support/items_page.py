"""The items page and the items API as the browser tests use them.

`ItemsPage` is a page object: what a user sees (texts, focus, messages) and does (type, press a
key, click) on the page, read from the DOM and its texts only, never from how the page's scripts
are laid out. `ItemsApi` arranges data and checks what the page did, through the API's own routes
on one keep-alive connection: a change made that way goes through the API's list cache and change
feed exactly as a change by another user does.
"""

from __future__ import annotations

import http.client
import json
import time
import uuid
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement

from support.browser import Browser

PAGE_SIZE = 100
# The browser tests' API runs with MAX_TEXT_CHARS at this, a limit small enough to reach by typing.
TEXT_LIMIT = 2000
# How long the page waits before it sends a DELETE, so that the delete can be undone.
UNDO_SECONDS = 7

LONG_WORD = "Unbreakable" * 12


LONG_TEXT = "\n".join(f"Line {n}: " + " ".join(["many words"] * 12) for n in range(1, 13))


def seed_texts() -> list[str]:
    """More than one page of items, oldest first; the newest has an unbreakable long word."""
    return [f"Seed item {n:03d}" for n in range(1, PAGE_SIZE + 4)] + [f"Long word: {LONG_WORD}"]


def one_of_each_kind() -> list[str]:
    """A short list with a row of each kind the page draws differently: plain text, a long
    unbroken word, a long text (collapsed, with "Show more"), right-to-left text. Where the
    layout or accessibility of rows is checked, more rows of the same kinds add only time."""
    return ["Call the plumber", "Seed item 080", "Seed item 090", f"Long word: {LONG_WORD}", LONG_TEXT, "שלום, עולם!"]


# The list has loaded and shows items: no status line, no busy list.
LIST_READY = """
const status = document.getElementById("list-status");
const list = document.getElementById("items");
return status.hidden && !list.hasAttribute("aria-busy");
"""
# The first load is over, whatever it found: items, none, or no list to be reached.
LIST_SETTLED = """
const loading = document.getElementById("list-status-text").textContent === "Loading items…";
return !loading && !document.getElementById("items").hasAttribute("aria-busy");
"""


class ItemsApi:
    """The API's routes, to arrange data before a page opens and to check what the page did."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self._address = (parts.hostname, parts.port)
        self._connection: http.client.HTTPConnection | None = None
        # The items as `reset` last left them ((id, text), newest first), to skip a reset that
        # would change nothing.
        self._known: list[tuple[int, str]] | None = None
        # Whether the current test has set its data (the `site` fixture clears it).
        self.reset_done = False

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
             ) -> tuple[int, Any]:
        """(status, parsed JSON body or None). A connection the API closed (it was restarted) is
        opened again once; creates carry an Idempotency-Key, so sending one twice is safe."""
        payload = None if body is None else json.dumps(body).encode()
        send = {"Content-Type": "application/json"} if payload is not None else {}
        send.update(headers or {})
        for attempt in (1, 2):
            reused = self._connection is not None
            if self._connection is None:
                self._connection = http.client.HTTPConnection(*self._address, timeout=10)
            try:
                self._connection.request(method, path, body=payload, headers=send)
                response = self._connection.getresponse()
                data = response.read()
            except (http.client.HTTPException, ConnectionError):
                self.close()
                if reused and attempt == 1:
                    continue
                raise
            if response.getheader("Connection", "").lower() == "close":
                self.close()
            type_ = response.getheader("Content-Type", "")
            return response.status, (json.loads(data) if data and "json" in type_ else None)
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def add(self, text: str) -> dict[str, Any]:
        status, item = self.call("POST", "/api/items", {"text": text}, {"Idempotency-Key": str(uuid.uuid4())})
        assert status == 201, f"POST /api/items {text[:40]!r}: {status} {item}"
        return item

    def delete(self, item_id: int) -> None:
        status, body = self.call("DELETE", f"/api/items/{item_id}")
        assert status in (204, 404), f"DELETE /api/items/{item_id}: {status} {body}"

    def status_of(self, item_id: int) -> int:
        return self.call("GET", f"/api/items/{item_id}")[0]

    def item(self, item_id: int) -> dict[str, Any]:
        status, item = self.call("GET", f"/api/items/{item_id}")
        assert status == 200, f"GET /api/items/{item_id}: {status} {item}"
        return item

    def items(self, limit: int = 1000) -> list[dict[str, Any]]:
        """The newest `limit` items, newest first."""
        status, items = self.call("GET", f"/api/items?limit={limit}")
        assert status == 200, f"GET /api/items: {status} {items}"
        return items

    def everything(self) -> list[dict[str, Any]]:
        """Every item, newest first, through the API's pages."""
        found: list[dict[str, Any]] = []
        while True:
            before = f"&before={found[-1]['id']}" if found else ""
            status, page = self.call("GET", f"/api/items?limit=1000{before}")
            assert status == 200, f"GET /api/items: {status} {page}"
            found += page
            if len(page) < 1000:
                return found

    def texts(self) -> list[str]:
        return [item["text"] for item in self.everything()]

    def reset(self, texts: Iterable[str] = ()) -> list[dict[str, Any]]:
        """Makes the items exactly `texts`, oldest first (the last is the newest), deleting every
        other item and adding these; returns them newest first. Data left exactly as the last
        reset made it is kept: nothing changed, so there is nothing to redo."""
        wanted = list(texts)
        self.reset_done = True
        shown = self.everything()
        if self._known is not None and [(i["id"], i["text"]) for i in shown] == self._known \
                and [i["text"] for i in reversed(shown)] == wanted:
            return shown
        for item in shown:
            self.delete(item["id"])
        made = [self.add(text) for text in wanted][::-1]
        self._known = [(i["id"], i["text"]) for i in made]
        return made

    def page_left(self, shown: list[int]) -> None:
        """Told which ids a page showed as it was left: a page that no longer showed one of the
        items `reset` made may have been waiting to delete it, and sends that DELETE as it goes
        (on pagehide), maybe after the next test has looked: the next reset redoes everything."""
        if not self._known:
            return
        oldest = min(shown, default=None)
        if oldest is None or any(i not in shown for i, _ in self._known if i >= oldest):
            self._known = None


class ItemsPage:
    """The items page in the test's browser tab."""

    def __init__(self, browser: Browser, url: str, site: ItemsApi | None = None) -> None:
        self.browser = browser
        self.url = url
        self.site = site
        # Console errors this test provokes on purpose (regular expressions).
        self.allowed_errors: list[str] = []

    # ---- navigating

    def open(self, url: str | None = None) -> "ItemsPage":
        """Opens the page (at `url`, another server's, if given) and waits for its first load to
        be over."""
        # Whatever the last test left in the API is not this test's to see.
        assert url or self.site is None or self.site.reset_done, \
            "set the test's data with site.reset(...) before opening the page"
        self.browser.blank = False
        self.browser.driver.get((url or self.url) + "/")
        self.wait("the first load of the list", lambda: self.js(LIST_SETTLED))
        return self

    def reload(self) -> None:
        """A reload; what the page logged so far is checked first (it goes with the document)."""
        self.browser.reload(self.browser.phase, tuple(self.allowed_errors))
        self.wait_ready()

    def wait_ready(self, timeout: float = 10) -> None:
        self.wait("the list to finish loading", lambda: self.js(LIST_READY), timeout)

    # ---- reading

    def js(self, script: str, *args: Any) -> Any:
        return self.browser.js(script, *args)

    def wait(self, what: str, condition: Callable[[], Any], timeout: float = 10) -> Any:
        return self.browser.wait(what, condition, timeout)

    def by_id(self, element_id: str) -> WebElement:
        return self.browser.by_id(element_id)

    def texts(self) -> list[str]:
        return self.js("return Array.from(document.querySelectorAll('#items .item-text'), (n) => n.textContent);")

    def ids(self) -> list[int]:
        return self.js("return Array.from(document.querySelectorAll('#items .item'), (n) => Number(n.dataset.id));")

    def top(self) -> str | None:
        """The newest row's text (None without rows)."""
        return self.js("const t = document.querySelector('#items .item-text'); return t ? t.textContent : null;")

    def row(self, text: str) -> WebElement | None:
        """The row showing exactly `text`, or None."""
        return self.js(
            "return Array.from(document.querySelectorAll('#items .item'))"
            ".find((li) => li.querySelector('.item-text').textContent === arguments[0]) || null;", text)

    def wait_for_top(self, text: str, timeout: float = 10) -> None:
        self.wait(f"{text[:40]!r} at the top of the list", lambda: self.top() == text, timeout)

    def wait_for_row(self, text: str, timeout: float = 10) -> WebElement:
        return self.wait(f"a row {text[:40]!r}", lambda: self.row(text), timeout)

    def wait_for_text(self, element_id: str, fragment: str, timeout: float = 10) -> str:
        """Waits until #element_id shows `fragment`; returns its whole text."""
        def shows() -> str | None:
            text = self.text_of(element_id)
            return text if fragment in text else None
        return self.wait(f"{fragment!r} in #{element_id}", shows, timeout)

    @property
    def title(self) -> str:
        return self.browser.driver.title

    def focus(self) -> str:
        """The id of the focused element ('' when it has none)."""
        return self.browser.active_id()

    def focused_label(self) -> str | None:
        return self.js("return document.activeElement.getAttribute('aria-label');")

    def focused_text(self) -> str:
        return self.js("return document.activeElement.textContent;")

    def text_of(self, element_id: str) -> str:
        return self.by_id(element_id).text

    def shown(self, element_id: str) -> bool:
        """Whether #element_id is rendered (not hidden, nor inside something hidden)."""
        return self.js("const e = document.getElementById(arguments[0]); return e !== null && e.checkVisibility();", element_id)

    def toast(self) -> str | None:
        return self.text_of("toast") if self.shown("toast") else None

    def field_value(self) -> str:
        return self.field.get_attribute("value")

    @property
    def field(self) -> WebElement:
        return self.by_id("item-text")

    @property
    def load_more(self) -> WebElement:
        return self.by_id("load-more")

    def wait_for_stream(self) -> None:
        """Waits until the page's change stream is open (its `ready` event has come)."""
        self.wait("the change stream", lambda: self.js("return window.__webtestStreamsReady;") > 0)

    def list_reads(self, status: int | None = None) -> int:
        """How many reads of the list's first page this document made (with that status)."""
        return self.js(
            "return performance.getEntriesByType('resource').filter((e) => e.name.includes('/api/items?limit=')"
            " && (arguments[0] === null || e.responseStatus === arguments[0])).length;", status)

    # ---- acting

    def type(self, text: str) -> None:
        self.field.send_keys(text)

    def add(self, text: str) -> None:
        """Types `text` into the field and presses Enter."""
        self.field.send_keys(text, Keys.ENTER)

    def add_and_wait(self, text: str) -> None:
        self.add(text)
        self.wait_for_top(text)

    def set_field(self, text: str) -> WebElement:
        """Puts `text` into the field at once, as a paste would (typing thousands of characters
        takes seconds); returns the character counter."""
        return self.js("const f = document.getElementById('item-text'); f.value = arguments[0];"
                       " f.dispatchEvent(new Event('input')); return document.getElementById('char-count');", text)

    def press(self, *keys: str) -> None:
        """Keys sent to whatever has focus."""
        self.browser.driver.switch_to.active_element.send_keys(*keys)

    def focused(self) -> WebElement:
        return self.browser.driver.switch_to.active_element

    def click_in_row(self, text: str, selector: str) -> WebElement:
        """Clicks `selector` (.item-edit, .item-delete, .item-more) in the row showing `text`;
        returns the row."""
        row = self.row(text)
        assert row is not None, f"no row {text!r}"
        row.find_element(By.CSS_SELECTOR, selector).click()
        return row

    def delete(self, text: str) -> WebElement:
        """Clicks Delete on the row showing `text` and waits until the row has gone."""
        row = self.click_in_row(text, ".item-delete")
        self.wait(f"the row {text!r} to go", lambda: self.row(text) is None)
        return row

    def load_all(self, on_page: Callable[[float], None] | None = None) -> None:
        """Presses "Load more" until it goes; `on_page` gets each page's time in seconds."""
        more = self.load_more
        rows_and_more = ("return [document.querySelectorAll('#items .item').length,"
                         " document.getElementById('load-more').checkVisibility()];")
        rows, offered = self.js(rows_and_more)
        while offered:
            started, before = time.monotonic(), rows

            def next_page() -> list | None:
                now = self.js(rows_and_more)
                return now if now[0] > before or not now[1] else None

            more.send_keys(Keys.ENTER)
            rows, offered = self.wait("the next page", next_page)
            if on_page:
                on_page(time.monotonic() - started)

    def allow_errors(self, *patterns: str) -> None:
        """Console errors matching these are ones the test provokes: not counted against it."""
        self.allowed_errors += patterns

    def collect(self, *allowed: str) -> int:
        """Checks in what the page logged so far (see Browser.collect); returns how many console
        errors matched `allowed`."""
        return self.browser.collect(self.browser.phase, tuple(self.allowed_errors) + allowed)

    def audit(self, axe_script: str | None) -> list[str] | None:
        return self.browser.audit(axe_script)

    def screenshot(self, name: str) -> None:
        self.browser.screenshot(name)
