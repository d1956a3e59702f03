"""The whole list of 300,000 items (about 33 MB of JSON) requested by 200 clients at once: the
API streams it, so its memory stays far below the 256 MB the Compose file allows."""

from __future__ import annotations

import re
import sqlite3
import subprocess

import pytest

from support import http
from support.net import free_port
from support.processes import ApiProcess, Database, peak_rss_mb
from support.tools import require_tool

ITEMS = 300_000
CLIENTS = 200
LIMIT_MB = 256


@pytest.fixture(scope="module")
def loaded(release_binary, scratch, artifacts, figure):
    wrk = require_tool("wrk", "apt-get install wrk")
    database = scratch / "big.db"
    api = ApiProcess(release_binary, free_port(), Database("sqlite", {"DB_PATH": str(database)}),
                     artifacts / "logs" / "big-lists-api.log", RUST_LOG="warn")
    api.start()
    api.stop()
    with sqlite3.connect(database) as conn:
        conn.executemany("INSERT INTO items (text, created_at) VALUES (?, ?)",
                         ((f"item number {n} with some text in it", "2026-01-02T03:04:05.123456+00:00")
                          for n in range(ITEMS)))
    api.start()
    try:
        first = http.request(api.url + "/api/items", timeout=120)
        # 200 x 33 MB is 6.6 GB of JSON to write: long enough for each client to get it whole.
        done = subprocess.run([wrk, "-t2", f"-c{CLIENTS}", "-d45s", "--timeout", "60s", api.url + "/api/items"],
                              capture_output=True, text=True, timeout=180)
        peak = peak_rss_mb(api.process.pid)
        figure(f"{CLIENTS} clients x full list of {ITEMS} items: API peak RSS MB", f"{peak:.1f}")
        figure(f"{CLIENTS} clients x full list: wrk", " ".join(
            line.strip() for line in done.stdout.splitlines() if "requests in" in line or "Socket errors" in line))
        return {"first": first, "peak": peak, "wrk": done}
    finally:
        api.stop()


def test_the_whole_big_list_is_sent_complete(loaded):
    assert len(loaded["first"].json()) == ITEMS


def test_two_hundred_concurrent_full_lists_stay_within_the_memory_limit(loaded):
    assert loaded["peak"] < LIMIT_MB


def test_every_client_got_the_whole_list_at_least_once(loaded):
    done = re.search(r"(\d+) requests in", loaded["wrk"].stdout)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", loaded["wrk"].stdout)
    assert done and int(done.group(1)) >= CLIENTS and not errors, loaded["wrk"].stdout
