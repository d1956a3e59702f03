"""Docker and Docker Compose for the tests: one project with a unique name, always torn down."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Sequence

from support.net import wait_until


class CommandFailed(AssertionError):
    pass


def run(argv: Sequence[str], log: Path | None = None, env: dict[str, str] | None = None,
        cwd: Path | None = None, timeout: float = 1200, check: bool = True,
        input: str | None = None) -> subprocess.CompletedProcess:
    """Runs a command; its output goes to `log` (appended) or is captured. A failure raises with
    the tail of the output."""
    started = time.monotonic()
    done = subprocess.run(
        list(argv), cwd=cwd, env=env, input=input, capture_output=True, text=True, timeout=timeout,
    )
    done.seconds = time.monotonic() - started  # type: ignore[attr-defined]
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as out:
            out.write(f"$ {' '.join(argv)}\n{done.stdout}{done.stderr}\n")
    if check and done.returncode != 0:
        tail = "".join((done.stdout + done.stderr).splitlines(keepends=True)[-40:])
        raise CommandFailed(f"{' '.join(argv)} exited {done.returncode}:\n{tail}")
    return done


def docker(*args: str, **kwargs: Any) -> subprocess.CompletedProcess:
    return run(["docker", *args], **kwargs)


def inspect(kind: str, name: str) -> Any:
    """`docker <kind> inspect` of one object, as parsed JSON (None when it does not exist)."""
    done = docker(kind, "inspect", name, check=False)
    if done.returncode != 0:
        return None
    return json.loads(done.stdout)[0]


class ComposeProject:
    """`docker compose -p <name>` in the repository, with the environment the stack should see."""

    def __init__(self, name: str, root: Path, logs: Path, env: dict[str, str], web_url: str = "",
                 overrides: Sequence[str] = ()) -> None:
        self.name = name
        # Layered after the stack's own files in every command.
        self.overrides = tuple(overrides)
        self.web_url = web_url  # where the stack's web tier is published
        self.root = root
        self.logs = logs
        self.env = env
        self.file_sets: set[tuple[str, ...]] = set()
        # The Compose files of the stack that runs now (`up` sets them).
        self.files: tuple[str, ...] = ("compose.yaml",)

    def __call__(self, *args: str, files: Sequence[str] | None = None, log: str = "compose.log",
                 env: dict[str, str] | None = None, check: bool = True,
                 timeout: float = 1200) -> subprocess.CompletedProcess:
        """`docker compose` with `files`, by default those the stack was last started with."""
        files = tuple(files or self.files)
        self.file_sets.add(files)
        # --env-file /dev/null: a developer's .env must not change what is tested.
        argv = ["docker", "compose", "--env-file", "/dev/null", "-p", self.name]
        for file in (*files, *self.overrides):
            argv += ["-f", file]
        return run([*argv, *args], log=self.logs / log, env={**self.env, **(env or {})}, cwd=self.root,
                   check=check, timeout=timeout)

    def containers(self, service: str, *flags: str) -> list[str]:
        """The ids of the service's running containers (with `-a`, stopped ones too)."""
        return self("ps", "-q", *flags, service, files=self.files).stdout.split()

    def container(self, service: str) -> str:
        """The id of the service's (first) container ('' when there is none)."""
        found = self.containers(service)
        return found[0] if found else ""

    def health(self, service: str) -> str:
        container = self.container(service)
        state = inspect("container", container) if container else None
        return ((state or {}).get("State", {}).get("Health") or {}).get("Status", "")

    def wait_healthy(self, service: str, timeout: float = 90) -> None:
        wait_until(f"{service} to be healthy", lambda: self.health(service) == "healthy", timeout=timeout,
                   interval=1)

    def image(self, service: str) -> str:
        """The image name Compose gives a built service."""
        return f"{self.name}-{service}"

    def down(self) -> None:
        """Everything the project made, for every file combination it was started with."""
        for files in sorted(self.file_sets) or [("compose.yaml",)]:
            self("down", "--volumes", "--remove-orphans", "--timeout", "5", files=files, check=False,
                 log="teardown.log")

    def save_logs(self) -> None:
        for files in sorted(self.file_sets):
            self("logs", "--no-color", "--timestamps", files=files, check=False, log="containers.log")


def docker_environment() -> dict[str, str]:
    """The caller's environment minus the variables the Compose files read, so a developer's
    shell (or .env) cannot change what is tested."""
    compose_variables = {"REGISTRY", "IMAGE_TAG", "API_PORT", "RUST_LOG", "WEB_BIND", "WEB_PORT",
                         "BUILD_VERSION", "BUILD_DATE", "VCS_REF", "COMPOSE_PROJECT_NAME", "COMPOSE_FILE",
                         "API_REPLICAS", "API_POOL_SIZE", "PG_BACKUP_DIR", "PG_BACKUP_KEEP",
                         "PROMETHEUS_PORT", "PROMETHEUS_RETENTION"}
    return {name: value for name, value in os.environ.items() if name not in compose_variables}
