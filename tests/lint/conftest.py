"""Fixtures of the static checks: the repository's files, and the linters (PATH, then .venv/bin)."""

from __future__ import annotations

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
        return require_tool(name, install, extra_dirs=(str(repo / ".venv" / "bin"),))

    return linter
