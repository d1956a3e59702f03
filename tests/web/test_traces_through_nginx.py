"""Traces end to end through nginx: the API exports OpenTelemetry spans over OTLP/HTTP to a real
receiver (decoded with opentelemetry-proto), continuing the trace of a caller's `traceparent` that
nginx passed on; the API's and nginx's access lines name the same trace."""

from __future__ import annotations

import gzip
import json
import threading
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

import pytest

from support import http
from support.net import wait_until
from support.processes import ApiProcess

trace_service_pb2 = pytest.importorskip(
    "opentelemetry.proto.collector.trace.v1.trace_service_pb2",
    reason="opentelemetry-proto: .venv/bin/pip install -r .ci/requirements.txt")
from opentelemetry.proto.trace.v1.trace_pb2 import Span  # noqa: E402 (after the skip above)

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"
DB_SYSTEM = {"sqlite": "sqlite", "postgres": "postgresql"}
# Spans go out every 100 ms (OTEL_BSP_SCHEDULE_DELAY below); this is the bound on waiting for them.
SPAN_WAIT_SECONDS = 5.0


@dataclass
class ReceivedSpan:
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    resource: dict[str, Any]


def attribute_values(attributes) -> dict[str, Any]:
    """OTLP KeyValues as a plain dict (string, int, double or bool values; others as their text)."""
    values: dict[str, Any] = {}
    for attribute in attributes:
        which = attribute.value.WhichOneof("value")
        values[attribute.key] = getattr(attribute.value, which) if which else None
    return values


class OtlpReceiver:
    """An OTLP/HTTP trace receiver on a free loopback port: POST /v1/traces with a protobuf
    ExportTraceServiceRequest, answered with an empty ExportTraceServiceResponse. It keeps every
    span, and every request it could not take (wrong path, content type or body)."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.refused: list[str] = []
        self.exports = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                content_type = self.headers.get("Content-Type")
                if self.path != "/v1/traces" or content_type != "application/x-protobuf":
                    receiver.refuse(f"POST {self.path} ({content_type})")
                    self.answer(404 if self.path != "/v1/traces" else 415, b"")
                    return
                try:
                    request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                except Exception as error:  # protobuf's DecodeError, or anything a bad body raises
                    receiver.refuse(f"undecodable body of {len(body)} bytes: {error}")
                    self.answer(400, b"")
                    return
                receiver.keep(request)
                self.answer(200, trace_service_pb2.ExportTraceServiceResponse().SerializeToString())

            def answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the assertions say what was received

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="otlp-receiver", daemon=True)

    def refuse(self, what: str) -> None:
        with self.lock:
            self.refused.append(what)

    def keep(self, request) -> None:
        spans = []
        for resource_spans in request.resource_spans:
            resource = attribute_values(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(ReceivedSpan(span.name, span.kind, span.trace_id.hex(), span.span_id.hex(),
                                              span.parent_span_id.hex(), attribute_values(span.attributes),
                                              resource))
        with self.lock:
            self.exports += 1
            self.spans.extend(spans)

    def received(self) -> list[ReceivedSpan]:
        with self.lock:
            return list(self.spans)

    def wait_for(self, what: str, match: Callable[[ReceivedSpan], bool]) -> ReceivedSpan:
        """The one span `match` picks, waiting at most SPAN_WAIT_SECONDS for it."""
        def found() -> list[ReceivedSpan]:
            return [span for span in self.received() if match(span)]

        try:
            matches = wait_until(what, found, timeout=SPAN_WAIT_SECONDS, interval=0.05)
        except TimeoutError as error:
            seen = [(span.name, span.trace_id, span.attributes.get("http.request.id")) for span in self.received()]
            raise AssertionError(f"{error}; received {seen}, refused {self.refused}") from None
        assert len(matches) == 1, f"{len(matches)} spans for {what}: {matches}"
        return matches[0]

    def __enter__(self) -> "OtlpReceiver":
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def receiver(api_database) -> Iterator[OtlpReceiver]:
    """One receiver per backend (it depends on the database so each backend's spans are its own);
    set up before the API and so stopped after it: the API's flush at SIGTERM still lands."""
    with OtlpReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def api(receiver: OtlpReceiver, make_api: Callable[..., ApiProcess]) -> ApiProcess:
    """This module's API, exporting its spans to the receiver every 100 ms."""
    process = make_api(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, OTEL_BSP_SCHEDULE_DELAY="100")
    process.start()
    return process


def api_access_line(api: ApiProcess, request_id: str) -> dict[str, Any]:
    """The API's JSON access line of one request (it may land just after the answer)."""
    def find() -> dict[str, Any] | None:
        for line in api.stdout_path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("target") == "items_api::access" and entry.get("request_id") == request_id:
                return entry
        return None

    return wait_until(f"the API's access line of request {request_id}", find, timeout=5, interval=0.05)


def post_item(web, request_id: str, **headers: str) -> http.Response:
    response = http.request(web.url + "/api/items", "POST", json_body={"text": f"traced {request_id}"},
                            headers={"X-Request-Id": request_id, **headers})
    assert response.status == 201, (response.status, response.text)
    return response


@pytest.fixture(scope="module")
def traced(web, api, receiver) -> dict[str, Any]:
    """A POST through nginx continuing the caller's trace, what was exported of it, and both
    access lines."""
    request_id = f"traced-{uuid.uuid4().hex}"
    post_item(web, request_id, traceparent=TRACEPARENT)
    server = receiver.wait_for(f"the server span of {request_id}",
                               lambda span: span.attributes.get("http.request.id") == request_id)
    # A span is queued when it ends, and a database call ends before its request: by the time the
    # server span is here, its children are too.
    children = [span for span in receiver.received() if span.parent_span_id == server.span_id]
    return {"request_id": request_id, "server": server, "children": children,
            "api_line": api_access_line(api, request_id), "nginx_line": web.access_entry(request_id)}


@pytest.fixture(scope="module")
def untraced(web, api, receiver) -> dict[str, Any]:
    """A POST through nginx without traceparent: the API starts a trace of its own."""
    request_id = f"untraced-{uuid.uuid4().hex}"
    post_item(web, request_id)
    server = receiver.wait_for(f"the server span of {request_id}",
                               lambda span: span.attributes.get("http.request.id") == request_id)
    return {"request_id": request_id, "server": server,
            "api_line": api_access_line(api, request_id), "nginx_line": web.access_entry(request_id)}


# --- a caller's trace, continued ---------------------------------------------------------------


def test_the_server_span_continues_the_callers_trace(traced):
    server = traced["server"]
    assert (server.trace_id, server.parent_span_id) == (TRACE_ID, PARENT_SPAN_ID)


def test_the_server_span_is_named_by_the_route_and_is_a_server_span(traced):
    server = traced["server"]
    assert (server.name, server.kind) == ("POST /api/items", Span.SpanKind.SPAN_KIND_SERVER)


def test_the_server_span_carries_the_http_attributes(traced):
    attributes = traced["server"].attributes
    expected = {"http.request.method": "POST", "http.route": "/api/items", "http.response.status_code": "201",
                "http.request.id": traced["request_id"]}
    # The status as text here: its type is the next test's.
    assert {key: None if attributes.get(key) is None else str(attributes.get(key)) for key in expected} == expected


def test_numbers_are_exported_as_integers_as_the_conventions_say(traced, api):
    numbers = {"http.response.status_code": traced["server"].attributes.get("http.response.status_code")}
    if api.database.backend == "postgres":
        numbers["server.port"] = the_insert(traced).attributes.get("server.port")
    assert all(type(value) is int for value in numbers.values()), numbers


def the_insert(traced) -> ReceivedSpan:
    inserts = [span for span in traced["children"] if span.name == "INSERT items"]
    assert len(inserts) == 1, f"the server span's children: {[span.name for span in traced['children']]}"
    return inserts[0]


def test_the_insert_is_a_client_span_under_the_server_span(traced):
    insert = the_insert(traced)
    assert (insert.kind, insert.trace_id) == (Span.SpanKind.SPAN_KIND_CLIENT, TRACE_ID)


def test_the_insert_span_names_the_backend_and_the_operation(traced, api):
    attributes = the_insert(traced).attributes
    assert (attributes.get("db.system.name"), attributes.get("db.operation.name")) == (
        DB_SYSTEM[api.database.backend], "INSERT")


def test_the_spans_name_the_service(traced):
    assert traced["server"].resource.get("service.name") == "items-api"


def test_the_api_logs_the_callers_trace_id_with_the_request_id(traced):
    line = traced["api_line"]
    assert (line.get("trace_id"), line.get("request_id")) == (TRACE_ID, traced["request_id"])


def test_nginx_logs_the_same_trace_id_with_the_request_id(traced):
    line = traced["nginx_line"]
    assert (line.get("trace_id"), line.get("request_id")) == (TRACE_ID, traced["request_id"])


# --- no caller's trace ---------------------------------------------------------------------


def test_without_traceparent_the_api_starts_a_trace_of_its_own(untraced):
    server = untraced["server"]
    assert (server.name, server.parent_span_id) == ("POST /api/items", "")
    assert server.trace_id not in (TRACE_ID, "0" * 32)


def test_without_traceparent_the_api_logs_the_trace_it_started(untraced):
    line = untraced["api_line"]
    assert (line.get("trace_id"), line.get("request_id")) == (untraced["server"].trace_id, untraced["request_id"])


def test_without_traceparent_nginx_logs_an_empty_trace_id(untraced):
    line = untraced["nginx_line"]
    assert (line.get("trace_id"), line.get("request_id")) == ("", untraced["request_id"])


# --- the receiver's view -------------------------------------------------------------------


def test_every_export_was_a_protobuf_post_to_v1_traces(traced, untraced, receiver):
    assert (receiver.exports > 0, receiver.refused) == (True, [])
