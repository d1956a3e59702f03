"""SIGKILL of the API container under a bounded write load through the web tier: every write
that was acknowledged with 201 is still there after the restart."""

from __future__ import annotations

import time

import pytest

from support.compose import docker, inspect
from support.load import WriteLoad, all_ids
from support.stack import SQLITE, up

WRITERS = 4
# An upper bound: the writers are stopped earlier, once the restarted API has acknowledged
# AFTER_RESTART.
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
    with WriteLoad(stack.web_url, WRITERS, limit=WRITES_PER_WRITER, backoff=BACKOFF_SECONDS) as load:
        load.wait_for(KILL_AFTER_ACKNOWLEDGED, timeout=60)
        container = stack.container("api")
        docker("kill", "-s", "KILL", container)
        at_kill = load.count()
        time.sleep(3)
        # `docker kill` counts as a manual stop for the restart policy: start it again if needed.
        if not inspect("container", container)["State"]["Running"]:
            stack("start", "api", log="sigkill.log")
        stack.wait_healthy("api")
        # Counted from the kill: the writers may have acknowledged them (or even used up their
        # limit) while the health check caught up with the restarted API.
        load.wait_for(AFTER_RESTART, since=at_kill)
    figure("sigkill acknowledged writes", load.count())
    figure("sigkill writes refused while down", sum(load.failed.values()))
    return {"at_kill": at_kill, "acknowledged": set(load.acknowledged),
            "writers_done": load.finished, "stored": all_ids(stack.web_url)}


def test_the_kill_came_while_the_writers_were_running(killed_under_load):
    assert killed_under_load["at_kill"] >= KILL_AFTER_ACKNOWLEDGED


def test_writes_were_acknowledged_after_the_restart_so_the_load_spanned_the_kill(killed_under_load):
    assert len(killed_under_load["acknowledged"]) > killed_under_load["at_kill"]


def test_every_writer_finished(killed_under_load):
    assert killed_under_load["writers_done"]


def test_no_acknowledged_write_is_lost_after_sigkill(killed_under_load):
    assert killed_under_load["acknowledged"] - killed_under_load["stored"] == set()
