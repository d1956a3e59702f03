"""The page's files through nginx: routing, content types, caching, gzip and security headers.
The page's scripts are ES modules, so each one is also checked as the API serves it (STATIC_DIR)."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest

from support import http

CSP_DIRECTIVES = ["default-src 'self'", "frame-ancestors 'none'", "base-uri 'self'", "form-action 'self'"]
STATIC = Path(__file__).resolve().parents[2] / "web" / "static"
SCRIPTS = sorted(path.name for path in STATIC.glob("*.js"))
# `import ... from "./x.js"`, `export ... from "./x.js"` and `import "./x.js"`.
IMPORT = re.compile(r"""^\s*(?:import|export)\b[^;]*?["'](\./[^"']+)["']""", re.MULTILINE)


@pytest.fixture(scope="module")
def api(make_api, html_root):
    """This module's API, which also serves the page itself (STATIC_DIR), as with `cargo run`."""
    process = make_api(STATIC_DIR=str(html_root))
    process.start()
    return process


@pytest.fixture(scope="module")
def get(web):
    def get(path: str, **headers: str) -> http.Response:
        return http.request(web.url + path, headers={k.replace("_", "-"): v for k, v in headers.items()})

    return get


@pytest.fixture(scope="module")
def index(get):
    return get("/")


@pytest.fixture(scope="module")
def app_js(get):
    return get("/app.js")


def test_get_root_is_200(index):
    assert index.status == 200


def test_get_root_is_html_in_utf8(index):
    assert index.header("Content-Type") == "text/html; charset=utf-8"


def test_get_root_serves_web_static_index_html(index, repo):
    assert index.body == (repo / "web" / "static" / "index.html").read_bytes()


def test_index_html_is_revalidated_every_time(index):
    assert index.header("Cache-Control") == "no-cache"


def test_index_html_has_an_etag_for_revalidation(index):
    assert re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+"', index.header("ETag") or "")


@pytest.mark.parametrize("directive", CSP_DIRECTIVES)
def test_the_content_security_policy_has(index, directive):
    directives = [part.strip() for part in index.header("Content-Security-Policy").split(";")]
    assert directive in directives


def test_the_content_security_policy_allows_nothing_unsafe(index):
    assert "unsafe-" not in index.header("Content-Security-Policy")


def test_x_content_type_options_is_nosniff(index):
    assert index.header("X-Content-Type-Options") == "nosniff"


def test_x_frame_options_is_deny(index):
    assert index.header("X-Frame-Options") == "DENY"


def test_referrer_policy_is_no_referrer(index):
    assert index.header("Referrer-Policy") == "no-referrer"


def test_permissions_policy_denies_the_camera(index):
    assert "camera=()" in index.header("Permissions-Policy")


def test_security_headers_are_not_doubled(index):
    assert len(index.header_values("Content-Security-Policy")) == 1


def test_index_html_by_name_is_200(get):
    assert get("/index.html").status == 200


def test_index_html_by_name_is_revalidated_every_time(get):
    assert get("/index.html").header("Cache-Control") == "no-cache"


def test_app_js_is_200(app_js):
    assert app_js.status == 200


def test_app_js_has_a_javascript_type(app_js):
    assert re.match(r"(application|text)/javascript", app_js.header("Content-Type"))


def test_app_js_has_a_short_max_age_then_revalidates(app_js):
    assert app_js.header("Cache-Control") == "public, max-age=600"


def test_app_js_carries_the_security_headers_too(app_js):
    assert app_js.header("X-Content-Type-Options") == "nosniff"


def test_app_js_if_none_match_gives_304(get, app_js):
    assert get("/app.js", If_None_Match=app_js.header("ETag")).status == 304


def test_the_304_repeats_cache_control(get, app_js):
    assert get("/app.js", If_None_Match=app_js.header("ETag")).header("Cache-Control") == "public, max-age=600"


def test_app_css_is_gzipped(get):
    assert get("/app.css", Accept_Encoding="gzip").header("Content-Encoding") == "gzip"


def test_gzip_sets_vary_accept_encoding(get):
    assert get("/app.css", Accept_Encoding="gzip").header("Vary") == "Accept-Encoding"


def test_gzipped_app_css_decompresses_to_the_file(get, repo):
    body = get("/app.css", Accept_Encoding="gzip").body
    assert gzip.decompress(body) == (repo / "web" / "static" / "app.css").read_bytes()


def test_app_js_is_gzipped(get):
    assert get("/app.js", Accept_Encoding="gzip").header("Content-Encoding") == "gzip"


def test_favicon_svg_is_svg(get):
    assert get("/favicon.svg", Accept_Encoding="gzip").header("Content-Type").startswith("image/svg+xml")


def test_favicon_svg_is_cached_for_a_day(get):
    assert get("/favicon.svg").header("Cache-Control") == "public, max-age=86400"


def test_an_unknown_static_path_is_404_with_no_spa_fallback(get):
    assert get("/no-such-file.js").status == 404


def test_the_404_still_carries_nosniff(get):
    assert get("/no-such-file.js").header("X-Content-Type-Options") == "nosniff"


def imports_of(name: str) -> list[str]:
    return [specifier.removeprefix("./") for specifier in IMPORT.findall((STATIC / name).read_text())]


def test_index_html_loads_app_js_as_a_module(index):
    assert '<script type="module" src="app.js"></script>' in index.text


def test_every_module_import_names_a_script_in_web_static():
    missing = {name: target for name in SCRIPTS for target in imports_of(name) if target not in SCRIPTS}
    assert missing == {}


def test_every_script_in_web_static_is_loaded_by_app_js():
    loaded, todo = set(), ["app.js"]
    while todo:
        name = todo.pop()
        if name not in loaded:
            loaded.add(name)
            todo += imports_of(name)
    assert sorted(loaded) == SCRIPTS


@pytest.fixture(scope="module", params=["nginx", "api"])
def page_server(request, web, api) -> str:
    """Where the page's files come from: nginx, or the API itself."""
    return web.url if request.param == "nginx" else api.url


# A module script is refused unless it comes with a JavaScript type (nosniff holds), so each one
# is checked, from either server.
@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_is_served_as_javascript(page_server, script):
    response = http.request(f"{page_server}/{script}")
    assert response.status == 200
    assert re.match(r"(application|text)/javascript", response.header("Content-Type"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_has_a_short_max_age_then_revalidates(page_server, script):
    response = http.request(f"{page_server}/{script}")
    assert response.header("Cache-Control") == "public, max-age=600"
    again = http.request(f"{page_server}/{script}", headers={"If-Modified-Since": response.header("Last-Modified")})
    assert (again.status, again.header("Cache-Control")) == (304, "public, max-age=600")


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_is_gzipped_and_decompresses_to_the_file(page_server, script):
    response = http.request(f"{page_server}/{script}", headers={"Accept-Encoding": "gzip"})
    assert response.header("Content-Encoding") == "gzip"
    assert gzip.decompress(response.body) == (STATIC / script).read_bytes()


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_carries_nosniff_and_the_content_security_policy(page_server, script):
    response = http.request(f"{page_server}/{script}")
    assert response.header("X-Content-Type-Options") == "nosniff"
    assert "default-src 'self'" in response.header("Content-Security-Policy")
