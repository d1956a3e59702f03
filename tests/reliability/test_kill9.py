"""SIGKILL of the API under write load, again and again: every write acknowledged with 201
before a kill is still there after the restarts."""

from __future__ import annotations

import signal

from support.load import WriteLoad, all_ids

CYCLES = 5
WRITERS = 6
# A kill comes after this many more acknowledged writes.
PER_CYCLE = 300


def test_sigkill_cycles_under_write_load_lose_no_acknowledged_write(api, figure, api_database):
    with WriteLoad(api.url, WRITERS, limit=100_000, backoff=0.02) as load:
        for _ in range(CYCLES):
            load.wait_for(PER_CYCLE, timeout=60)
            api.process.send_signal(signal.SIGKILL)
            api.process.wait(10)
            api.start()
    lost = set(load.acknowledged) - all_ids(api.url)
    figure(f"kill -9 x{CYCLES} under {WRITERS} writers [{api_database.backend}]",
           f"{load.count()} acknowledged, {len(lost)} lost")
    assert lost == set()
