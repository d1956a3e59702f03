"""deploy/observability through promtool, run from the Prometheus image the Compose file names:
the configuration and the rules load, every rule's unit tests pass, and the web tier's figures are
text Prometheus accepts. Needs no stack and no build."""

from __future__ import annotations

import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from support.compose import docker
from support.net import free_port
from support.nginx import NGINX_METRICS_SCRIPT
from support.processes import base_environment
from support.tools import require_tool

# stub_status's page as nginx 1.22 to 1.29 write it.
STUB_STATUS = ("Active connections: 291 \nserver accepts handled requests\n 16630948 16630948 31070465 \n"
               "Reading: 6 Writing: 179 Waiting: 106 \n")


@pytest.fixture(scope="module")
def prometheus_image(repo: Path) -> str:
    return yaml.safe_load((repo / "compose.observability.yaml").read_text())["services"]["prometheus"]["image"]


@pytest.fixture(scope="module")
def promtool(docker_ready, repo: Path, prometheus_image: str):
    """promtool in the Prometheus image, with deploy/observability where Compose mounts it."""
    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return docker("run", "--rm", "-i", "--network", "none",
                      "-v", f"{repo / 'deploy' / 'observability'}:/etc/prometheus:ro",
                      "--entrypoint", "/bin/promtool", prometheus_image, *args, input=stdin, check=False, timeout=300)
    return run


def test_promtool_accepts_the_configuration(promtool):
    done = promtool("check", "config", "/etc/prometheus/prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_accepts_every_rule_file(promtool, repo):
    files = sorted(path.name for path in (repo / "deploy" / "observability" / "rules").glob("*.yml"))
    done = promtool("check", "rules", *(f"/etc/prometheus/rules/{name}" for name in files))
    assert files and done.returncode == 0, done.stdout + done.stderr


def test_every_rule_unit_test_passes(promtool, repo):
    files = sorted(path.name for path in (repo / "deploy" / "observability" / "tests").glob("*.yml"))
    done = promtool("test", "rules", *(f"/etc/prometheus/tests/{name}" for name in files))
    assert files and done.returncode == 0, done.stdout + done.stderr


class StubStatus(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        body = STUB_STATUS.encode()
        self.send_response(200 if self.path == "/stub_status" else 404)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib signature)
        return


@pytest.fixture(scope="module")
def web_figures(tmp_path_factory) -> str:
    """What web/nginx-metrics.sh writes from that page."""
    require_tool("wget", "apt-get install wget")
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), StubStatus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    target = tmp_path_factory.mktemp("figures") / "nginx.prom"
    try:
        subprocess.run([str(NGINX_METRICS_SCRIPT), "once"], check=True, timeout=30,
                       env={**base_environment(), "NGINX_METRICS_PORT": str(port), "NGINX_METRICS_FILE": str(target)})
    finally:
        server.shutdown()
    return target.read_text()


def test_the_web_figures_pass_promtools_metric_checks(promtool, web_figures):
    done = promtool("check", "metrics", stdin=web_figures)
    assert done.returncode == 0, web_figures + done.stdout + done.stderr


def test_the_web_figures_are_stub_statuses_numbers(web_figures):
    samples = dict(line.split(" ") for line in web_figures.splitlines() if not line.startswith("#"))
    assert {name: samples[name] for name in ("nginx_connections_active", "nginx_connections_accepted_total",
                                             "nginx_connections_handled_total", "nginx_http_requests_total",
                                             "nginx_connections_reading", "nginx_connections_writing",
                                             "nginx_connections_waiting", "nginx_up")} == {
        "nginx_connections_active": "291", "nginx_connections_accepted_total": "16630948",
        "nginx_connections_handled_total": "16630948", "nginx_http_requests_total": "31070465",
        "nginx_connections_reading": "6", "nginx_connections_writing": "179", "nginx_connections_waiting": "106",
        "nginx_up": "1"}
