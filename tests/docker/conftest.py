"""Fixtures of the container tests: Docker, one Compose project with a unique name for the whole
run (always torn down with its volumes and images), the images built once, and the stack.

Modules run in the order below (promtool on deploy/observability first, which needs no image, then
the images are built and timed); each module brings the stack to the state it needs, so any one of
them also runs alone.
"""

from __future__ import annotations

import datetime
import os
import time
from pathlib import Path
from typing import Iterator

import pytest

from support.compose import ComposeProject, docker, docker_environment
from support.net import free_port
from support.stack import BuildInfo, Images
from support.tools import require_tool, unavailable

MODULE_ORDER = ["test_prometheus_rules", "test_images", "test_write_limit", "test_stack", "test_persistence",
                "test_dev_override", "test_sigkill", "test_scale_out", "test_observability", "test_move_to_postgres",
                "test_pg_backup", "test_registry"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def position(item: pytest.Item) -> int:
        stem = Path(str(item.fspath)).stem
        return MODULE_ORDER.index(stem) if stem in MODULE_ORDER else len(MODULE_ORDER)

    items.sort(key=position)


@pytest.fixture(scope="session")
def docker_ready() -> None:
    require_tool("docker", "apt-get install docker.io, or ../shared/docker-offline/setup-docker.sh")
    if docker("info", check=False).returncode != 0:
        unavailable("the Docker daemon is not reachable (docker info failed)", "start dockerd")
    if docker("compose", "version", check=False).returncode != 0:
        unavailable("the docker compose plugin is missing", "apt-get install docker-compose-plugin")


@pytest.fixture(scope="session")
def build_info() -> BuildInfo:
    stamp = datetime.datetime.now(datetime.timezone.utc)
    return BuildInfo(
        version=f"0.0.0-test.{stamp:%Y%m%d%H%M%S}.{os.getpid()}",
        date=f"{stamp:%Y-%m-%dT%H:%M:%SZ}",
        vcs_ref=os.environ.get("VCS_REF") or os.environ.get("GITHUB_SHA") or "test-no-vcs",
    )


@pytest.fixture(scope="session")
def docker_logs(artifacts: Path) -> Path:
    path = artifacts / "docker"
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.log"):
        old.unlink()
    return path


@pytest.fixture(scope="session")
def project(docker_ready, repo: Path, docker_logs: Path, build_info: BuildInfo) -> Iterator[ComposeProject]:
    """The Compose project of this run; on the way out its containers' logs are kept in
    artifacts/docker/containers.log, then everything it made is removed."""
    name = f"items-test-{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}"
    web_port = int(os.environ.get("WEB_PORT") or free_port())
    env = {**docker_environment(), "WEB_BIND": "127.0.0.1", "WEB_PORT": str(web_port),
           "BUILD_VERSION": build_info.version, "BUILD_DATE": build_info.date, "VCS_REF": build_info.vcs_ref}
    compose = ComposeProject(name, repo, docker_logs, env, web_url=f"http://127.0.0.1:{web_port}",
                             overrides=("tests/docker/compose.no-write-limit.yaml",))
    try:
        yield compose
    finally:
        compose.save_logs()
        compose.down()
        images = [compose.image("api"), compose.image("web"), f"{compose.image('api')}:edited"]
        docker("image", "rm", "-f", *images, check=False)


@pytest.fixture(scope="session")
def images(project: ComposeProject, figure) -> Images:
    built = Images(project)
    for label, service, log in (("api (first)", "api", "build-api.log"), ("web (first)", "web", "build-web.log"),
                                ("api (no change)", "api", "build-api-nochange.log")):
        done = built.build(label, service, log)
        figure(f"build {label} seconds", f"{done.seconds:.1f}")
    return built


@pytest.fixture(scope="session")
def built_images(images: Images) -> Images:
    """The images, which must exist: a failed build errors every test that needs them."""
    images.ensure()
    return images
