"""Child processes that tests start: logged to files, and always stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from support import http
from support.net import free_port, wait_until


def base_environment() -> dict[str, str]:
    """The few variables a child needs; nothing else leaks in from the developer's shell."""
    keep = ("PATH", "HOME", "LANG", "TMPDIR", "TZ")
    return {name: os.environ[name] for name in keep if name in os.environ}


class Service:
    """A long-running child process; stdout and stderr go to files (appended across restarts)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        stdout: Path,
        stderr: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.stdout_path = stdout
        self.stderr_path = stderr or stdout
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.stop_signal = stop_signal
        self.process: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        assert not self.running, f"{self.name} is already running (pid {self.process.pid})"
        self.stdout_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as files:
            out = files.enter_context(open(self.stdout_path, "ab"))
            err = files.enter_context(open(self.stderr_path, "ab")) if self.stderr_path != self.stdout_path else subprocess.STDOUT
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )

    def stop(self, grace: float = 10.0) -> int | None:
        """Stops the process with its stop signal, then SIGKILL after `grace` seconds."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def log_tail(self, lines: int = 30) -> str:
        text = ""
        for path in dict.fromkeys([self.stdout_path, self.stderr_path]):
            if path.exists():
                text += "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:])
        return text


def api_backends() -> list[str]:
    """The storage backends the API tests run against (TEST_BACKENDS narrows them, e.g. to
    `sqlite` on a machine without PostgreSQL)."""
    return [name.strip() for name in os.environ.get("TEST_BACKENDS", "sqlite,postgres").split(",")
            if name.strip()]


@dataclass
class Database:
    """Where an API process keeps its data: the settings that select and locate the backend."""

    backend: str
    settings: dict[str, str] = field(default_factory=dict)


class ApiProcess(Service):
    """The items-api binary on a fixed loopback port, restartable on the same port and data."""

    def __init__(self, binary: Path, port: int, database: Database, log: Path, **settings: str) -> None:
        env = base_environment()
        env.update(BIND_ADDR=f"127.0.0.1:{port}", APP_ENV="development", LOG_FORMAT="json", RUST_LOG="info")
        env.update(database.settings)
        env.update(settings)
        super().__init__("items-api", [str(binary)], stdout=log, env=env)
        self.port = port
        self.database = database
        self.url = f"http://127.0.0.1:{port}"

    def start(self, timeout: float = 30.0) -> None:
        super().start()

        def healthy() -> bool:
            if not self.running:
                raise RuntimeError(f"items-api exited during start-up:\n{self.log_tail()}")
            return http.request(self.url + "/api/healthz", timeout=2).status == 200

        wait_until("items-api to answer /api/healthz", healthy, timeout=timeout)


def sqlite_api_with_rows(binary: Path, path: Path, log: Path, rows: Iterable[tuple[str, str]]) -> ApiProcess:
    """An API on the SQLite file `path` (stopped): the service created the file, with its schema,
    and `rows` (text, created_at) were then written into it directly, faster than through HTTP."""
    api = ApiProcess(binary, free_port(), Database("sqlite", {"DB_PATH": str(path)}), log)
    api.start()
    api.stop()
    with sqlite3.connect(path) as conn:
        conn.executemany("INSERT INTO items (text, created_at) VALUES (?, ?)", rows)
    return api


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident memory so far (VmHWM), in MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for pid {pid}")
