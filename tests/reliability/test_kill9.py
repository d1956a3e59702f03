"""SIGKILL of the API under write load, again and again: every write acknowledged with 201
before a kill is still there after the restarts."""

from __future__ import annotations

import signal
import threading

from support import http
from support.net import wait_until

CYCLES = 5
WRITERS = 6
# A kill comes after this many more acknowledged writes.
PER_CYCLE = 300


def all_ids(url: str) -> set[int]:
    return {item["id"] for item in http.request(url + "/api/items", timeout=30).json()}


def test_sigkill_cycles_under_write_load_lose_no_acknowledged_write(api, figure, api_database):
    acknowledged: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def write(writer: int) -> None:
        for n in range(100_000):
            if stop.is_set():
                return
            try:
                response = http.request(api.url + "/api/items", "POST",
                                        json_body={"text": f"kill {writer}-{n}"}, timeout=10)
            except OSError:
                stop.wait(0.02)
                continue
            if response.status == 201:
                with lock:
                    acknowledged.append(response.json()["id"])
            else:
                stop.wait(0.02)

    threads = [threading.Thread(target=write, args=(n,), daemon=True) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(CYCLES):
            target = len(acknowledged) + PER_CYCLE
            wait_until(f"{target} acknowledged writes", lambda: len(acknowledged) >= target, timeout=60,
                       interval=0.01)
            api.process.send_signal(signal.SIGKILL)
            api.process.wait(10)
            api.start()
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    lost = set(acknowledged) - all_ids(api.url)
    figure(f"kill -9 x{CYCLES} under {WRITERS} writers [{api_database.backend}]",
           f"{len(acknowledged)} acknowledged, {len(lost)} lost")
    assert lost == set()
