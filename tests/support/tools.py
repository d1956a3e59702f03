"""Finding the external tools the tests drive, and what a missing one means.

Outside CI a missing tool skips the test with the command that installs it; under CI=true it
fails the test, so a CI run can never pass by testing less.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def find_tool(name: str, extra_dirs: tuple[str, ...] = ()) -> str | None:
    """The first `name` on PATH, then in `extra_dirs` (globs allowed), or None."""
    found = shutil.which(name)
    if found:
        return found
    for pattern in extra_dirs:
        for directory in sorted(Path("/").glob(pattern.lstrip("/")), reverse=True):
            candidate = directory / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    return None


def unavailable(what: str, install: str) -> None:
    """Ends the current test: a failure under CI=true, a skip that says how to fix it elsewhere."""
    message = f"{what} (install: {install})"
    if in_ci():
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(f"missing tool: {message}")


def require_tool(name: str, install: str, extra_dirs: tuple[str, ...] = ()) -> str:
    path = find_tool(name, extra_dirs)
    if path is None:
        unavailable(f"{name} is not installed", install)
    return path
