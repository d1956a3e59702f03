"""compose.yaml running: healthy, the smoke test through the web tier, the build it reports, the
hardening of both containers (non-root, read-only, no capabilities, only web published), and the
change stream through the web tier, across replicas."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import smoke
from support import http
from support.compose import docker, inspect
from support.events import Stream
from support.stack import STACK_VARIANTS, up

SERVICES = ["api", "web"]


@pytest.fixture(scope="module", params=STACK_VARIANTS)
def stack(request, project, built_images):
    up(project, request.param)
    return project


@pytest.mark.parametrize("service", SERVICES)
def test_compose_up_wait_leaves_the_service_healthy(stack, service):
    assert stack.health(service) == "healthy"


@pytest.fixture(scope="module")
def smoke_outcomes(stack, build_info):
    return {outcome.name: outcome for outcome in smoke.run(stack.web_url, expect_version=build_info.version)}


@pytest.mark.parametrize("check", smoke.check_names())
def test_smoke(smoke_outcomes, check):
    outcome = smoke_outcomes[check]
    assert outcome.status == "passed", outcome.detail


@pytest.fixture(scope="module")
def health(stack):
    return http.request(stack.web_url + "/api/health").json()


def test_api_health_reports_the_baked_in_version(health, build_info):
    assert health["version"] == build_info.version


def test_api_health_reports_the_baked_in_build_date(health, build_info):
    assert health["build_date"] == build_info.date


def test_api_health_reports_the_baked_in_vcs_ref(health, build_info):
    assert health["vcs_ref"] == build_info.vcs_ref


def test_api_health_reports_production(health):
    assert health["environment"] == "production"


# --- Hardening ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def container(stack):
    return lambda service: inspect("container", stack.container(service))


def process_status(stack, service: str) -> list[dict[str, str]]:
    """/proc/<pid>/status of every process in the service's container (the daemon is local). A
    process that ended between the listing and the reading (the web tier's metrics exporter runs
    short-lived helpers) is left out; if none can be read, the daemon is not local."""
    pids = docker("top", stack.container(service), "-eo", "pid").stdout.split()[1:]
    statuses = []
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        statuses.append({key: value.strip() for key, value in fields.items()})
    if pids and not statuses:
        pytest.skip(f"/proc/{pids[0]} is not visible here: the Docker daemon is not local")
    assert statuses, f"no processes in the {service} container"
    return statuses


@pytest.mark.parametrize("service", SERVICES)
def test_the_container_is_configured_with_a_non_root_user(container, service):
    user = container(service)["Config"]["User"]
    assert user and not user.startswith(("0", "root"))


@pytest.mark.parametrize("service", SERVICES)
def test_the_container_has_a_read_only_root_filesystem(container, service):
    assert container(service)["HostConfig"]["ReadonlyRootfs"] is True


@pytest.mark.parametrize("service", SERVICES)
def test_the_container_drops_every_capability(container, service):
    assert "ALL" in (container(service)["HostConfig"]["CapDrop"] or [])


@pytest.mark.parametrize("service", SERVICES)
def test_the_container_adds_no_capability_back(container, service):
    assert not container(service)["HostConfig"]["CapAdd"]


@pytest.mark.parametrize("service", SERVICES)
def test_the_container_sets_no_new_privileges(container, service):
    assert any("no-new-privileges" in option for option in container(service)["HostConfig"]["SecurityOpt"] or [])


@pytest.mark.parametrize("service", SERVICES)
def test_no_process_in_the_container_runs_as_root(stack, service):
    assert all(status["Uid"].split()[1] != "0" for status in process_status(stack, service))


@pytest.mark.parametrize("service", SERVICES)
def test_no_process_in_the_container_has_an_effective_capability(stack, service):
    assert all(int(status["CapEff"], 16) == 0 for status in process_status(stack, service))


def test_the_api_publishes_no_port(container):
    published = [binding for bindings in (container("api")["NetworkSettings"]["Ports"] or {}).values()
                 for binding in bindings or []]
    assert published == []


def test_the_web_container_cannot_write_its_root_filesystem(stack):
    done = stack("exec", "-T", "web", "sh", "-c", "touch /usr/share/nginx/html/x", check=False)
    assert done.returncode != 0


def test_the_web_container_runs_the_rendered_template(stack):
    config = stack("exec", "-T", "web", "cat", "/etc/nginx/conf.d/default.conf").stdout
    assert 'map "http://api:8000" $items_api_scheme' in config


def test_the_web_tier_lists_every_api_replica(stack):
    servers = stack("exec", "-T", "web", "cat", "/tmp/items-api-servers.conf").stdout.splitlines()
    assert len(servers) == len(stack.containers("api"))


@pytest.fixture(scope="module")
def streamed(stack):
    """Three pages' change streams through the web tier, and an add and a delete through it too.
    With several replicas nginx spreads the four requests over them, so changes made on one replica
    must reach streams held by the others."""
    streams = [Stream(stack.web_url) for _ in range(3)]
    try:
        seen = {"first": [stream.next_event()["name"] for stream in streams]}
        started = time.monotonic()
        created = http.request(stack.web_url + "/api/items", "POST", json_body={"text": "streamed"}).json()
        seen["created"] = [stream.next_event()["data"]["item"] for stream in streams]
        seen["created_s"] = time.monotonic() - started
        assert http.request(stack.web_url + f"/api/items/{created['id']}", "DELETE").status == 204
        seen["deleted"] = [stream.next_event()["data"]["id"] for stream in streams]
        seen["item"] = created
        return seen
    finally:
        for stream in streams:
            stream.close()


def test_every_stream_through_the_web_tier_starts_ready(streamed):
    assert streamed["first"] == ["ready"] * 3


def test_an_add_reaches_every_stream_within_a_second(streamed):
    assert streamed["created"] == [streamed["item"]] * 3
    assert streamed["created_s"] < 1


def test_a_delete_reaches_every_stream(streamed):
    assert streamed["deleted"] == [streamed["item"]["id"]] * 3
