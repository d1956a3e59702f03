"""Loopback ports and bounded waiting."""

from __future__ import annotations

import random
import socket
import time
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")


def ephemeral_range() -> tuple[int, int]:
    """The ports the kernel hands out to `bind(0)` and to outgoing connections."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A TCP port that nothing listens on right now, on any address. Picked below the kernel's
    ephemeral range: a port the kernel chose would be free for anyone's `bind(0)` (a server the
    test starts on port 0, a database) until our server binds it, and one was taken that way."""
    low, _ = ephemeral_range()
    for _ in range(200):
        port = random.randrange(10_000, max(low, 10_001))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    # Every port tried was taken: let the kernel pick, race and all.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def wait_until(
    what: str,
    condition: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.1,
    ignore: tuple[type[BaseException], ...] = (OSError,),
) -> T:
    """Polls `condition` until it returns something truthy, which is returned.

    Exceptions in `ignore` count as "not yet". Raises TimeoutError naming `what` (and the last
    ignored exception) once `timeout` seconds have passed.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = condition()
            if result:
                return result
        except ignore as error:
            last_error = error
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}{detail}")
        time.sleep(interval)
