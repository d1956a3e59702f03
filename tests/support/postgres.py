"""A throwaway PostgreSQL cluster: initdb in a temporary directory, one free loopback port.

Debian's PostgreSQL 15 (`apt-get install postgresql`). The server refuses to run as root, so as
root every server command runs as the `postgres` user. fsync is off: nothing here must survive
a power cut, and it makes creating databases fast.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from support.net import free_port

PG_BIN_DIRS = ("/usr/lib/postgresql/*/bin",)
INSTALL = "apt-get install postgresql"


class PostgresCluster:
    def __init__(self, initdb: str, pg_ctl: str, psql: str) -> None:
        self.initdb = initdb
        self.pg_ctl = pg_ctl
        self.psql_bin = psql
        self.user = "postgres"
        self.host = "127.0.0.1"
        self.port = 0
        self._names = itertools.count(1)
        self._run_as: list[str] = []
        self.root = Path(tempfile.mkdtemp(prefix="items-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"

    def _server_command(self, argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(self._run_as + argv, capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self._run_as = ["runuser", "-u", "postgres", "--"]
        done = self._server_command(
            [self.initdb, "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8",
             "--locale=C.UTF-8", "--no-sync"]
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{done.stdout}{done.stderr}")
        # A port taken between free_port() and the server's bind: try another one.
        for _attempt in range(3):
            self.port = free_port()
            options = (
                f"-p {self.port} -c listen_addresses={self.host} -k {self.root} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            done = self._server_command(
                [self.pg_ctl, "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start"]
            )
            if done.returncode == 0:
                return
        raise RuntimeError(f"pg_ctl start failed:\n{done.stdout}{done.stderr}\n{self.server_log()}")

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._server_command([self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop"])
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def server_log(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def url(self, database: str = "postgres") -> str:
        return f"postgres://{self.user}@{self.host}:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Runs SQL with psql over TCP; returns the unaligned, tuples-only output."""
        done = subprocess.run(
            [self.psql_bin, "-X", "-v", "ON_ERROR_STOP=1", "-At", "-d", self.url(database), "-c", sql],
            capture_output=True, text=True, timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def create_database(self) -> str:
        """A new, empty database; returns its URL."""
        name = f"items_test_{next(self._names)}"
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name)
