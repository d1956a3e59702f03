"""/api/ through nginx to the real API: status codes and bodies pass through, request ids are
kept, generated, sanitised and logged, and the body limit stops oversized requests at nginx."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from support import http
from support.net import wait_until

GENERATED_ID = re.compile(r"[0-9a-f]{32}")
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def call(web):
    def call(method: str, path: str, **kwargs) -> http.Response:
        return http.request(web.url + path, method, **kwargs)

    return call


@pytest.fixture(scope="module")
def created(call):
    return call("POST", "/api/items", json_body={"text": "  added through nginx  "})


def test_api_healthz_through_nginx_is_200(call):
    assert call("GET", "/api/healthz").status == 200


def test_api_healthz_through_nginx_is_status_ok(call):
    assert call("GET", "/api/healthz").json() == {"status": "ok"}


def test_post_api_items_through_nginx_is_201(created):
    assert created.status == 201


def test_the_api_trimmed_the_text(created):
    assert created.json()["text"] == "added through nginx"


def test_the_list_through_nginx_shows_the_new_item_first(call, created):
    assert call("GET", "/api/items?limit=5").json()[0]["id"] == created.json()["id"]


def test_the_apis_own_400_passes_through(call):
    assert call("POST", "/api/items", json_body={"text": "   "}).status == 400


def test_the_apis_400_detail_is_intact(call):
    assert "empty" in call("POST", "/api/items", json_body={"text": "   "}).json()["detail"]


def test_the_apis_own_422_passes_through(call):
    assert call("POST", "/api/items", body=b'{"text":', headers={"Content-Type": "application/json"}).status == 422


def test_the_apis_422_keeps_its_detail_list(call):
    response = call("POST", "/api/items", body=b'{"text":', headers={"Content-Type": "application/json"})
    assert isinstance(response.json()["detail"], list)


def test_the_apis_own_404_passes_through(call):
    assert call("GET", "/api/items/987654321").status == 404


def test_the_apis_404_detail_is_intact(call):
    assert call("GET", "/api/items/987654321").json() == {"detail": "Item not found"}


def test_the_openapi_document_is_served_through_nginx(call):
    assert call("GET", "/api/openapi.json").status == 200


def test_json_from_the_api_is_gzipped(call):
    assert call("GET", "/api/openapi.json", headers={"Accept-Encoding": "gzip"}).header("Content-Encoding") == "gzip"


# --- Request ids and the access log -------------------------------------------------------


@pytest.fixture(scope="module")
def client_id(call):
    request_id = f"webtest-{secrets.token_hex(6)}"
    return request_id, call("GET", "/api/items?limit=1", headers={"X-Request-Id": request_id})


@pytest.fixture(scope="module")
def generated(call):
    return call("GET", "/api/healthz")


def test_the_clients_request_id_reaches_the_api_and_comes_back(client_id):
    request_id, response = client_id
    assert response.header("X-Request-Id") == request_id


def test_the_access_log_has_the_request_id(web, client_id):
    assert web.access_entry(client_id[0])


def test_the_access_log_has_the_upstream_status(web, client_id):
    assert web.access_entry(client_id[0])["upstream_status"] == "200"


def test_the_access_log_has_the_upstream_response_time(web, client_id):
    assert re.fullmatch(r"[0-9]+\.[0-9]{3}", web.access_entry(client_id[0])["upstream_response_time"])


def test_the_api_logged_the_forwarded_request_id(api, client_id):
    # The API writes its log in batches: the line may come a moment after the response.
    assert wait_until("the API's log line", lambda: client_id[0] in api.stdout_path.read_text(), timeout=5)


def test_without_one_nginx_generates_the_request_id(generated):
    assert GENERATED_ID.fullmatch(generated.header("X-Request-Id") or "")


def test_the_generated_request_id_is_the_one_logged(web, generated):
    assert web.access_entry(generated.header("X-Request-Id"))


def test_a_malformed_request_id_is_replaced(call):
    response = call("GET", "/api/healthz", headers={"X-Request-Id": 'has spaces and "quotes"'})
    assert GENERATED_ID.fullmatch(response.header("X-Request-Id") or "")


# --- Body limit (1 MiB, as the API's MAX_BODY_BYTES) --------------------------------------


@pytest.fixture(scope="module")
def over_limit(call):
    return call("POST", "/api/items", body=b"a" * (MIB + 1), headers={"Content-Type": "application/json"})


@pytest.fixture(scope="module")
def at_limit(call):
    request_id = f"webtest-limit-{secrets.token_hex(4)}"
    body = b'{"text":"' + b"b" * (MIB - 11) + b'"}'
    assert len(body) == MIB
    response = call("POST", "/api/items", body=body,
                    headers={"Content-Type": "application/json", "X-Request-Id": request_id})
    yield request_id, response
    if response.status == 201:
        call("DELETE", f"/api/items/{response.json()['id']}")


def test_one_mib_plus_one_byte_is_413_from_nginx(over_limit):
    assert over_limit.status == 413


def test_the_413_is_json(over_limit):
    assert over_limit.header("Content-Type").startswith("application/json")


def test_the_413_detail_names_the_limit(over_limit):
    assert "1 MiB" in over_limit.json()["detail"]


def test_exactly_one_mib_is_passed_on_to_the_api(web, at_limit):
    request_id, _ = at_limit
    assert re.fullmatch(r"[0-9]{3}", web.access_entry(request_id)["upstream_status"])


def test_every_access_log_line_is_json(web, client_id, generated, over_limit, at_limit):
    lines = [line for line in web.access_log.read_text().splitlines() if line.strip()]
    assert len(web.access_entries()) == len(lines) > 0


def test_the_smoke_command_passes_through_nginx_in_front_of_the_api(web):
    # The same command CI and CD run, here without Docker.
    smoke = Path(__file__).resolve().parent.parent / "smoke.py"
    done = subprocess.run([sys.executable, str(smoke), web.url], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
