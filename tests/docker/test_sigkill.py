"""SIGKILL of the API container under a bounded write load through the web tier: every write
that was acknowledged with 201 is still there after the restart."""

from __future__ import annotations

import threading
import time

import pytest

from support import http
from support.compose import docker, inspect
from support.net import wait_until
from support.stack import SQLITE, all_ids, up

WRITERS = 4
# An upper bound: the writers stop earlier, once the restarted API has acknowledged AFTER_RESTART.
WRITES_PER_WRITER = 1000
KILL_AFTER_ACKNOWLEDGED = 60
AFTER_RESTART = 20
# A refused write waits this long before the next, so the outage does not use up the budget.
BACKOFF_SECONDS = 0.1


@pytest.fixture(scope="module", params=[SQLITE], ids=["sqlite-1-replica"])
def stack(request, project, built_images):
    up(project, request.param)
    return project


@pytest.fixture(scope="module")
def killed_under_load(stack, figure):
    acknowledged: list[int] = []
    refused: list[int] = []
    lock = threading.Lock()
    at_kill: list[int] = []  # set once the kill has been sent

    def enough() -> bool:
        """The restarted API has acknowledged AFTER_RESTART writes."""
        with lock:
            return bool(at_kill) and len(acknowledged) >= at_kill[0] + AFTER_RESTART

    def writer(number: int) -> None:
        for n in range(1, WRITES_PER_WRITER + 1):
            if enough():
                return
            try:
                response = http.request(stack.web_url + "/api/items", "POST",
                                        json_body={"text": f"load {number}-{n}"}, timeout=10)
                status, item = response.status, response.json_or_none()
            except OSError:
                status, item = 0, None
            with lock:
                if status == 201 and isinstance(item, dict):
                    acknowledged.append(item["id"])
                else:
                    refused.append(status)
            if status != 201:
                time.sleep(BACKOFF_SECONDS)

    threads = [threading.Thread(target=writer, args=(n,), daemon=True) for n in range(1, WRITERS + 1)]
    for thread in threads:
        thread.start()
    wait_until(f"{KILL_AFTER_ACKNOWLEDGED} acknowledged writes", lambda: len(acknowledged) >= KILL_AFTER_ACKNOWLEDGED,
               timeout=60, interval=0.05)
    container = stack.container("api")
    docker("kill", "-s", "KILL", container)
    with lock:
        at_kill.append(len(acknowledged))
    time.sleep(3)
    # `docker kill` counts as a manual stop for the restart policy: start it again if needed.
    if not inspect("container", container)["State"]["Running"]:
        stack("start", "api", log="sigkill.log")
    stack.wait_healthy("api")
    for thread in threads:
        # Bounded: at most WRITES_PER_WRITER requests of at most 10 s each, and it stops far sooner.
        thread.join(WRITES_PER_WRITER * 10)
    figure("sigkill acknowledged writes", len(acknowledged))
    figure("sigkill writes refused while down", len(refused))
    return {"at_kill": at_kill[0], "acknowledged": set(acknowledged),
            "writers_done": not any(thread.is_alive() for thread in threads), "stored": all_ids(stack.web_url)}


def test_the_kill_came_while_the_writers_were_running(killed_under_load):
    assert killed_under_load["at_kill"] >= KILL_AFTER_ACKNOWLEDGED


def test_writes_were_acknowledged_after_the_restart_so_the_load_spanned_the_kill(killed_under_load):
    assert len(killed_under_load["acknowledged"]) > killed_under_load["at_kill"]


def test_every_writer_finished(killed_under_load):
    assert killed_under_load["writers_done"]


def test_no_acknowledged_write_is_lost_after_sigkill(killed_under_load):
    assert killed_under_load["acknowledged"] - killed_under_load["stored"] == set()
