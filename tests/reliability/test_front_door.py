"""A thousand clients at once through the web tier (the image's nginx configuration and
template in front of the API): every one is answered, none is dropped."""

from __future__ import annotations

import re
import subprocess

import pytest

from support.tools import require_tool

CLIENTS = 1000


@pytest.fixture(scope="module")
def through_nginx(make_nginx, api, figure):
    wrk = require_tool("wrk", "apt-get install wrk")
    nginx = make_nginx(api.url)
    nginx.start()
    done = subprocess.run([wrk, "-t2", f"-c{CLIENTS}", "-d10s", "--timeout", "10s", nginx.url + "/api/healthz"],
                          capture_output=True, text=True, timeout=120)
    requests = re.search(r"(\d+) requests in", done.stdout)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", done.stdout)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", done.stdout)
    result = {"requests": int(requests.group(1)) if requests else 0,
              "errors": sum(int(n) for n in errors.groups()) if errors else 0,
              "non_2xx": int(non_2xx.group(1)) if non_2xx else 0, "output": done.stdout}
    figure(f"{CLIENTS} clients through nginx [{api.database.backend}]",
           f"{result['requests']} requests, {result['errors']} socket errors, {result['non_2xx']} non-2xx")
    return result


def test_a_thousand_clients_through_nginx_get_answers(through_nginx):
    assert through_nginx["requests"] > 0, through_nginx["output"]


def test_a_thousand_clients_through_nginx_lose_no_connection(through_nginx):
    assert through_nginx["errors"] == 0, through_nginx["output"]


def test_a_thousand_clients_through_nginx_get_no_error_status(through_nginx):
    assert through_nginx["non_2xx"] == 0, through_nginx["output"]
