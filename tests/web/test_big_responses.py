"""A big list through nginx to a slow client: it arrives whole, and nginx never spools it to a
temporary file (a full temp directory could otherwise cut a 200 short)."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

from support.processes import sqlite_api_with_rows

ITEMS = 60_000


@pytest.fixture(scope="module")
def big_list_api(release_binary, scratch, artifacts):
    rows = ((f"item {n} " + "x" * 80, "2026-01-02T03:04:05.123456+00:00") for n in range(ITEMS))
    api = sqlite_api_with_rows(release_binary, scratch / "big-web.db", artifacts / "logs" / "big-responses-api.log",
                               rows)
    api.start()
    try:
        yield api
    finally:
        api.stop()


def open_proxy_temp_files(master_pid: int) -> int:
    """Temporary files nginx's processes hold open. nginx unlinks them at once, so they show only
    among the processes' open files."""
    pids = [master_pid] + [int(pid) for pid in
                           open(f"/proc/{master_pid}/task/{master_pid}/children").read().split()]
    count = 0
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        for fd in fd_dir.iterdir() if fd_dir.exists() else []:
            try:
                count += "proxy" in os.readlink(fd)
            except OSError:
                pass
    return count


@pytest.fixture(scope="module")
def slow_read(make_nginx, big_list_api):
    nginx = make_nginx(big_list_api.url)
    nginx.start()
    with socket.create_connection(("127.0.0.1", nginx.port), timeout=30) as client:
        client.sendall(b"GET /api/items HTTP/1.0\r\nHost: x\r\n\r\n")
        received = bytearray()
        temp_files_seen = 0
        while True:
            # Slower than the API writes: nginx's buffers fill up while this client reads.
            time.sleep(0.005)
            chunk = client.recv(16384)
            if not chunk:
                break
            received += chunk
            temp_files_seen = max(temp_files_seen, open_proxy_temp_files(nginx.process.pid))
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    return {"head": head.decode(errors="replace"), "body": body, "temp_files": temp_files_seen}


def test_a_big_list_to_a_slow_client_arrives_whole(slow_read):
    assert slow_read["head"].startswith("HTTP/1.1 200") and len(json.loads(slow_read["body"])) == ITEMS


def test_nginx_never_spools_a_response_to_a_temporary_file(slow_read):
    assert slow_read["temp_files"] == 0
