"""Header capture for the web-tier tests: answers every request with what nginx sent upstream.

Not an API stand-in: it exists only to see the exact request line and headers the nginx template
produces (Host, Connection, X-Forwarded-*, X-Request-Id), which the real API does not report.
`/api/stall?seconds=N` answers only after N seconds, to let nginx's read timeout fire. Each answer
also names the connection it came on (`peer`), to see whether nginx reuses its connections.
usage: upstream_echo.py PORT
"""

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        url = urlsplit(self.path)
        if url.path == "/api/stall":
            time.sleep(float(parse_qs(url.query).get("seconds", ["10"])[0]))
        body = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "version": self.request_version,
                "headers": [[name.lower(), value] for name, value in self.headers.items()],
                # The connection's far end: the same port twice means nginx reused it.
                "peer": "%s:%d" % self.client_address[:2],
            }
        ).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # nginx gave up waiting (the stall case)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib signature)
        return


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Echo).serve_forever()
