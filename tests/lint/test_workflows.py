"""The delivery rules, read from the workflows with a YAML parser and their `run:` scripts split
into commands with the shell's quoting rules: CI, CD and the local Docker tests run the one smoke
definition (tests/smoke.py); CD only updates images and logs in with OIDC; CI reads, no more."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from support.repo import shell_commands

SMOKE_PATHS = ("tests/smoke.py", "./tests/smoke.py")


def load(repo: Path, name: str) -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML: .venv/bin/pip install -r .ci/requirements.txt")
    return yaml.safe_load((repo / ".github" / "workflows" / name).read_text())


def steps_of(workflow: dict) -> list[tuple[str, int, dict]]:
    return [(job_id, index, step) for job_id, job in (workflow.get("jobs") or {}).items()
            for index, step in enumerate(job.get("steps") or [])]


def commands(step: dict) -> list[list[str]]:
    return shell_commands(step.get("run") or "")


def smoke_targets(step: dict) -> list[str]:
    """The base URLs a step runs the smoke definition against."""
    return [words[2] for words in commands(step)
            if len(words) >= 3 and Path(words[0]).name.startswith("python") and words[1] in SMOKE_PATHS]


def is_compose(words: list[str], subcommand: str) -> bool:
    return words[:2] == ["docker", "compose"] and subcommand in words


@pytest.fixture(scope="module")
def ci(repo):
    return load(repo, "ci.yml")


@pytest.fixture(scope="module")
def cd(repo):
    return load(repo, "deploy-azure.yml")


@pytest.fixture(scope="module")
def ci_smoke_job(ci):
    """(steps of the job, index of the smoke step) of the job that smoke-tests the Compose stack."""
    for job_id, index, step in steps_of(ci):
        if "http://127.0.0.1:8080" in smoke_targets(step):
            return ci["jobs"][job_id]["steps"], index
    pytest.fail("no ci.yml step runs python3 tests/smoke.py http://127.0.0.1:8080")


def test_ci_runs_the_smoke_definition_against_the_compose_stack(ci_smoke_job):
    steps, index = ci_smoke_job
    assert "http://127.0.0.1:8080" in smoke_targets(steps[index])


def test_ci_starts_the_stack_with_up_wait_before_the_smoke_step(ci_smoke_job):
    steps, index = ci_smoke_job
    assert any(is_compose(words, "up") and "--wait" in words for step in steps[:index] for words in commands(step))


def test_ci_prints_the_compose_logs_when_the_smoke_job_fails(ci_smoke_job):
    steps, index = ci_smoke_job
    assert any(is_compose(words, "logs") and "failure()" in str(step.get("if", ""))
               for step in steps[index:] for words in commands(step))


def test_ci_always_tears_the_stack_down_with_its_volumes(ci_smoke_job):
    steps, index = ci_smoke_job
    assert any(is_compose(words, "down") and ({"-v", "--volumes"} & set(words)) and "always()" in str(step.get("if", ""))
               for step in steps[index:] for words in commands(step))


def test_ci_grants_only_contents_read_at_the_top(ci):
    assert ci.get("permissions") == {"contents": "read"}


@pytest.mark.parametrize("step_name", ["lint", "web"])
def test_ci_runs_the_same_test_command_as_a_developer(ci, step_name):
    assert any(words == ["scripts/test", step_name] for _, _, step in steps_of(ci) for words in commands(step))


def test_cd_runs_the_smoke_definition_against_the_public_url(cd):
    assert any(target.startswith("https://") for _, _, step in steps_of(cd) for target in smoke_targets(step))


def test_the_docker_tests_run_the_same_smoke_definition(repo):
    calls = set()
    for path in sorted((repo / "tests" / "docker").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "smoke"):
                calls.add(node.func.attr)
    assert "run" in calls


# --- CD: image updates only, OIDC only -----------------------------------------------------


@pytest.fixture(scope="module")
def cd_commands(cd):
    return [words for _, _, step in steps_of(cd) for words in commands(step)]


def test_cd_never_creates_or_recreates_a_container_app(cd_commands):
    assert [w for w in cd_commands if w[:2] == ["az", "containerapp"] and len(w) > 2 and w[2] in ("create", "up")] == []


def test_cd_never_deploys_the_template(cd_commands):
    assert [w for w in cd_commands if w[:3] == ["az", "deployment", "group"] and "create" in w] == []


def test_cd_deploys_with_containerapp_update_image(cd_commands):
    assert any(w[:3] == ["az", "containerapp", "update"] and "--image" in w for w in cd_commands)


def test_cd_may_request_an_oidc_token(cd):
    assert (cd.get("permissions") or {}).get("id-token") == "write"


@pytest.fixture(scope="module")
def azure_logins(cd):
    return [step for _, _, step in steps_of(cd) if str(step.get("uses", "")).lower().startswith("azure/login@")]


def test_cd_logs_in_with_azure_login(azure_logins):
    assert azure_logins


def test_azure_login_uses_oidc_identifiers_not_stored_credentials(azure_logins):
    inputs = [step.get("with") or {} for step in azure_logins]
    assert not any("creds" in given or any("secrets." in str(v) for v in given.values()) for given in inputs)
