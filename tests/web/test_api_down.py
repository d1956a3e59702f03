"""nginx first, the API later: nginx starts and answers JSON 502s while the API does not exist
yet, and reaches it once it is up, without a reload."""

from __future__ import annotations

import re

import pytest

from support import http
from support.net import wait_until

GENERATED_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture(scope="module")
def late_api(make_api):
    return make_api()


@pytest.fixture(scope="module")
def web_before_api(make_nginx, late_api):
    nginx = make_nginx(late_api.url)
    nginx.start()
    return nginx


@pytest.fixture(scope="module")
def while_down(web_before_api):
    """Responses taken before the API has started."""
    return {
        "api": http.request(web_before_api.url + "/api/healthz"),
        "healthz": http.request(web_before_api.url + "/healthz"),
    }


def test_nginx_starts_while_the_api_is_down(web_before_api, while_down):
    assert web_before_api.running


def test_api_down_api_healthz_is_502(while_down):
    assert while_down["api"].status == 502


def test_api_down_502_is_json(while_down):
    assert while_down["api"].header("Content-Type").startswith("application/json")


def test_api_down_502_body_has_detail_api_unavailable(while_down):
    assert while_down["api"].json() == {"detail": "API unavailable"}


def test_api_down_502_carries_a_generated_request_id(while_down):
    assert GENERATED_ID.fullmatch(while_down["api"].header("X-Request-Id") or "")


def test_server_tokens_off_the_server_header_has_no_version(while_down):
    assert while_down["api"].header("Server") == "nginx"


def test_nginx_healthz_answers_200_from_nginx_itself(while_down):
    assert while_down["healthz"].status == 200


def test_nginx_healthz_body_is_status_ok(while_down):
    assert while_down["healthz"].json() == {"status": "ok"}


def test_nginx_healthz_is_json(while_down):
    assert while_down["healthz"].header("Content-Type").startswith("application/json")


def test_nginx_reaches_the_api_once_it_is_up_without_a_reload(web_before_api, late_api, while_down):
    late_api.start()
    wait_until("GET /api/healthz through nginx to answer 200",
               lambda: http.request(web_before_api.url + "/api/healthz").status == 200)
