"""The API stops: nginx answers JSON 502s and keeps serving the page; the API comes back on the
same port: nginx recovers by itself and the data is still there."""

from __future__ import annotations

import pytest

from support import http
from support.net import wait_until


@pytest.fixture(scope="module")
def kept_item(web):
    response = http.request(web.url + "/api/items", "POST", json_body={"text": "kept across the outage"})
    assert response.status == 201
    return response.json()


@pytest.fixture(scope="module")
def during_outage(web, api, kept_item):
    api.stop()
    return {
        "api": http.request(web.url + "/api/items"),
        "page": http.request(web.url + "/"),
        "healthz": http.request(web.url + "/healthz"),
    }


@pytest.fixture(scope="module")
def after_restart(web, api, during_outage):
    api.start()
    return wait_until("GET /api/healthz through nginx to answer 200 again",
                      lambda: http.request(web.url + "/api/healthz").status == 200)


def test_api_stopped_api_items_is_502(during_outage):
    assert during_outage["api"].status == 502


def test_api_stopped_the_502_is_json(during_outage):
    assert during_outage["api"].header("Content-Type") == "application/json"


def test_api_stopped_the_502_says_api_unavailable(during_outage):
    assert during_outage["api"].json() == {"detail": "API unavailable"}


def test_api_stopped_the_502_is_not_cached(during_outage):
    assert during_outage["api"].header("Cache-Control") == "no-store"


def test_api_stopped_the_page_still_loads(during_outage):
    assert during_outage["page"].status == 200


def test_api_stopped_nginx_healthz_is_still_200(during_outage):
    assert during_outage["healthz"].status == 200


def test_nginx_recovers_without_a_reload_when_the_api_restarts_on_the_same_port(after_restart):
    assert after_restart


def test_an_item_from_before_the_outage_is_still_there(web, kept_item, after_restart):
    assert http.request(f"{web.url}/api/items/{kept_item['id']}").status == 200


def test_an_item_from_before_the_outage_keeps_its_text(web, kept_item, after_restart):
    assert http.request(f"{web.url}/api/items/{kept_item['id']}").json()["text"] == "kept across the outage"
