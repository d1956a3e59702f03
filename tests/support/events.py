"""A client of the API's change stream (GET /api/items/events), for the web and Docker tests."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit


class Stream:
    """GET /api/items/events, read an event block at a time."""

    def __init__(self, base_url: str, last_event_id: str | None = None) -> None:
        parts = urlsplit(base_url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        self.connection.request("GET", "/api/items/events", headers=headers)
        self.response = self.connection.getresponse()
        self.comments = 0
        # The id of the last event read, as a browser keeps it for reconnecting.
        self.last_event_id = last_event_id

    def next_event(self) -> dict:
        """The next event with a name (heartbeats are counted on the way)."""
        name, data = None, ""
        while True:
            line = self.response.readline().decode()
            if line == "":
                raise EOFError("the stream ended")
            line = line.rstrip("\n")
            if line == "":
                if name:
                    return {"name": name, "data": json.loads(data)}
                continue
            field, _, value = line.partition(":")
            if field == "":
                self.comments += 1
            elif field == "event":
                name = value.strip()
            elif field == "id":
                self.last_event_id = value.strip()
            elif field == "data":
                data += value.strip()

    def read_to_end(self) -> bytes:
        return self.response.read()

    def close(self) -> None:
        self.connection.close()
