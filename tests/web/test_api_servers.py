"""web/api-servers.sh: the server list of the `upstream items_api` block, as the image writes it
before nginx starts. Replicas coming and going behind one name are tested in Docker
(tests/docker), where a name has several addresses."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from support.net import free_port
from support.nginx import API_SERVERS_SCRIPT, list_api_servers
from support.processes import base_environment


def server_lines(tmp_path: Path, upstream: str) -> list[str]:
    servers = tmp_path / "servers.conf"
    list_api_servers(upstream, servers)
    return servers.read_text().splitlines()


def test_an_address_is_listed_with_its_port(tmp_path):
    assert server_lines(tmp_path, "http://127.0.0.1:8123") == [
        "server 127.0.0.1:8123 max_fails=1 fail_timeout=2s;"]


def test_a_name_is_listed_by_its_addresses(tmp_path):
    assert server_lines(tmp_path, "http://localhost:8123") == [
        "server 127.0.0.1:8123 max_fails=1 fail_timeout=2s;"]


def test_https_without_a_port_means_443(tmp_path):
    assert server_lines(tmp_path, "https://127.0.0.1") == ["server 127.0.0.1:443 max_fails=1 fail_timeout=2s;"]


def test_a_name_that_does_not_resolve_gives_one_server_marked_down(tmp_path):
    # nginx then starts, and answers its JSON 502 until the name resolves.
    assert server_lines(tmp_path, "http://items-api.invalid:8000") == ["server 127.0.0.1:9 down;"]


def test_a_replica_that_is_not_ready_stays_listed_when_no_other_is(tmp_path):
    # Nothing answers readiness on this port: rather than no server at all, every address stays.
    port = free_port()
    assert server_lines(tmp_path, f"http://127.0.0.1:{port}") == [
        f"server 127.0.0.1:{port} max_fails=1 fail_timeout=2s;"]


@pytest.mark.parametrize("upstream", ["ftp://api:21", "api:8000"])
def test_an_upstream_that_is_not_http_is_refused(tmp_path, upstream):
    done = subprocess.run([str(API_SERVERS_SCRIPT), "once"], capture_output=True, text=True, timeout=30,
                          env={**base_environment(), "API_UPSTREAM": upstream,
                               "API_SERVERS_FILE": str(tmp_path / "servers.conf")})
    assert (done.returncode, "must start with http:// or https://" in done.stderr) == (1, True)
