"""The shell functions the workflows source, run for real with bash against a stand-in `az` and
`docker` (tests/lint/fake_cli.py) that answer from a scripted list and record every call:
containerapp.sh's revision wait, migration job and restore, and images.sh's revision lookup and
ancestry check (on a real git repository)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.tools import require_tool

REPO = Path(__file__).resolve().parents[2]
FAKE = Path(__file__).with_name("fake_cli.py")


@pytest.fixture
def shell(tmp_path):
    """Runs a bash snippet after sourcing SCRIPT, with `az` and `docker` answering from ANSWERS
    ({"containerapp revision show": [first, second, ...]}: one answer per call, the last one
    repeated; an answer is stdout, or {"stdout": ..., "exit": n, "stderr": ...}). Returns the exit
    status, the output and the calls made."""
    require_tool("jq", "apt-get install jq")
    require_tool("timeout", "apt-get install coreutils")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("az", "docker"):
        wrapper = bin_dir / name
        wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE} {name} \"$@\"\n")
        wrapper.chmod(0o755)

    def run(script: str, snippet: str, answers: dict, cwd: Path = REPO) -> tuple[int, str, list[list[str]]]:
        (tmp_path / "answers.json").write_text(json.dumps(answers))
        calls = tmp_path / "calls.jsonl"
        calls.write_text("")
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_CLI_ANSWERS": str(tmp_path / "answers.json"),
               "FAKE_CLI_CALLS": str(calls), "FAKE_CLI_STATE": str(tmp_path / "state.json"),
               "AZURE_RESOURCE_GROUP": "rg"}
        (tmp_path / "state.json").write_text("{}")
        done = subprocess.run(["bash", "-c", f"set -eo pipefail\nsource {REPO / script}\nPOLL_SECONDS=0\nRETRY_SECONDS=0\n{snippet}"],
                              cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
        made = [json.loads(line) for line in calls.read_text().splitlines()]
        return done.returncode, done.stdout + done.stderr, made

    return run


CONTAINERAPP = ".github/workflows/containerapp.sh"


def revision(provisioning="Provisioned", health="Healthy", running="Running") -> str:
    return json.dumps({"provisioning": provisioning, "health": health, "running": running, "details": None})


def made(calls, *words) -> list[list[str]]:
    return [call for call in calls if call[:len(words)] == list(words)]


def test_a_revision_that_gets_healthy_deploys(shell):
    status, output, calls = shell(CONTAINERAPP, "deploy items-api img@sha256:1 30", {
        "az containerapp show": ["items-api--2"],
        "az containerapp revision show": [revision("Provisioning", "None", "Processing"), revision()],
        "az containerapp replica list": ["[0]"],
    })
    assert status == 0, output
    assert made(calls, "az", "containerapp", "update")[0][-2:] == ["--image", "img@sha256:1"]
    assert len(made(calls, "az", "containerapp", "revision", "show")) == 2


def test_the_wait_stops_at_once_on_activation_failed(shell):
    status, output, calls = shell(CONTAINERAPP, "deploy items-api img 30", {
        "az containerapp show": ["items-api--2"],
        "az containerapp revision show": [revision("Provisioned", "None", "ActivationFailed")],
        "az containerapp replica list": ["[0]"],
    })
    assert status == 1 and "cannot become healthy" in output
    assert len(made(calls, "az", "containerapp", "revision", "show")) == 1
    assert made(calls, "az", "containerapp", "logs", "show")


def test_the_wait_stops_when_the_restart_count_grows(shell):
    status, output, calls = shell(CONTAINERAPP, "deploy items-api img 30", {
        "az containerapp show": ["items-api--2"],
        "az containerapp revision show": [revision("Provisioned", "None", "Processing")],
        "az containerapp replica list": ["[0]", "[0, 0]", "[1, 0]"],
    })
    assert status == 1 and "restarted (count 0 -> 1)" in output
    assert len(made(calls, "az", "containerapp", "replica", "list")) == 3
    assert made(calls, "az", "containerapp", "replica", "list")[0][-6:-4] == ["--revision", "items-api--2"]


def test_an_old_revision_that_restarted_before_is_not_taken_for_a_crash(shell):
    status, output, _ = shell(CONTAINERAPP, "deploy items-api img 30", {
        "az containerapp show": ["items-api--1"],
        "az containerapp revision show": [revision()],
        "az containerapp replica list": ["[3]"],
    })
    assert status == 0, output


def test_a_refused_update_fails_without_waiting(shell):
    status, output, calls = shell(CONTAINERAPP, "deploy items-api img 30", {
        "az containerapp update": [{"exit": 1, "stderr": "ContainerAppOperationInProgress"}],
    })
    assert status == 1 and not made(calls, "az", "containerapp", "revision", "show")


def test_the_migration_job_runs_with_the_image_and_waits_for_success(shell):
    status, output, calls = shell(CONTAINERAPP, "migrate items-migrate api@sha256:1 30", {
        "az containerapp job list": ["other\nitems-migrate"],
        "az containerapp job start": ["items-migrate-abc12"],
        "az containerapp job execution show": ["Running", "Running", "Succeeded"],
    })
    assert status == 0, output
    update = made(calls, "az", "containerapp", "job", "update")
    assert update and update[0][4:] == ["--name", "items-migrate", "--resource-group", "rg", "--image", "api@sha256:1"]
    shows = made(calls, "az", "containerapp", "job", "execution", "show")
    assert len(shows) == 3 and "items-migrate-abc12" in shows[0]


def test_a_failed_migration_fails_the_deploy(shell):
    status, output, _ = shell(CONTAINERAPP, "migrate items-migrate api 30", {
        "az containerapp job list": ["items-migrate"],
        "az containerapp job start": ["items-migrate-abc12"],
        "az containerapp job execution show": ["Running", "Failed"],
    })
    assert status == 1 and "ended Failed" in output


def test_without_the_job_there_is_nothing_to_migrate(shell):
    status, output, calls = shell(CONTAINERAPP, "migrate items-migrate api 30", {
        "az containerapp job list": ["items-migrate-old"],
    })
    assert status == 0 and "nothing to migrate" in output
    assert not made(calls, "az", "containerapp", "job", "update")


def test_a_migration_that_does_not_finish_in_time_fails(shell):
    status, output, _ = shell(CONTAINERAPP, "migrate items-migrate api 0", {
        "az containerapp job list": ["items-migrate"],
        "az containerapp job start": ["items-migrate-abc12"],
        "az containerapp job execution show": ["Running"],
    })
    assert status == 1 and "did not finish within 0 s" in output


def app(provisioning: str, image: str, latest: str) -> str:
    return json.dumps({"provisioning": provisioning, "image": image, "revision": latest})


def test_restore_leaves_an_app_that_still_runs_its_previous_image(shell):
    status, output, calls = shell(CONTAINERAPP, "restore items-web old 30", {
        "az containerapp show": [app("Succeeded", "old", "items-web--1")],
        "az containerapp revision show": [revision()],
        "az containerapp replica list": ["[0]"],
    })
    assert status == 0, output
    assert not made(calls, "az", "containerapp", "update")


def test_restore_waits_for_an_interrupted_update_then_puts_the_image_back(shell):
    status, output, calls = shell(CONTAINERAPP, "restore items-api old 60", {
        "az containerapp show": [app("InProgress", "new", "items-api--2"), app("Succeeded", "new", "items-api--2"),
                                 app("Succeeded", "old", "items-api--3")],
        "az containerapp revision show": [revision()],
        "az containerapp replica list": ["[0]"],
    })
    assert status == 0, output
    updates = made(calls, "az", "containerapp", "update")
    assert len(updates) == 1 and updates[0][-2:] == ["--image", "old"]
    assert "items-api--3" in made(calls, "az", "containerapp", "revision", "show")[0]


IMAGES = ".github/workflows/images.sh"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_the_revision_comes_from_the_index_annotation(shell):
    status, output, _ = shell(IMAGES, "image_revision ghcr.io/o/r/api:main", {
        "docker buildx imagetools inspect": [json.dumps({"annotations": {"org.opencontainers.image.revision": COMMIT}})],
    })
    assert status == 0 and output.strip() == COMMIT


def test_without_the_annotation_the_revision_comes_from_the_linux_images_label(shell):
    labels = {"config": {"Labels": {"org.opencontainers.image.revision": COMMIT}}}
    status, output, _ = shell(IMAGES, "image_revision ghcr.io/o/r/api:main", {
        "docker buildx imagetools inspect": [json.dumps({"manifests": []}),
                                             json.dumps({"linux/amd64": labels, "linux/arm64": labels})],
    })
    assert status == 0 and output.strip() == COMMIT


def test_a_revision_that_is_no_commit_counts_as_none(shell):
    status, output, _ = shell(IMAGES, "image_revision img", {
        "docker buildx imagetools inspect": [json.dumps({}), json.dumps({"rootfs": {}, "config": {"Labels": {
            "org.opencontainers.image.revision": "unknown"}}})],
    })
    assert status == 0 and output.strip() == ""


def test_a_missing_image_and_an_unreadable_registry_differ(shell):
    missing, _, _ = shell(IMAGES, "image_revision img", {
        "docker buildx imagetools inspect": [{"exit": 1, "stderr": "ERROR: ghcr.io/o/r/api:main: not found"}]})
    denied, _, _ = shell(IMAGES, "image_revision img", {
        "docker buildx imagetools inspect": [{"exit": 1, "stderr": "ERROR: unauthorized"}]})
    assert (missing, denied) == (2, 1)


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout.strip()


def test_descends_from_follows_the_history(shell, tmp_path):
    history = tmp_path / "history"
    history.mkdir()
    git(history, "init", "-q")
    git(history, "commit", "-q", "--allow-empty", "-m", "old")
    old = git(history, "rev-parse", "HEAD")
    git(history, "commit", "-q", "--allow-empty", "-m", "new")
    new = git(history, "rev-parse", "HEAD")
    answers = {}
    descends = [shell(IMAGES, f"descends_from {a} {b}", answers, cwd=history)[0] == 0
                for a, b in ((new, old), (old, new), (new, new), (new, COMMIT), (COMMIT, old))]
    # A commit this clone does not know is neither an ancestor nor a descendant.
    assert descends == [True, False, True, False, False]
