"""The Compose stack under test: its variants, the images, and data helpers through the web tier."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest

from support import http
from support.compose import ComposeProject, inspect
from support.net import wait_until


@dataclass(frozen=True)
class BuildInfo:
    """What the test images carry; /api/health and the labels must show exactly these."""

    version: str
    date: str
    vcs_ref: str


@dataclass(frozen=True)
class StackVariant:
    """One way to run the stack: the storage backend and how many API replicas (SQLite allows
    one writer; Postgres, several)."""

    backend: str
    api_replicas: int
    files: tuple[str, ...]


SQLITE = StackVariant("sqlite", 1, ("compose.yaml",))
POSTGRES = StackVariant("postgres", 3, ("compose.yaml", "compose.postgres.yaml"))
STACK_VARIANTS = [pytest.param(SQLITE, id="sqlite-1-replica"), pytest.param(POSTGRES, id="postgres-3-replicas")]


class Images:
    """The two images, built once per run (and again from the cache if a test removed them)."""

    def __init__(self, project: ComposeProject) -> None:
        self.project = project
        self.builds: dict[str, object] = {}

    def build(self, label: str, service: str, log: str):
        done = self.project("--progress", "plain", "build", service, log=log, check=False)
        self.builds[label] = done
        return done

    def present(self) -> bool:
        return all(inspect("image", self.project.image(s)) is not None for s in ("api", "web"))

    def ensure(self) -> None:
        if not self.present():
            self.project("build", "api", "web", log="build-again.log")


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


def up(project: ComposeProject, variant: StackVariant | None = None, log: str = "up.log", **env: str) -> None:
    files = variant.files if variant else ("compose.yaml",)
    scale = ["--scale", f"api={variant.api_replicas}"] if variant else []
    project.files = files
    project("up", "-d", "--wait", "--wait-timeout", "180", "--remove-orphans", *scale, log=log, env=env)


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

    def wait_for(self, acknowledged: int, timeout: float = 120) -> None:
        """Until `acknowledged` more writes than now have been acknowledged."""
        target = self.count() + acknowledged
        wait_until(f"{target} acknowledged writes", lambda: self.count() >= target, timeout=timeout,
                   interval=0.05)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    @property
    def failed(self) -> dict[int, int]:
        """Every status other than 201, with its count."""
        with self._lock:
            return {status: count for status, count in self.statuses.items() if status != 201}
