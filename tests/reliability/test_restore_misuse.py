"""`items-api restore` given backups the service could not serve: refused before anything is
touched, so the live database stays byte for byte as it was."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess

import pytest

from support.processes import base_environment, sqlite_api_with_rows

BAD_BACKUPS = {
    "no AUTOINCREMENT": "CREATE TABLE items (id INTEGER PRIMARY KEY, text TEXT NOT NULL, created_at TEXT NOT NULL)",
    "text ids": "CREATE TABLE items (id TEXT PRIMARY KEY, text TEXT NOT NULL, created_at TEXT NOT NULL)",
    "an extra NOT NULL column": "CREATE TABLE items (id INTEGER PRIMARY KEY AUTOINCREMENT, text TEXT NOT NULL, "
                                "created_at TEXT NOT NULL, owner TEXT NOT NULL)",
    "a trigger": "CREATE TABLE items (id INTEGER PRIMARY KEY AUTOINCREMENT, text TEXT NOT NULL, created_at TEXT "
                 "NOT NULL); CREATE TRIGGER purge AFTER INSERT ON items BEGIN DELETE FROM items; END;",
    "not a database": None,
}


@pytest.fixture(scope="module")
def live(release_binary, scratch, artifacts):
    path = scratch / "live.db"
    sqlite_api_with_rows(release_binary, path, artifacts / "logs" / "restore-misuse-api.log", [("keep me", "now")])
    return path


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("case", BAD_BACKUPS)
def test_a_backup_the_service_could_not_serve_is_refused_and_changes_nothing(case, live, release_binary, scratch,
                                                                             figure):
    backup = scratch / f"bad-{len(case)}-{abs(hash(case))}.db"
    if BAD_BACKUPS[case] is None:
        backup.write_bytes(b"definitely not sqlite")
    else:
        with sqlite3.connect(backup) as conn:
            conn.executescript(BAD_BACKUPS[case])
    before = digest(live)
    done = subprocess.run([str(release_binary), "restore", str(backup)], capture_output=True, text=True,
                          env={**base_environment(), "DB_PATH": str(live)}, timeout=60)
    figure(f"restore misuse: {case}", f"exit {done.returncode}, live database "
           f"{'unchanged' if digest(live) == before else 'CHANGED'}")
    assert (done.returncode, digest(live)) == (1, before), done.stderr
