"""Reading Dockerfiles with BuildKit's own parser (the `dockerfile` package)."""

from __future__ import annotations

import shlex
from pathlib import Path

import dockerfile


def instructions(path: Path) -> tuple[dockerfile.Command, ...]:
    return dockerfile.parse_file(str(path))


def final_stage_env(path: Path) -> dict[str, str]:
    """The ENV values the last stage sets, quotes removed as the builder removes them."""
    env: dict[str, str] = {}
    for command in instructions(path):
        if command.cmd.upper() == "FROM":
            env = {}
        elif command.cmd.upper() == "ENV":
            pairs = command.value
            for name, raw in zip(pairs[0::2], pairs[1::2]):
                words = shlex.split(raw)
                env[name] = words[0] if words else ""
    return env
