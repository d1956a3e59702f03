"""The database's disk running full (a small tmpfs): writes answer 507 JSON with Retry-After,
readiness says why, reads go on, and writes resume by themselves once space is freed, with
nothing acknowledged lost. Needs root (it mounts the tmpfs)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from support import http
from support.net import free_port, wait_until
from support.processes import ApiProcess, Database
from support.tools import require_tool, unavailable

TEXT = "x" * 2000


@pytest.fixture(scope="module")
def small_disk(scratch: Path):
    if os.geteuid() != 0:
        unavailable("mounting a tmpfs needs root", "run the suite as root (CI does)")
    mount = require_tool("mount", "apt-get install mount")
    path = Path(tempfile.mkdtemp(prefix="small-disk-", dir=scratch))
    subprocess.run([mount, "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture(scope="module")
def outcome(small_disk: Path, release_binary: Path, artifacts: Path, figure):
    api = ApiProcess(release_binary, free_port(), Database("sqlite", {"DB_PATH": str(small_disk / "app.db")}),
                     artifacts / "logs" / "disk-full-api.log", RUST_LOG="warn")
    api.start()
    try:
        filler = small_disk / "filler"
        free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
        filler.write_bytes(b"\0" * max(0, free - 300 * 1024))
        acknowledged, refusals = [], []
        for n in range(2000):
            response = http.request(api.url + "/api/items", "POST", json_body={"text": f"{TEXT} {n}"})
            if response.status == 201:
                acknowledged.append(response.json()["id"])
            else:
                refusals.append(response)
                break
        health = http.request(api.url + "/api/health")
        read = http.request(api.url + "/api/items?limit=5")
        filler.unlink()
        resumed = wait_until("a write after space was freed",
                             lambda: http.request(api.url + "/api/items", "POST",
                                                  json_body={"text": "after"}).status == 201, timeout=10)
        acknowledged.append(http.request(api.url + "/api/items?limit=1").json()[0]["id"])
        stored = {item["id"] for item in http.request(api.url + "/api/items").json()}
        figure("disk full: writes before the refusal", len(acknowledged) - 1)
        return {"refusal": refusals[0] if refusals else None, "health": health, "read": read,
                "resumed": resumed, "lost": set(acknowledged) - stored,
                "ready_again": http.request(api.url + "/api/health").status}
    finally:
        api.stop()


def test_a_write_on_a_full_disk_is_a_json_507_with_retry_after(outcome):
    refusal = outcome["refusal"]
    assert refusal is not None, "the disk never filled up"
    assert (refusal.status, refusal.json(), refusal.header("retry-after")) == (
        507, {"detail": "Insufficient Storage"}, "10")


def test_readiness_says_the_disk_is_full(outcome):
    health = outcome["health"]
    database = health.json()["database"]
    assert (health.status, database["writable"], "disk is full" in database["error"]) == (503, False, True)


def test_reads_go_on_while_the_disk_is_full(outcome):
    assert outcome["read"].status == 200


def test_writes_resume_by_themselves_once_space_is_freed(outcome):
    assert outcome["resumed"] and outcome["ready_again"] == 200


def test_a_full_disk_loses_no_acknowledged_write(outcome):
    assert outcome["lost"] == set()
