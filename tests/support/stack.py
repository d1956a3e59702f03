"""The Compose stack under test: its variants, the images, and bringing it up."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from support.compose import ComposeProject, inspect


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


def up(project: ComposeProject, variant: StackVariant | None = None, log: str = "up.log", **env: str) -> None:
    files = variant.files if variant else ("compose.yaml",)
    scale = ["--scale", f"api={variant.api_replicas}"] if variant else []
    project.files = files
    project("up", "-d", "--wait", "--wait-timeout", "180", "--remove-orphans", *scale, log=log, env=env)
