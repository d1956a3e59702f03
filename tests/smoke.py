#!/usr/bin/env python3
"""Smoke test of a running stack, through its web tier only (Nginx in front of the API).

    python3 tests/smoke.py http://127.0.0.1:8080

The one smoke definition: CI's Compose job, the CD workflow (against the public URL) and the
local Docker tests (tests/docker) all run the STEPS below. It proves the Nginx template was
rendered (its /healthz and headers; the stock config has neither), the proxy reaches the API,
and the API works end to end: health, add an item, see it in the list, the page, the API docs
and the JSON error shape. The item it adds is deleted at the end. Standard library only.
Stops at the first failed check. Exit 0: all passed; 1: a check failed; 2: bad usage.

Environment (all optional):
  SMOKE_WAIT_SECS=60      wait this long for GET /healthz to answer 200 before the checks
  SMOKE_MAX_TIME=10       timeout of each request, in seconds
  SMOKE_EXPECT_VERSION=   when set, /api/health must report exactly this version
  SMOKE_KEEP_ITEM=0       1: keep the item the test adds
"""

from __future__ import annotations

import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urljoin, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import http  # noqa: E402 (after the path set-up above)
from support.net import wait_until  # noqa: E402


@dataclass(frozen=True)
class Var:
    """A value known only while the smoke test runs (the request id, the new item's id...)."""

    name: str


def _resolve(value: Any, variables: dict[str, Any]) -> Any:
    if isinstance(value, Var):
        return variables[value.name]
    if isinstance(value, str):
        return value.format(**variables)
    if isinstance(value, dict):
        return {key: _resolve(item, variables) for key, item in value.items()}
    return value


def _json_at(document: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        document = document[key]
    return document


# --- What a check can expect of a response ------------------------------------------------
# Each returns (description, test); test(response, variables) returns "" or what went wrong.

Expectation = tuple[str, Callable[[http.Response, dict[str, Any]], str]]


def status(code: int) -> Expectation:
    return f"status {code}", lambda r, v: "" if r.status == code else f"expected HTTP {code}, got {r.status}"


def header_starts(name: str, prefix: str) -> Expectation:
    def test(r: http.Response, v: dict[str, Any]) -> str:
        got = r.header(name)
        return "" if got is not None and got.lower().startswith(prefix.lower()) else f"{name}: {got!r}"

    return f"{name} starts with {prefix}", test


def header_equals(name: str, value: Var, says: str) -> Expectation:
    def test(r: http.Response, v: dict[str, Any]) -> str:
        got, wanted = r.header(name), _resolve(value, v)
        return "" if got == wanted else f"{name}: {got!r}, expected {wanted!r}"

    return says, test


def header_present(name: str) -> Expectation:
    return f"has a {name} header", lambda r, v: "" if r.header(name) else f"no {name} header"


def json_equals(path: tuple[Any, ...], value: Any, when: str | None = None, says: str | None = None) -> Expectation:

    def test(r: http.Response, v: dict[str, Any]) -> str:
        if when is not None and not v.get(when):
            return "skip"
        wanted = _resolve(value, v)
        try:
            got = _json_at(r.json(), path)
        except (ValueError, KeyError, IndexError, TypeError) as error:
            return f"no JSON value at {'.'.join(map(str, path))}: {error}"
        return "" if got == wanted else f"{'.'.join(map(str, path))} is {got!r}, expected {wanted!r}"

    return says or f"JSON {'.'.join(map(str, path))} is {value!r}", test


def json_is_integer(path: tuple[Any, ...]) -> Expectation:
    def test(r: http.Response, v: dict[str, Any]) -> str:
        got = _json_at(r.json_or_none() or {}, path) if isinstance(r.json_or_none(), dict) else None
        return "" if isinstance(got, int) and not isinstance(got, bool) else f"not an integer: {got!r}"

    return f"JSON {'.'.join(map(str, path))} is an integer", test


def json_has(path: tuple[Any, ...]) -> Expectation:
    def test(r: http.Response, v: dict[str, Any]) -> str:
        try:
            _json_at(r.json(), path)
            return ""
        except (ValueError, KeyError, IndexError, TypeError):
            return f"no JSON value at {'.'.join(map(str, path))}"

    return f"JSON has {'.'.join(map(str, path))}", test


def list_has_item(key: str, value: Any) -> Expectation:
    def test(r: http.Response, v: dict[str, Any]) -> str:
        wanted = _resolve(value, v)
        items = r.json_or_none()
        if not isinstance(items, list):
            return "the body is not a JSON list"
        return "" if any(isinstance(i, dict) and i.get(key) == wanted for i in items) else f"no item with {key} {wanted!r}"

    return f"lists an item whose {key} is the new item's", test


def body_contains(text: str, ignore_case: bool = False) -> Expectation:
    def test(r: http.Response, v: dict[str, Any]) -> str:
        body = r.text.lower() if ignore_case else r.text
        return "" if (text.lower() if ignore_case else text) in body else f"the body does not contain {text!r}"

    return f"body contains {text!r}", test


# --- The smoke test -----------------------------------------------------------------------


@dataclass
class Step:
    name: str
    method: str
    path: str
    expect: list[Expectation]
    body: Any = None
    capture: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    follow_redirect: bool = False
    unless: str | None = None  # an option that, when true, skips the step
    prints_build: bool = False  # print the build the API reports (version, date, revision)


STEPS = [
    Step("GET /healthz (the rendered template's own endpoint)", "GET", "/healthz",
         [status(200), json_equals(("status",), "ok")]),
    Step("GET /api/healthz through the proxy", "GET", "/api/healthz",
         [status(200), json_equals(("status",), "ok"), header_starts("Content-Type", "application/json"),
          header_equals("X-Request-Id", Var("request_id"), "X-Request-Id echoes the request's id")]),
    Step("GET /api/health", "GET", "/api/health",
         [status(200), json_equals(("status",), "ok"), json_equals(("database", "writable"), True),
          json_equals(("version",), Var("expect_version"), when="expect_version",
                      says="JSON version is SMOKE_EXPECT_VERSION (when set)")], prints_build=True),
    Step("POST /api/items", "POST", "/api/items",
         [status(201), json_equals(("text",), Var("text"), says="JSON text is the text, trimmed"),
          json_is_integer(("id",))],
         body={"text": "  {text}  "}, capture={"item_id": ("id",)}),
    Step("GET /api/items?limit=100", "GET", "/api/items?limit=100",
         [status(200), list_has_item("id", Var("item_id")), list_has_item("text", Var("text"))]),
    Step("GET /api/items/<new id>", "GET", "/api/items/{item_id}",
         [status(200), json_equals(("text",), Var("text"), says="JSON text is the new item's")]),
    Step("POST /api/items with blank text", "POST", "/api/items",
         [status(400), json_equals(("detail",), "text must not be empty")], body={"text": "   "}),
    Step("GET /api/no-such-route", "GET", "/api/no-such-route",
         [status(404), json_equals(("detail",), "Not Found"), header_starts("Content-Type", "application/json")]),
    Step("GET / (the page)", "GET", "/",
         [status(200), header_starts("Content-Type", "text/html"), body_contains("app.js"),
          body_contains("app.css"), header_present("Content-Security-Policy")]),
    Step("GET /app.js", "GET", "/app.js", [status(200)]),
    Step("GET /app.css", "GET", "/app.css", [status(200)]),
    Step("GET /api/openapi.json", "GET", "/api/openapi.json",
         [status(200), json_has(("openapi",)), json_has(("paths", "/api/items"))]),
    Step("GET /api/docs (Swagger UI, one same-origin redirect followed)", "GET", "/api/docs",
         [status(200), body_contains("swagger", ignore_case=True)], follow_redirect=True),
    Step("DELETE /api/items/<new id>", "DELETE", "/api/items/{item_id}", [status(204)], unless="keep_item"),
    Step("GET /api/items/<new id> after the delete", "GET", "/api/items/{item_id}",
         [status(404), json_equals(("detail",), "Item not found")], unless="keep_item"),
]
WAIT_CHECK = "the web tier answers GET /healthz with 200 within SMOKE_WAIT_SECS"


def check_names() -> list[str]:
    """Every check, in order: the names the results and the pytest ids use."""
    return [WAIT_CHECK] + [f"{step.name}: {description}" for step in STEPS for description, _ in step.expect]


@dataclass
class Outcome:
    name: str
    status: str  # passed, failed, skipped, not run
    detail: str = ""


def run(base_url: str, expect_version: str | None = None, keep_item: bool = False,
        wait_secs: float = 60, max_time: float = 10) -> Iterator[Outcome]:
    """Runs every check in order; after the first failure the rest are reported as not run."""
    base_url = base_url.rstrip("/")
    request_id = f"smoke-{int(time.time())}-{random.randrange(10**6)}"
    variables: dict[str, Any] = {
        "request_id": request_id, "text": f"smoke {request_id}", "expect_version": expect_version or "",
        "keep_item": keep_item,
    }
    names = iter(check_names())
    try:
        wait_until("GET /healthz to answer 200",
                   lambda: http.request(base_url + "/healthz", timeout=3).status == 200,
                   timeout=wait_secs, interval=1)
        yield Outcome(next(names), "passed")
    except TimeoutError as error:
        yield Outcome(next(names), "failed", str(error))
        yield from (Outcome(name, "not run", "an earlier check failed") for name in names)
        return

    for step in STEPS:
        if step.unless and variables.get(step.unless):
            for _ in step.expect:
                yield Outcome(next(names), "skipped", f"{step.unless} is set")
            continue
        url = base_url + step.path.format(**variables)
        try:
            response: http.Response | None = _send(step, url, variables, max_time)
            problems = [test(response, variables) for _, test in step.expect]
        except OSError as error:
            response = None
            problems = [f"{step.method} {url}: no HTTP answer ({error})"] * len(step.expect)
        for problem in problems:
            name = next(names)
            if problem == "skip":
                yield Outcome(name, "skipped", "not requested")
            elif problem:
                body = f"; body: {response.text[:400]}" if response is not None else ""
                yield Outcome(name, "failed", problem + body)
                yield from (Outcome(rest, "not run", "an earlier check failed") for rest in names)
                return
            else:
                yield Outcome(name, "passed")
        assert response is not None
        for variable, path in step.capture.items():
            variables[variable] = _json_at(response.json(), path)
        if step.prints_build:
            health = response.json_or_none() or {}
            database = health.get("database") or {}
            print(f"    version={health.get('version')} build_date={health.get('build_date')} "
                  f"vcs_ref={health.get('vcs_ref')} environment={health.get('environment')} "
                  f"journal_mode={database.get('journal_mode')}", flush=True)


def _send(step: Step, url: str, variables: dict[str, Any], max_time: float) -> http.Response:
    headers = {"X-Request-Id": variables["request_id"]}
    body = _resolve(step.body, variables) if step.body is not None else None
    response = http.request(url, step.method, headers=headers, json_body=body, timeout=max_time)
    if step.follow_redirect and response.status in (301, 302, 303, 307, 308):
        target = urljoin(url, response.header("Location") or "")
        if urlsplit(target)[:2] != urlsplit(url)[:2]:
            raise OSError(f"redirect to another origin: {target}")
        print(f"    {step.path} redirects to {urlsplit(target).path}", flush=True)
        response = http.request(target, "GET", headers=headers, timeout=max_time)
    return response


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1]:
        print(f"usage: {argv[0]} <base-url>   e.g. {argv[0]} http://127.0.0.1:8080", file=sys.stderr)
        return 2
    counts = {"passed": 0, "failed": 0, "skipped": 0, "not run": 0}
    outcomes = run(
        argv[1],
        expect_version=os.environ.get("SMOKE_EXPECT_VERSION") or None,
        keep_item=os.environ.get("SMOKE_KEEP_ITEM") == "1",
        wait_secs=float(os.environ.get("SMOKE_WAIT_SECS", "60")),
        max_time=float(os.environ.get("SMOKE_MAX_TIME", "10")),
    )
    labels = {"passed": "ok  ", "failed": "FAIL", "skipped": "skip", "not run": "----"}
    for outcome in outcomes:
        counts[outcome.status] += 1
        detail = f"\n         {outcome.detail}" if outcome.status == "failed" else ""
        print(f"    {labels[outcome.status]} {outcome.name}{detail}", flush=True)
    print(f"smoke: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped "
          f"({counts['not run']} not run) against {argv[1]}")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
