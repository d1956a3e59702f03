"""Rendering web/templates/default.conf.template exactly as the web image does."""

from __future__ import annotations

import re

import pytest

from support import http
from support.dockerfile import final_stage_env
from support.net import free_port
from support.nginx import IMAGE_ROOT, SETTINGS, TEMPLATE_VARIABLES


@pytest.fixture(scope="module")
def rendered(make_nginx):
    return make_nginx(f"http://127.0.0.1:{free_port()}")


def test_the_rendered_template_passes_nginx_t(rendered):
    result = rendered.config_test()
    assert result.returncode == 0, result.stderr


def test_rendering_leaves_no_variable_unsubstituted(rendered):
    assert "${" not in rendered.rendered


def test_the_template_has_exactly_one_document_root_the_image_serves(rendered):
    roots = [line for line in rendered.rendered.splitlines() if line.strip() == f"root {IMAGE_ROOT};"]
    assert len(roots) == 1


@pytest.mark.parametrize("variable", TEMPLATE_VARIABLES)
def test_the_image_envsubst_filter_admits(variable, repo):
    envsubst_filter = final_stage_env(repo / "web" / "Dockerfile")["NGINX_ENVSUBST_FILTER"]
    assert re.search(envsubst_filter, variable)


def test_the_web_image_sets_a_default_api_read_timeout(repo):
    timeout = final_stage_env(repo / "web" / "Dockerfile").get("API_READ_TIMEOUT", "")
    assert re.fullmatch(r"[0-9]+(ms|s|m|h)?", timeout), f"API_READ_TIMEOUT={timeout!r}"


def test_nginx_t_passes_with_an_upstream_name_that_does_not_resolve(make_nginx):
    # The web container must start before the API's name exists.
    unresolved = make_nginx("http://items-api.invalid:8000")
    result = unresolved.config_test()
    assert result.returncode == 0, result.stderr


# --- The write limit is on in the image -------------------------------------------------------


@pytest.fixture(scope="module")
def image_env(repo):
    return final_stage_env(repo / "web" / "Dockerfile")


def test_the_web_image_limits_writes(image_env):
    assert image_env.get("WRITE_LIMIT") == "on"


def test_the_web_image_sets_a_write_rate_and_burst(image_env):
    assert re.fullmatch(r"[1-9][0-9]*r/[sm]", image_env.get("WRITE_LIMIT_RATE", ""))
    assert re.fullmatch(r"[1-9][0-9]*", image_env.get("WRITE_LIMIT_BURST", ""))


def test_the_web_image_trusts_no_proxy_to_name_the_client(image_env):
    # unix: matches only UNIX-socket peers, and nginx listens on TCP alone.
    assert image_env.get("REAL_IP_FROM") == "unix:"


@pytest.fixture(scope="module")
def with_image_settings(make_nginx, image_env):
    """nginx with every setting as the image has it, in front of a port nothing listens on."""
    nginx = make_nginx(f"http://127.0.0.1:{free_port()}", **{name: image_env[name] for name in SETTINGS})
    nginx.start()
    return nginx


def test_with_the_image_settings_writes_past_the_burst_are_refused(with_image_settings, image_env):
    # The API is not there (502) until the limit answers first (429). Requests are sent until one
    # is refused: however slow this machine, the rate cannot keep up with ten times the burst.
    burst = int(image_env["WRITE_LIMIT_BURST"])
    statuses = []
    while len(statuses) < 10 * (burst + 1) and 429 not in statuses:
        statuses.append(http.request(with_image_settings.url + "/api/items", "POST", json_body={"text": "x"}).status)
    assert statuses[: burst + 1] == [502] * (burst + 1) and statuses[-1] == 429, statuses


def test_with_the_image_settings_reads_are_not_refused(with_image_settings, image_env):
    burst = int(image_env["WRITE_LIMIT_BURST"])
    statuses = {http.request(with_image_settings.url + "/api/items").status for _ in range(3 * (burst + 1))}
    assert statuses == {502}
