"""Fixtures of the static checks: the repository's files, and the linters (PATH, then .venv/bin,
then the directory of the Python running the tests, where its virtualenv installs them)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from support.repo import project_files
from support.tools import require_tool


@pytest.fixture(scope="session")
def files(repo: Path) -> list[str]:
    return project_files(repo)


@pytest.fixture(scope="session")
def linter(repo: Path):
    def linter(name: str, install: str) -> str:
        return require_tool(name, install, extra_dirs=(str(repo / ".venv" / "bin"), str(Path(sys.executable).parent)))

    return linter
