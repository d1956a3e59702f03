"""Fixtures of the web-tier tests: Debian's nginx rendering the image's template, in front of
the real API (or of tests/web/upstream_echo.py where the test must see what nginx sends)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

from support.net import free_port, wait_until
from support.nginx import Nginx
from support.processes import ApiProcess, Service, base_environment
from support import http


@pytest.fixture(scope="module")
def web(make_nginx: Callable[..., Nginx], api: ApiProcess) -> Nginx:
    """nginx on a free port in front of this module's running API."""
    nginx = make_nginx(api.url)
    nginx.start()
    return nginx


@pytest.fixture(scope="module")
def upstream_echo(scratch: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """tests/web/upstream_echo.py on a free port; yields its URL."""
    port = free_port()
    echo = Service("upstream_echo", [sys.executable, str(Path(__file__).with_name("upstream_echo.py")), str(port)],
                   stdout=scratch / f"echo-{port}.log", env=base_environment())
    echo.start()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until("upstream_echo.py to answer", lambda: http.request(url + "/", timeout=2).status == 200)
        yield url
    finally:
        echo.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A screenshot of the page when a browser test fails: artifacts/web/failure-<test>.png."""
    outcome = yield
    report = outcome.get_result()
    browser_module = sys.modules.get("support.browser")
    current = browser_module.Browser.current if browser_module else None
    if report.failed and current is not None and "browser" in item.fixturenames:
        try:
            current.screenshot(f"failure-{item.name}.png".replace("/", "_"))
        except Exception as error:  # the browser itself may be gone
            report.sections.append(("screenshot", f"no screenshot: {error}"))
