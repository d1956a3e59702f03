"""compose.dev.yaml on top of compose.yaml: the API is also published on 127.0.0.1 with
development settings, on the same volume; back on compose.yaml the API port is closed again."""

from __future__ import annotations

import re

import pytest

from support import http
from support.compose import inspect
from support.net import free_port, port_is_open
from support.load import add_item, all_ids
from support.stack import up

DEV_FILES = ("compose.yaml", "compose.dev.yaml")


@pytest.fixture(scope="module")
def dev(project, built_images):
    up(project)
    kept = {add_item(project.web_url, f"dev override {project.name} {n}") for n in range(3)}
    port = free_port()
    project("up", "-d", "--wait", "--wait-timeout", "180", files=DEV_FILES, env={"API_PORT": str(port)},
            log="up-dev.log")
    return {"port": port, "kept": kept, "api": inspect("container", project.container("api")),
            "logs": project("logs", "--no-color", "--no-log-prefix", "api", files=DEV_FILES, log="dev-logs.log").stdout}


@pytest.fixture(scope="module")
def dev_health(dev):
    return http.request(f"http://127.0.0.1:{dev['port']}/api/health", timeout=10)


def test_the_dev_override_publishes_the_api_on_loopback(dev_health):
    assert dev_health.status == 200


def test_the_dev_override_binds_the_api_port_to_127_0_0_1_only(dev):
    bindings = dev["api"]["NetworkSettings"]["Ports"]["8000/tcp"]
    assert {binding["HostIp"] for binding in bindings} == {"127.0.0.1"}


def test_the_dev_override_runs_the_api_in_development(dev_health):
    assert dev_health.json()["environment"] == "development"


def test_the_dev_override_keeps_the_same_volume(project, dev):
    assert dev["kept"] <= all_ids(project.web_url)


def test_the_dev_override_sets_rust_log_debug(dev):
    assert "RUST_LOG=debug" in dev["api"]["Config"]["Env"]


def test_the_dev_override_sets_log_format_pretty(dev):
    assert "LOG_FORMAT=pretty" in dev["api"]["Config"]["Env"]


def test_the_dev_override_api_logs_in_the_pretty_format(dev):
    # "<time>  INFO target: message", not JSON objects.
    assert any(re.match(r"[0-9TZ:.-]+ +INFO ", line) for line in dev["logs"].splitlines())


@pytest.fixture(scope="module")
def back_on_compose_yaml(project, dev):
    up(project, log="up-back.log")
    return dev["port"]


def test_back_on_compose_yaml_the_api_port_is_closed(back_on_compose_yaml):
    assert not port_is_open(back_on_compose_yaml)
