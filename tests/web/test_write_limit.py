"""The per-client limit on writes through /api/ (WRITE_LIMIT: on in the image, off in the other web
tests), here on with a low rate in front of the real API: writes past the burst get a JSON 429
with Retry-After and never reach the API, reads are never limited, another client keeps its own
budget, and the budget comes back with time. Behind a trusted proxy (REAL_IP_FROM) the client is
the last X-Forwarded-For entry, and only that proxy may name it.

Each test writes from its own client address (any 127.x.y.z reaches nginx on loopback), so no
test spends another's budget and each runs alone."""

from __future__ import annotations

import http.client
import itertools
import re
import time

import pytest

from support import http as client_http

RATE_PER_MINUTE = 30
BURST = 3
# What a new client may write at once: one at the rate, plus the burst.
AT_ONCE = BURST + 1
# The time the limit takes to allow one more write.
REFILL_SECONDS = 60 / RATE_PER_MINUTE
TRUSTED_PROXY = "127.0.0.1"
LOW_LIMIT = {"WRITE_LIMIT": "on", "WRITE_LIMIT_RATE": f"{RATE_PER_MINUTE}r/m", "WRITE_LIMIT_BURST": str(BURST)}

_numbers = itertools.count(1)


def new_address(prefix: str) -> str:
    """An address no other test in this run uses: `prefix` (two octets) and two more."""
    number = next(_numbers)
    return f"{prefix}.{number // 250}.{number % 250 + 1}"


@pytest.fixture
def client() -> str:
    # In 127.1.0.0/16, clear of the trusted proxy (127.0.0.1); a new one for every test.
    return new_address("127.1")


@pytest.fixture(scope="module")
def limited(make_nginx, api):
    nginx = make_nginx(api.url, **LOW_LIMIT)
    nginx.start()
    return nginx


@pytest.fixture(scope="module")
def behind_proxy(make_nginx, api):
    """As `limited`, trusting 127.0.0.1 to name the client in X-Forwarded-For."""
    nginx = make_nginx(api.url, **LOW_LIMIT, REAL_IP_FROM=TRUSTED_PROXY)
    nginx.start()
    return nginx


@pytest.fixture(scope="module")
def behind_ingress(make_nginx, api):
    """As `limited`, trusting every peer, as the image is told to behind Container Apps' ingress."""
    nginx = make_nginx(api.url, **LOW_LIMIT, REAL_IP_FROM="0.0.0.0/0")
    nginx.start()
    return nginx


def post(web, source: str, **headers: str) -> client_http.Response:
    return client_http.request(web.url + "/api/items", "POST", json_body={"text": f"from {source}"},
                               headers=headers, source=source)


def spend_budget(web, source: str, **headers: str) -> None:
    """Writes as much as a new client may at once; every one of them must pass."""
    statuses = [post(web, source, **headers).status for _ in range(AT_ONCE)]
    assert statuses == [201] * AT_ONCE, f"a new client's first {AT_ONCE} writes: {statuses}"


# --- Past the burst: a JSON 429 from nginx ----------------------------------------------------


@pytest.fixture(scope="module")
def refusal(limited):
    """The write right after a new client's budget: a 429, which the tests below take apart."""
    source = new_address("127.2")
    spend_budget(limited, source)
    response = post(limited, source)
    assert response.status == 429, f"a write past the burst: {response.status} {response.text[:200]}"
    return response


def test_a_new_client_may_write_its_burst_at_once(limited, client):
    spend_budget(limited, client)


def test_the_429_is_json(refusal):
    assert refusal.header("Content-Type").startswith("application/json")


def test_the_429_has_a_detail_like_the_apis_errors(refusal):
    assert set(refusal.json()) == {"detail"} and refusal.json()["detail"]


def test_the_429_says_when_to_retry(refusal):
    assert refusal.header("Retry-After") == "1"


def test_the_429_is_not_stored_by_caches(refusal):
    assert refusal.header("Cache-Control") == "no-store"


def test_the_429_carries_a_request_id(refusal):
    assert re.fullmatch(r"[0-9a-f]{32}", refusal.header("X-Request-Id") or "")


def test_a_refused_write_never_reaches_the_api(limited, refusal):
    entry = limited.access_entry(refusal.header("X-Request-Id"))
    assert (entry["status"], entry["upstream_addr"]) == (429, "")


@pytest.mark.parametrize("method", ["POST", "PATCH", "DELETE"])
def test_each_kind_of_write_is_counted_and_refused(limited, api, client, method):
    # What the API answers does not matter: a DELETE of an item that is not there (404) counts too.
    item = client_http.request(api.url + "/api/items", "POST", json_body={"text": "to patch"}).json()
    path, answer = {"POST": ("/api/items", 201), "PATCH": (f"/api/items/{item['id']}", 200),
                    "DELETE": ("/api/items/987654321", 404)}[method]
    body = None if method == "DELETE" else {"text": f"{method} from {client}"}
    statuses = [client_http.request(limited.url + path, method, json_body=body, source=client).status
                for _ in range(AT_ONCE + 1)]
    assert statuses == [answer] * AT_ONCE + [429]


# --- Reads are never limited ------------------------------------------------------------------


def test_reads_pass_when_the_clients_writes_are_refused(limited, client):
    spend_budget(limited, client)
    assert post(limited, client).status == 429
    statuses = {client_http.request(limited.url + "/api/items?limit=1", source=client).status for _ in range(30)}
    assert statuses == {200}


def test_the_change_stream_opens_when_the_clients_writes_are_refused(limited, client):
    spend_budget(limited, client)
    assert post(limited, client).status == 429
    connection = http.client.HTTPConnection("127.0.0.1", limited.port, timeout=5, source_address=(client, 0))
    try:
        connection.request("GET", "/api/items/events", headers={"Accept": "text/event-stream"})
        response = connection.getresponse()
        assert (response.status, response.getheader("Content-Type")) == (200, "text/event-stream")
    finally:
        connection.close()


def test_reads_do_not_spend_the_write_budget(limited, client):
    for _ in range(30):
        assert client_http.request(limited.url + "/api/items?limit=1", source=client).status == 200
    spend_budget(limited, client)


# --- Other clients, and time ------------------------------------------------------------------


def test_another_client_writes_while_one_is_refused(limited, client):
    spend_budget(limited, client)
    assert post(limited, client).status == 429
    assert post(limited, new_address("127.1")).status == 201


def test_after_waiting_the_client_writes_again(limited, client):
    spend_budget(limited, client)
    assert post(limited, client).status == 429
    time.sleep(REFILL_SECONDS + 0.5)
    assert post(limited, client).status == 201


# --- Behind a trusted proxy (REAL_IP_FROM) ----------------------------------------------------


def test_behind_the_trusted_proxy_each_forwarded_client_has_its_own_budget(behind_proxy):
    first, second = new_address("198.51"), new_address("198.51")
    spend_budget(behind_proxy, TRUSTED_PROXY, **{"X-Forwarded-For": first})
    assert post(behind_proxy, TRUSTED_PROXY, **{"X-Forwarded-For": first}).status == 429
    assert post(behind_proxy, TRUSTED_PROXY, **{"X-Forwarded-For": second}).status == 201


def test_only_the_last_forwarded_address_names_the_client(behind_proxy):
    # Entries left of the proxy's own come from the client, which may write anything there.
    client = new_address("198.51")
    statuses = [post(behind_proxy, TRUSTED_PROXY, **{"X-Forwarded-For": f"{new_address('203.0')}, {client}"}).status
                for _ in range(AT_ONCE + 1)]
    assert statuses == [201] * AT_ONCE + [429]


def test_trusting_every_peer_still_only_the_last_forwarded_address_names_the_client(behind_ingress, client):
    # Every entry comes from a trusted peer here: only the last one is the ingress's own.
    forwarded = new_address("198.51")
    statuses = [post(behind_ingress, client, **{"X-Forwarded-For": f"{new_address('203.0')}, {forwarded}"}).status
                for _ in range(AT_ONCE + 1)]
    assert statuses == [201] * AT_ONCE + [429]


def test_a_peer_that_is_not_the_trusted_proxy_cannot_name_its_client(behind_proxy, client):
    statuses = [post(behind_proxy, client, **{"X-Forwarded-For": new_address("198.51")}).status
                for _ in range(AT_ONCE + 1)]
    assert statuses == [201] * AT_ONCE + [429]


def test_the_access_log_shows_the_forwarded_client(behind_proxy):
    forwarded = new_address("198.51")
    response = post(behind_proxy, TRUSTED_PROXY, **{"X-Forwarded-For": forwarded})
    assert behind_proxy.access_entry(response.header("X-Request-Id"))["remote_addr"] == forwarded
