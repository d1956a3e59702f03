"""Fixtures of the reliability suite: the API under faults, load and abuse (see each module).
Every load is bounded; every figure it measured is printed at the end (the `figure` fixture)."""

from __future__ import annotations

import resource

import pytest


@pytest.fixture(scope="session", autouse=True)
def many_open_files() -> None:
    """The connection tests hold thousands of sockets: raise this process's (and its children's)
    open-file limit to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

