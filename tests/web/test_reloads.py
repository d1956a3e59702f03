"""nginx reloads with change streams open: the image reloads whenever the set of ready API replicas
changes, and each old worker generation lives while it holds connections. `worker_shutdown_timeout`
(web/nginx.conf) bounds that: after 20 reloads with streams held open on every generation, the
old workers are gone within the timeout, memory comes back down, and every stream that was cut
reconnects with Last-Event-ID and misses no event."""

from __future__ import annotations

import http.client
import os
import re
import signal
import time
from pathlib import Path

import pytest
import yaml

from support import http as plain_http
from support.events import Stream

RELOADS = 20
RELOAD_INTERVAL_S = 0.5


def shutdown_timeout_s(repo: Path) -> float:
    found = re.search(r"^worker_shutdown_timeout\s+(\d+)s;", (repo / "web" / "nginx.conf").read_text(), re.M)
    assert found, "web/nginx.conf sets no worker_shutdown_timeout (in seconds)"
    return float(found.group(1))


def proportional_kib(pid: int) -> int:
    """A process's share of the memory it uses (PSS, in KiB): pages shared with the master and the
    other workers count once in all, as the container's memory limit counts them."""
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    return int(re.search(r"^Pss:\s+(\d+) kB", rollup, re.M).group(1))


def workers(master: int) -> dict[int, int]:
    """The master's worker processes and the memory of each (PSS, KiB)."""
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            status = Path(entry.path, "status").read_text()
            if re.search(r"^PPid:\s+(\d+)$", status, re.M).group(1) == str(master):
                found[int(entry.name)] = proportional_kib(int(entry.name))
        except (OSError, AttributeError):
            continue
    return found


def web_memory_limit_mib(repo: Path) -> float:
    """The web container's memory limit in compose.yaml."""
    compose = yaml.safe_load((repo / "compose.yaml").read_text())
    limit = compose["services"]["web"]["deploy"]["resources"]["limits"]["memory"]
    assert limit.endswith("M"), limit
    return float(limit[:-1])


@pytest.fixture(scope="module")
def api(make_api):
    process = make_api(EVENT_HEARTBEAT_SECS="1")
    process.start()
    return process


def post(web, text: str) -> int:
    created = plain_http.request(web.url + "/api/items", "POST", json_body={"text": text})
    assert created.status == 201
    return created.json()["id"]


def read_until(stream: Stream, web, wanted: int, deadline: float) -> tuple[Stream, list[int], int]:
    """Reads `stream` until the `created` event of item `wanted`, reconnecting with Last-Event-ID
    whenever the server ends it; the stream in use at the end, the ids created on the way, and
    how many times it reconnected."""
    seen: list[int] = []
    reconnects = 0
    while time.monotonic() < deadline:
        try:
            event = stream.next_event()
        except (EOFError, http.client.IncompleteRead, ConnectionError):
            stream.close()
            stream = Stream(web.url, last_event_id=stream.last_event_id)
            reconnects += 1
            continue
        if event["name"] == "created":
            seen.append(event["data"]["item"]["id"])
            if seen[-1] == wanted:
                return stream, seen, reconnects
        assert event["name"] != "reset", "a reconnect within the feed's memory must resume, not reset"
    raise AssertionError(f"item {wanted} never arrived; saw {seen}")


@pytest.fixture(scope="module")
def reloaded(web, api, repo, figure):
    timeout = shutdown_timeout_s(repo)
    master = web.process.pid
    baseline = workers(master)
    streams = []
    for _ in range(4):
        stream = Stream(web.url)
        assert stream.next_event()["name"] == "ready"
        streams.append(stream)
    peak_workers, peak_rss = len(baseline), sum(baseline.values())
    during = None
    for reload in range(1, RELOADS + 1):
        os.kill(master, signal.SIGHUP)
        time.sleep(RELOAD_INTERVAL_S)
        # A page opened now holds a stream on the new generation.
        stream = Stream(web.url)
        assert stream.next_event()["name"] == "ready"
        streams.append(stream)
        if reload == RELOADS // 2:
            during = post(web, "created while nginx reloads")
        now = workers(master)
        peak_workers, peak_rss = max(peak_workers, len(now)), max(peak_rss, sum(now.values()))
    # Bounded however long the configured timeout is: a longer one fails the test anyway.
    settled_at = time.monotonic() + min(timeout, 30) + 2
    while time.monotonic() < settled_at and len(workers(master)) > len(baseline):
        time.sleep(0.2)
    after = workers(master)
    last = post(web, "created after the reloads")
    deadline = time.monotonic() + 30
    results = [read_until(stream, web, last, deadline) for stream in streams]
    for stream, _, _ in results:
        stream.close()
    figure("nginx reloads with streams open: peak workers", peak_workers)
    figure("nginx reloads with streams open: peak memory of the master and workers (PSS, MiB)",
           round((peak_rss + proportional_kib(master)) / 1024, 1))
    figure("nginx reloads with streams open: workers after the timeout", len(after))
    return {"baseline": baseline, "after": after, "peak_workers": peak_workers,
            "peak_mib": (peak_rss + proportional_kib(master)) / 1024,
            "limit_mib": web_memory_limit_mib(repo),
            "timeout": timeout, "during": during, "last": last, "opened_before": 4 + RELOADS // 2,
            "results": results}


def test_old_worker_generations_end_within_the_shutdown_timeout(reloaded):
    # Every client still holds (or has reopened) its stream: only the timeout ends old workers.
    assert len(reloaded["after"]) == len(reloaded["baseline"])


def test_workers_alive_at_once_stay_within_what_the_timeout_allows(reloaded):
    generations = 1 + int(reloaded["timeout"] / RELOAD_INTERVAL_S) + 1
    assert reloaded["peak_workers"] <= generations * len(reloaded["baseline"])


def test_worker_memory_stays_well_inside_the_containers_limit_and_comes_back_down(reloaded):
    assert reloaded["peak_mib"] < reloaded["limit_mib"] / 2
    assert sum(reloaded["after"].values()) <= 2 * sum(reloaded["baseline"].values())


def test_every_cut_stream_reconnected_and_missed_no_event(reloaded):
    results = reloaded["results"]
    # All but the newest generation's stream were on workers that have since ended.
    assert sum(1 for _, _, reconnects in results if reconnects) >= len(results) - 1
    for index, (_, seen, _) in enumerate(results):
        if index < reloaded["opened_before"]:
            assert reloaded["during"] in seen, f"stream {index} missed the item created during the reloads"
        assert seen[-1] == reloaded["last"]
