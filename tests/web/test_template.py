"""Rendering web/templates/default.conf.template exactly as the web image does."""

from __future__ import annotations

import re

import pytest

from support.dockerfile import final_stage_env
from support.net import free_port
from support.nginx import IMAGE_ROOT, TEMPLATE_VARIABLES


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
