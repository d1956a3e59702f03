"""The shared helpers every other test leans on."""

from __future__ import annotations

import socket

import pytest

from support.net import free_port, port_is_open, wait_until


def test_free_port_can_be_bound_on_loopback():
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_port_is_open_sees_a_listener():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert port_is_open(sock.getsockname()[1])


def test_wait_until_returns_the_first_truthy_value():
    answers = iter([None, 0, "ready"])
    assert wait_until("the third answer", lambda: next(answers), timeout=5, interval=0) == "ready"


def test_wait_until_gives_up_after_its_timeout_and_names_what_it_waited_for():
    with pytest.raises(TimeoutError, match="the impossible"):
        wait_until("the impossible", lambda: False, timeout=0.2, interval=0.05)
