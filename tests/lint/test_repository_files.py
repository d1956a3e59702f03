"""Files that must work in a fresh clone: executable scripts and JSON that parses."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from support.repo import project_files

REQUIRED_JSON = [".devcontainer/devcontainer.json", "deploy/azure/bicepconfig.json", "tests/lint/schemas/azure.yaml.json"]
JSON_FILES = sorted({name for name in project_files(Path(__file__).resolve().parents[2]) if name.endswith(".json")})


def test_every_committed_file_with_a_shebang_is_executable(repo):
    # A script committed without +x works where it was written and fails in a fresh clone.
    listing = subprocess.run(["git", "-C", str(repo), "ls-files", "-s", "-z"], capture_output=True, text=True,
                             check=True).stdout
    not_executable = []
    for entry in filter(None, listing.split("\0")):
        mode, _, _, name = entry.split(maxsplit=3)
        with open(repo / name, "rb") as file:
            if file.read(2) == b"#!" and mode != "100755":
                not_executable.append(name)
    assert not_executable == [], "git update-index --chmod=+x " + " ".join(not_executable)


@pytest.mark.parametrize("name", REQUIRED_JSON)
def test_the_json_file_exists(repo, name):
    assert (repo / name).is_file()


@pytest.mark.parametrize("name", JSON_FILES)
def test_the_json_file_parses(repo, name):
    # devcontainer.json is kept strict JSON (devcontainers would accept comments; tools here don't).
    json.loads((repo / name).read_text(encoding="utf-8"))
