"""`.ci/run` prepares a bare machine for the whole suite: every tool a test asks for by name
(`require_tool`) is one it installs when missing, or part of every Debian system."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Essential Debian packages (coreutils, util-linux, mount) and the toolchain .ci/run starts from.
ON_EVERY_MACHINE = {"timeout", "mount", "cargo"}
# The harness's own test of a tool that exists nowhere.
NOT_A_TOOL = {"no-such-tool-for-the-harness-test"}


def tools_the_tests_require() -> set[str]:
    names = set()
    for path in (REPO / "tests").rglob("*.py"):
        names |= set(re.findall(r"require_tool\(\s*\"([^\"]+)\"", path.read_text()))
    return names - NOT_A_TOOL


def tools_ci_run_installs() -> set[str]:
    script = (REPO / ".ci" / "run").read_text()
    installed = set(re.findall(r"\bhave ([A-Za-z0-9_.-]+)", script))
    # Docker comes from the docker-offline kit when `docker info` fails.
    if "docker info" in script and "setup-docker.sh" in script:
        installed.add("docker")
    return installed


def test_ci_run_installs_every_tool_a_test_requires():
    missing = tools_the_tests_require() - tools_ci_run_installs() - ON_EVERY_MACHINE
    assert missing == set(), f".ci/run does not install {sorted(missing)}"
