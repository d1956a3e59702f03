"""Both images pushed to a throwaway registry on 127.0.0.1, removed locally, and run from there
with compose.registry.yaml (no build:, as on a fresh machine); the smoke test passes on it."""

from __future__ import annotations

import os

import pytest

import smoke
from support import http
from support.compose import docker, inspect
from support.net import free_port, wait_until

REGISTRY_FILES = ("compose.registry.yaml",)


@pytest.fixture(scope="module")
def registry(project, built_images):
    port = free_port()
    name = f"{project.name}-registry"
    image = os.environ.get("TEST_REGISTRY_IMAGE", "registry:2")
    docker("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:5000", image)
    try:
        wait_until("the registry to answer /v2/",
                   lambda: http.request(f"http://127.0.0.1:{port}/v2/", timeout=2).status == 200, timeout=30)
        yield f"127.0.0.1:{port}/items-test"
    finally:
        docker("rm", "-f", "-v", name, check=False)


@pytest.fixture(scope="module")
def pushed(project, registry):
    tag = project.name
    pushes = {}
    for service in ("api", "web"):
        target = f"{registry}/{service}:{tag}"
        docker("tag", project.image(service), target)
        pushes[service] = docker("push", target, log=project.logs / f"push-{service}.log", check=False)
    yield {"tag": tag, "pushes": pushes}
    for service in ("api", "web"):
        docker("image", "rm", "-f", f"{registry}/{service}:{tag}", check=False)


@pytest.mark.parametrize("service", ["api", "web"])
def test_the_image_is_pushed_to_the_registry(pushed, service):
    assert pushed["pushes"][service].returncode == 0, pushed["pushes"][service].stderr


@pytest.fixture(scope="module")
def removed_locally(project, registry, pushed):
    project("down", "--volumes")
    tags = [f"{registry}/{service}:{pushed['tag']}" for service in ("api", "web")]
    docker("image", "rm", project.image("api"), project.image("web"), *tags)
    return tags


@pytest.mark.parametrize("index", [0, 1], ids=["api", "web"])
def test_the_pushed_image_is_gone_locally(removed_locally, index):
    assert inspect("image", removed_locally[index]) is None


@pytest.fixture(scope="module")
def from_registry(project, registry, pushed, removed_locally):
    env = {"REGISTRY": registry, "IMAGE_TAG": pushed["tag"]}
    done = project("up", "-d", "--wait", "--wait-timeout", "180", files=REGISTRY_FILES, env=env, log="up-registry.log")
    yield done
    project("down", "--volumes", files=REGISTRY_FILES, env=env, check=False)


def test_compose_registry_yaml_pulls_the_images(from_registry):
    assert "pull" in (from_registry.stdout + from_registry.stderr).lower()


@pytest.fixture(scope="module")
def smoke_outcomes(project, build_info, from_registry):
    return {outcome.name: outcome for outcome in smoke.run(project.web_url, expect_version=build_info.version)}


@pytest.mark.parametrize("check", smoke.check_names())
def test_smoke_on_the_stack_from_the_registry(smoke_outcomes, check):
    outcome = smoke_outcomes[check]
    assert outcome.status == "passed", outcome.detail
