"""The shared helpers every other test leans on, and the smoke command itself."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import smoke
from support.net import ephemeral_range, free_port, port_is_open, wait_until
from support.repo import shell_commands

SMOKE = Path(smoke.__file__)


def test_free_port_can_be_bound_on_loopback():
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_free_port_is_never_one_the_kernel_hands_out_to_port_zero():
    # Such a port could be given to another server started on port 0 before ours binds it.
    low, high = ephemeral_range()
    assert [port for port in (free_port() for _ in range(50)) if low <= port <= high] == []


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


def test_shell_commands_split_at_operators_and_keep_quoted_words_whole():
    assert shell_commands('docker compose up --wait && echo "a b" | tee log') == [
        ["docker", "compose", "up", "--wait"], ["echo", "a b"], ["tee", "log"]]


def test_shell_commands_join_continued_lines_and_drop_comments():
    assert shell_commands("az containerapp update \\\n  --image x  # deploy\nls") == [
        ["az", "containerapp", "update", "--image", "x"], ["ls"]]


def test_shell_commands_include_command_substitutions():
    assert ["az", "containerapp", "show", "--name", "web"] in shell_commands('fqdn="$(az containerapp show --name web)"')


def test_shell_commands_drop_leading_environment_assignments():
    assert shell_commands('CHROMEDRIVER_BIN="$X/chromedriver" scripts/test web') == [["scripts/test", "web"]]


def test_every_smoke_check_has_a_name_of_its_own():
    names = smoke.check_names()
    assert len(names) == len(set(names))


def test_the_smoke_command_fails_when_nothing_answers():
    done = subprocess.run([sys.executable, str(SMOKE), f"http://127.0.0.1:{free_port()}"],
                          env={**os.environ, "SMOKE_WAIT_SECS": "0.5"}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
