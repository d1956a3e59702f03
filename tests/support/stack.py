"""The Compose stack under test: its variants, the images, and data helpers through the web tier."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from support import http
from support.compose import ComposeProject, inspect


@dataclass(frozen=True)
class BuildInfo:
    """What the test images carry; /api/health and the labels must show exactly these."""

    version: str
    date: str
    vcs_ref: str


@dataclass(frozen=True)
class StackVariant:
    """One way to run the stack: the storage backend and how many API replicas. Only SQLite
    with one replica exists today (SQLite allows one writer); a Postgres variant adds its files."""

    backend: str
    api_replicas: int
    files: tuple[str, ...]


STACK_VARIANTS = [pytest.param(StackVariant("sqlite", 1, ("compose.yaml",)), id="sqlite-1-replica")]


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
    project("up", "-d", "--wait", "--wait-timeout", "180", *scale, files=files, log=log, env=env)
