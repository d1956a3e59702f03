"""Fixtures of the checks against the dev overlay on a cluster (the Kubernetes workflow's kind
cluster): where the web tier answers, and kubectl on the namespace."""

from __future__ import annotations

import os
import subprocess

import pytest

from support.tools import require_tool, unavailable


@pytest.fixture(scope="session")
def web_url() -> str:
    url = os.environ.get("ITEMS_K8S_WEB_URL")
    if not url:
        unavailable("ITEMS_K8S_WEB_URL names no deployed web tier",
                    "deploy the dev overlay as .github/workflows/kubernetes.yml does")
    return url.rstrip("/")


@pytest.fixture(scope="session")
def kubectl():
    tool = require_tool("kubectl", "kubectl 1.32 or newer")

    def kubectl(*args: str, timeout: float = 300) -> str:
        done = subprocess.run([tool, "--namespace", "items", *args], capture_output=True, text=True,
                              timeout=timeout)
        assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
        return done.stdout

    return kubectl
