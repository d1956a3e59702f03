"""What the API receives from nginx (seen through tests/web/upstream_echo.py), and nginx giving up
on an upstream that does not answer within API_READ_TIMEOUT."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from support import http

GENERATED_ID = re.compile(r"[0-9a-f]{32}")
# Short, so the 504 comes after 2 s instead of the image's default.
READ_TIMEOUT_SECONDS = 2
STALL_SECONDS = 8


@pytest.fixture(scope="module")
def echo_web(make_nginx, upstream_echo):
    nginx = make_nginx(upstream_echo, read_timeout=f"{READ_TIMEOUT_SECONDS}s")
    nginx.start()
    return nginx


@pytest.fixture(scope="module")
def upstream_host(upstream_echo):
    return urlsplit(upstream_echo).netloc


def seen_upstream(echo_web, path: str, **headers: str) -> dict:
    """The request as upstream_echo.py received it: method, path, version, headers."""
    echoed = http.request(echo_web.url + path, headers=headers).json()
    echoed["header"] = lambda name: ",".join(value for key, value in echoed["headers"] if key == name)
    return echoed


@pytest.fixture(scope="module")
def plain(echo_web):
    return seen_upstream(echo_web, "/api/items?limit=5&before=10")


@pytest.fixture(scope="module")
def forwarded(echo_web):
    return seen_upstream(echo_web, "/api/items", **{"X-Forwarded-For": "198.51.100.7",
                                                     "X-Forwarded-Proto": "https",
                                                     "X-Request-Id": "from-client-1"})


def test_path_and_query_reach_the_api_unchanged(plain):
    assert plain["path"] == "/api/items?limit=5&before=10"


def test_nginx_speaks_http_1_1_to_the_upstream(plain):
    assert plain["version"] == "HTTP/1.1"


def test_host_is_the_upstreams_proxy_host_not_the_clients(plain, upstream_host):
    assert plain["header"]("host") == upstream_host


def test_no_connection_close_is_sent_to_the_upstream(plain):
    assert plain["header"]("connection") == ""


def test_x_forwarded_for_is_the_client_address(plain):
    assert plain["header"]("x-forwarded-for") == "127.0.0.1"


def test_x_forwarded_proto_defaults_to_the_scheme(plain):
    assert plain["header"]("x-forwarded-proto") == "http"


def test_a_request_id_is_generated_for_the_api(plain):
    assert GENERATED_ID.fullmatch(plain["header"]("x-request-id"))


def test_x_forwarded_for_is_appended_to(forwarded):
    assert forwarded["header"]("x-forwarded-for") == "198.51.100.7, 127.0.0.1"


@pytest.fixture(scope="module")
def echo_behind_proxy(make_nginx, upstream_echo):
    """As echo_web, with this machine's loopback as the proxy trusted to name the client."""
    nginx = make_nginx(upstream_echo, REAL_IP_FROM="127.0.0.1")
    nginx.start()
    return nginx


@pytest.mark.parametrize("received, sent", [
    ("198.51.100.7", "198.51.100.7, 127.0.0.1"),
    ("203.0.113.9, 198.51.100.7", "203.0.113.9, 198.51.100.7, 127.0.0.1"),
    (None, "127.0.0.1"),
])
def test_behind_a_trusted_proxy_x_forwarded_for_is_appended_to_as_before(echo_behind_proxy, received, sent):
    # realip takes the client from the header; the API still sees the proxy as the last hop.
    headers = {"X-Forwarded-For": received} if received else {}
    assert seen_upstream(echo_behind_proxy, "/api/items", **headers)["header"]("x-forwarded-for") == sent


def test_an_ingress_x_forwarded_proto_https_is_kept(forwarded):
    assert forwarded["header"]("x-forwarded-proto") == "https"


def test_the_clients_request_id_is_forwarded(forwarded):
    assert forwarded["header"]("x-request-id") == "from-client-1"


def test_a_bogus_x_forwarded_proto_is_replaced(echo_web):
    assert seen_upstream(echo_web, "/api/items", **{"X-Forwarded-Proto": "gopher"})["header"]("x-forwarded-proto") == "http"


def test_the_clients_host_does_not_reach_the_api(echo_web, upstream_host):
    assert seen_upstream(echo_web, "/api/items", Host="evil.example")["header"]("host") == upstream_host


def test_nginx_reuses_its_connections_to_the_api(echo_web):
    # One worker, requests one after another: a kept-alive connection serves them all.
    peers = {seen_upstream(echo_web, f"/api/items?n={n}")["peer"] for n in range(20)}
    assert len(peers) < 5, peers


# --- API too slow -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stalled(echo_web):
    return http.request(f"{echo_web.url}/api/stall?seconds={STALL_SECONDS}", timeout=STALL_SECONDS + 10)


def test_a_stalled_api_gets_a_504(stalled):
    assert stalled.status == 504


def test_the_504_is_json(stalled):
    assert stalled.header("Content-Type").startswith("application/json")


def test_the_504_says_the_api_was_too_slow(stalled):
    assert stalled.json() == {"detail": "API did not answer in time"}


def test_the_504_carries_a_request_id(stalled):
    assert GENERATED_ID.fullmatch(stalled.header("X-Request-Id") or "")


def test_the_504_comes_when_the_read_timeout_expires_not_when_the_stall_ends(stalled):
    # Which timer fired, not how fast: after the read timeout, and before the upstream would answer.
    assert READ_TIMEOUT_SECONDS - 0.1 <= stalled.seconds < STALL_SECONDS
