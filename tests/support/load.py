"""Data through the API's HTTP interface, for the tests that load it: every id (page by page), one
added item, and a bounded write load that keeps what was acknowledged."""

from __future__ import annotations

import threading
import time

from support import http
from support.net import wait_until


def all_ids(web_url: str) -> set[int]:
    """Every item id in the database, through the web tier (keyset pages of 1000)."""
    found: set[int] = set()
    before = ""
    while True:
        page = http.request(f"{web_url}/api/items?limit=1000{before}", timeout=10).json()
        found.update(item["id"] for item in page)
        if len(page) < 1000:
            return found
        before = f"&before={page[-1]['id']}"


def add_item(web_url: str, text: str) -> int:
    response = http.request(web_url + "/api/items", "POST", json_body={"text": text}, timeout=10)
    assert response.status == 201, f"POST /api/items: {response.status} {response.text}"
    return response.json()["id"]


class WriteLoad:
    """Writers POSTing through the web tier until stopped (each at most `limit` writes), keeping
    every status, the acknowledged ids, and any error body that is not JSON."""

    def __init__(self, web_url: str, writers: int, limit: int = 5000, backoff: float = 0.05) -> None:
        self.web_url = web_url
        self.limit = limit
        self.backoff = backoff
        self.acknowledged: list[int] = []
        self.statuses: dict[int, int] = {}
        self.not_json: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._write, args=(n,), daemon=True) for n in range(writers)]

    def __enter__(self) -> "WriteLoad":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _write(self, writer: int) -> None:
        for n in range(self.limit):
            if self._stop.is_set():
                return
            try:
                response = http.request(self.web_url + "/api/items", "POST",
                                        json_body={"text": f"load {writer}-{n}"}, timeout=15)
                status, body = response.status, response.json_or_none()
            except OSError:
                status, body = 0, None
            with self._lock:
                self.statuses[status] = self.statuses.get(status, 0) + 1
                if status == 201 and isinstance(body, dict):
                    self.acknowledged.append(body["id"])
                elif status != 0 and not (isinstance(body, dict) and "detail" in body):
                    self.not_json.append(f"{status}: {response.text[:200]}")
            if status != 201:
                time.sleep(self.backoff)

    def count(self, status: int | None = None) -> int:
        with self._lock:
            return len(self.acknowledged) if status is None else self.statuses.get(status, 0)

    def wait_for(self, acknowledged: int, timeout: float = 120, since: int | None = None) -> None:
        """Until `acknowledged` more writes have been acknowledged than now, or than the count
        `since` (one read earlier: the writes that were acknowledged meanwhile count)."""
        target = (self.count() if since is None else since) + acknowledged
        wait_until(f"{target} acknowledged writes", lambda: self.count() >= target, timeout=timeout,
                   interval=0.05)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    @property
    def finished(self) -> bool:
        """Every writer has returned (stopped, or used up its limit)."""
        return not any(thread.is_alive() for thread in self._threads)

    @property
    def failed(self) -> dict[int, int]:
        """Every status other than 201, with its count."""
        with self._lock:
            return {status: count for status, count in self.statuses.items() if status != 201}
