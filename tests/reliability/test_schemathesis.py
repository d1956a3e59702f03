"""schemathesis with every check against the API's own OpenAPI document: each documented
operation (but the never-ending change stream) with generated valid and invalid input, and
stateful sequences (create, read, delete). The client Schemathesis plays uses each valid
Idempotency-Key once (`schemathesis_hooks.py` says why)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def run(api, api_database, scratch: Path, artifacts: Path):
    schemathesis = Path(sys.executable).with_name("schemathesis")
    assert schemathesis.exists(), "schemathesis is missing: scripts/venv installs it"
    # Every request and response, to see what went wrong after a failure.
    har = artifacts / "reliability" / f"schemathesis-{api_database.backend}.har"
    har.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [str(schemathesis), "run", f"{api.url}/api/openapi.json", "--checks", "all",
         "--max-examples", "60", "--seed", "20261201", "--no-color",
         # The change stream stays open while it is read: it has tests of its own.
         "--exclude-path", "/api/items/events",
         "--report", "har", "--report-har-path", str(har)],
        capture_output=True, text=True, timeout=600, cwd=scratch,
        env={**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
             "PYTHONPATH": str(Path(__file__).parent)},
    )


def test_schemathesis_finds_no_failure(run, figure, api_database):
    cases = next((line.strip() for line in run.stdout.splitlines() if "generated" in line), "")
    figure(f"schemathesis [{api_database.backend}]", cases)
    assert run.returncode == 0, run.stdout[-4000:]
