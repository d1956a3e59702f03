"""Nginx's own figures for Prometheus (stub_status read by web/nginx-metrics.sh, served on a port of
their own) and the W3C trace context on its way to the API and into the access log."""

from __future__ import annotations

import re
import subprocess
import time
import uuid

import pytest

from support import http
from support.net import free_port
from support.nginx import NGINX_METRICS_SCRIPT
from support.processes import base_environment
from support.tools import require_tool

TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"
# The official nginx-prometheus-exporter's names for stub_status's figures (its two connection
# counters with the _total suffix Prometheus gives counters), and their types.
EXPORTER_METRICS = {
    "nginx_connections_accepted_total": "counter",
    "nginx_connections_active": "gauge",
    "nginx_connections_handled_total": "counter",
    "nginx_connections_reading": "gauge",
    "nginx_connections_waiting": "gauge",
    "nginx_connections_writing": "gauge",
    "nginx_http_requests_total": "counter",
    "nginx_up": "gauge",
}
SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*) (-?[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?)")
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
TRACESTATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"


def parse(text: str) -> dict[str, dict]:
    """Prometheus' text format, strictly: every family has HELP and TYPE before its one sample."""
    families: dict[str, dict] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[len("# HELP "):].partition(" ")
            families.setdefault(name, {})["help"] = help_text
        elif line.startswith("# TYPE "):
            name, _, kind = line[len("# TYPE "):].partition(" ")
            families.setdefault(name, {})["type"] = kind
        else:
            match = SAMPLE.fullmatch(line)
            assert match, f"not a sample line: {line!r}"
            name = match.group(1)
            assert {"help", "type"} <= set(families.get(name, {})), f"{name} has no HELP or TYPE before it"
            families[name]["value"] = float(match.group(2))
    return families


@pytest.fixture(scope="module")
def front(make_nginx):
    """nginx in front of a port nothing listens on: its own figures do not need the API."""
    nginx = make_nginx(f"http://127.0.0.1:{free_port()}")
    nginx.start()
    return nginx


@pytest.fixture(scope="module")
def scraped(front):
    """The figures as Prometheus gets them, after ten requests to the public port."""
    front.write_metrics()
    before = parse(http.request(front.metrics_url + "/metrics").text)
    for _ in range(10):
        http.request(front.url + "/healthz")
    front.write_metrics()
    response = http.request(front.metrics_url + "/metrics")
    return {"before": before, "response": response, "after": parse(response.text), "read_at": time.time()}


# --- the figures, on the metrics port ----------------------------------------------------------


def test_the_metrics_port_serves_the_figures(scraped):
    assert scraped["response"].status == 200


def test_the_figures_carry_the_content_type_prometheus_3_requires(scraped):
    assert scraped["response"].header("Content-Type") == TEXT_FORMAT


def test_the_figures_are_never_cached(scraped):
    assert scraped["response"].header("Cache-Control") == "no-store"


def test_the_figures_have_the_official_exporters_names_and_types(scraped):
    families = scraped["after"]
    assert {name: families.get(name, {}).get("type") for name in EXPORTER_METRICS} == EXPORTER_METRICS


def test_nginx_is_up_when_its_stub_status_answers(scraped):
    assert scraped["after"]["nginx_up"]["value"] == 1


def test_the_request_counter_counts_requests_to_the_public_port(scraped):
    # The ten requests, the exporter's own read of stub_status and the scrape in between.
    before, after = (scraped[when]["nginx_http_requests_total"]["value"] for when in ("before", "after"))
    assert 10 <= after - before <= 13


def test_every_accepted_connection_was_handled(scraped):
    families = scraped["after"]
    assert families["nginx_connections_handled_total"]["value"] == families["nginx_connections_accepted_total"]["value"]


def test_the_figures_say_when_they_were_read(scraped):
    assert abs(scraped["after"]["items_web_metrics_timestamp_seconds"]["value"] - scraped["read_at"]) < 10


def test_stub_status_answers_this_container_on_loopback(front):
    response = http.request(front.metrics_url + "/stub_status")
    assert (response.status, response.text.startswith("Active connections:")) == (200, True)


def test_stub_status_refuses_any_other_address(front):
    # 127.0.0.2 is another host as nginx sees it, like Prometheus or a neighbouring container.
    assert http.request(front.metrics_url + "/stub_status", source="127.0.0.2").status == 403


@pytest.mark.parametrize("path", ["/", "/api/items", "/healthz", "/index.html"])
def test_the_metrics_port_serves_nothing_else(front, path):
    assert http.request(front.metrics_url + path).status == 404


def test_when_stub_status_cannot_be_read_the_figures_say_nginx_up_0(scratch):
    require_tool("wget", "apt-get install wget")
    target = scratch / f"unreachable-{free_port()}.prom"
    environment = {**base_environment(), "NGINX_METRICS_PORT": str(free_port()), "NGINX_METRICS_FILE": str(target)}
    subprocess.run([str(NGINX_METRICS_SCRIPT), "once"], check=True, timeout=30, env=environment)
    families = parse(target.read_text())
    assert (families["nginx_up"]["value"], set(families)) == (0, {"nginx_up", "items_web_metrics_timestamp_seconds"})


# --- nothing of it, and none of the API's metrics, through the public port ---------------------


@pytest.mark.parametrize("path", ["/metrics", "/stub_status", "/metrics/", "//metrics", "/api/../metrics",
                                  "/api/%2e%2e/stub_status", "/api/..%2fmetrics", "/%6detrics"])
def test_the_public_port_serves_no_figures(front, path):
    response = http.request(front.url + path)
    assert response.status == 404 and "nginx_" not in response.text and "Active connections" not in response.text


@pytest.fixture(scope="module")
def echo_web(make_nginx, upstream_echo):
    nginx = make_nginx(upstream_echo)
    nginx.start()
    return nginx


@pytest.mark.parametrize("path", ["/metrics", "/api/../metrics", "/api/%2e%2e/metrics", "/api/..%2f..%2fmetrics",
                                  "/api/items/../../metrics", "//api/../metrics", "/api/%2e%2e%2fmetrics",
                                  "/api/items/%2e%2e/%2e%2e/metrics"])
def test_no_path_outside_api_reaches_the_api(echo_web, path):
    # The API serves its metrics on a listener of their own, at /metrics; the proxy sends only
    # /api/... paths, and only to API_UPSTREAM's port.
    echoed = http.request(echo_web.url + path).json_or_none()
    assert echoed is None or echoed["path"].startswith("/api/") and "/../" not in echoed["path"], echoed


def test_the_proxy_reaches_only_the_port_api_upstream_names(echo_web, upstream_echo):
    port = upstream_echo.rsplit(":", 1)[1]
    servers = [line for line in echo_web.servers_file.read_text().splitlines() if line.startswith("server ")]
    assert servers and all(line.split()[1] == f"127.0.0.1:{port}" for line in servers), servers


# --- trace context -------------------------------------------------------------------------


def seen_upstream(nginx, **headers: str) -> dict:
    echoed = http.request(nginx.url + "/api/items", headers=headers).json()
    return {name: value for name, value in echoed["headers"]}


def test_traceparent_and_tracestate_reach_the_api_unchanged(echo_web):
    headers = seen_upstream(echo_web, traceparent=TRACEPARENT, tracestate=TRACESTATE)
    assert (headers.get("traceparent"), headers.get("tracestate")) == (TRACEPARENT, TRACESTATE)


def test_a_malformed_traceparent_is_passed_on_for_the_api_to_judge(echo_web):
    assert seen_upstream(echo_web, traceparent="garbage")["traceparent"] == "garbage"


def test_nginx_starts_no_trace_of_its_own(echo_web):
    assert "traceparent" not in seen_upstream(echo_web)


def logged(nginx, request_id: str, **headers: str) -> dict:
    http.request(nginx.url + "/api/items", headers={"X-Request-Id": request_id, **headers})
    return nginx.access_entry(request_id)


def test_the_access_log_has_the_trace_id_next_to_the_request_id(echo_web):
    entry = logged(echo_web, "trace-logged-1", traceparent=TRACEPARENT)
    keys = list(entry)
    assert (entry["trace_id"], keys.index("trace_id")) == (TRACE_ID, keys.index("request_id") + 1)


def test_a_later_traceparent_version_with_more_fields_still_gives_its_trace_id(echo_web):
    entry = logged(echo_web, "trace-logged-2", traceparent=f"01-{TRACE_ID}-00f067aa0ba902b7-01-what-comes-next")
    assert entry["trace_id"] == TRACE_ID


@pytest.mark.parametrize("traceparent", [
    "",
    "garbage",
    TRACEPARENT.upper(),
    f"ff-{TRACE_ID}-00f067aa0ba902b7-01",
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
    f"00-{TRACE_ID}-0000000000000000-01",
    f"00-{TRACE_ID}-00f067aa0ba902b7-01x",
    f"00-{TRACE_ID[:-1]}-00f067aa0ba902b7-01",
], ids=["absent", "garbage", "uppercase", "version-ff", "zero-trace-id", "zero-parent-id", "trailing-junk",
        "short-trace-id"])
def test_without_a_valid_traceparent_the_trace_id_is_empty(echo_web, traceparent):
    headers = {"traceparent": traceparent} if traceparent else {}
    assert logged(echo_web, f"trace-invalid-{uuid.uuid4().hex}", **headers)["trace_id"] == ""
