"""A small HTTP client over http.client: one request, the exact status, headers and body.

No redirects are followed, nothing is decompressed and every header is kept as sent, because
those are what the tests look at. Standard library only: the smoke test runs on bare CI runners.
"""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    seconds: float

    def header(self, name: str) -> str | None:
        """The last value of header `name` (case-insensitive), or None."""
        values = self.header_values(name)
        return values[-1] if values else None

    def header_values(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value.strip() for key, value in self.headers if key.lower() == wanted]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)

    def json_or_none(self) -> Any:
        try:
            return self.json()
        except ValueError:
            return None


def request(
    url: str,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    json_body: Any = None,
    timeout: float = 15.0,
    source: str | None = None,
) -> Response:
    """Sends one request to an absolute http(s) URL, from the local address `source` if given (on
    loopback any 127.x.y.z: another client, as the server sees it). Raises OSError when there is
    no answer."""
    parts = urlsplit(url)
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(parts.hostname, parts.port, timeout=timeout,
                                  source_address=(source, 0) if source else None)
    send_headers = dict(headers or {})
    if json_body is not None:
        body = json.dumps(json_body).encode()
        send_headers.setdefault("Content-Type", "application/json")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    started = time.monotonic()
    try:
        connection.putrequest(method, target, skip_host="Host" in send_headers, skip_accept_encoding=True)
        for name, value in send_headers.items():
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        try:
            connection.endheaders(body)
        except (BrokenPipeError, ConnectionResetError):
            # A server may answer (413) and close before it has read a large body.
            pass
        response = connection.getresponse()
        data = response.read()
        return Response(response.status, response.getheaders(), data, time.monotonic() - started)
    except (http.client.HTTPException, AttributeError) as error:
        # http.client reports a connection the server dropped mid-exchange this way too (a
        # socket it already let go of is None): for the caller it is no answer, like OSError.
        raise ConnectionError(f"no answer from {url}: {error!r}") from error
    finally:
        connection.close()
