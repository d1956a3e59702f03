"""The change stream through nginx: events pass at once (nothing buffered), heartbeats pass, and
a stopping API ends the stream cleanly rather than leaving it hanging or cut mid-chunk."""

from __future__ import annotations

import http.client
import time

import pytest

from support import http as plain_http
from support.events import Stream

HEARTBEAT_SECS = 1


@pytest.fixture(scope="module")
def api(make_api):
    """This module's API, with heartbeats often enough to see within a test."""
    process = make_api(EVENT_HEARTBEAT_SECS=str(HEARTBEAT_SECS))
    process.start()
    return process


@pytest.fixture(scope="module")
def streamed(web, api):
    stream = Stream(web.url)
    seen = {"status": stream.response.status, "type": stream.response.getheader("Content-Type"),
            "cache": stream.response.getheader("Cache-Control"),
            "accel": stream.response.getheader("X-Accel-Buffering")}
    seen["first"] = stream.next_event()
    started = time.monotonic()
    created = plain_http.request(web.url + "/api/items", "POST", json_body={"text": "through nginx"})
    assert created.status == 201
    seen["created"] = stream.next_event()
    seen["created_s"] = time.monotonic() - started
    # Quiet for a while (a delete of nothing sends nothing): heartbeats only.
    before = stream.comments
    plain_http.request(web.url + "/api/items/999999", "DELETE")
    deadline = time.monotonic() + HEARTBEAT_SECS * 2.5
    while time.monotonic() < deadline:
        line = stream.response.readline()
        if line.startswith(b":"):
            stream.comments += 1
    seen["heartbeats"] = stream.comments - before
    stopped = time.monotonic()
    api.stop()
    try:
        seen["tail"] = stream.read_to_end()
        seen["ended_cleanly"] = True
    except http.client.IncompleteRead as error:
        seen["ended_cleanly"] = f"cut short: {error!r}"
    seen["ended_s"] = time.monotonic() - stopped
    stream.close()
    api.start()
    return seen


def test_the_stream_comes_through_nginx_as_an_event_stream(streamed):
    assert (streamed["status"], streamed["type"]) == (200, "text/event-stream")


def test_the_stream_is_not_cached(streamed):
    assert streamed["cache"] == "no-cache"


def test_it_starts_with_ready(streamed):
    assert streamed["first"] == {"name": "ready", "data": {"total": 0}}


def test_an_event_passes_nginx_at_once(streamed):
    assert streamed["created"]["name"] == "created"
    assert streamed["created"]["data"]["item"]["text"] == "through nginx"
    assert streamed["created_s"] < 1


def test_heartbeats_pass_nginx(streamed):
    assert streamed["heartbeats"] >= 1


def test_a_stopping_api_ends_the_stream_cleanly_and_at_once(streamed):
    assert streamed["ended_cleanly"] is True
    assert streamed["ended_s"] < 5
