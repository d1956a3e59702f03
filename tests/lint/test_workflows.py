"""The delivery rules, read from the workflows with a YAML parser and their `run:` scripts split
into commands with the shell's quoting rules (a script a step sources counts as part of it): CI,
CD and the local Docker tests run the one smoke definition (tests/smoke.py); CD only updates
images, by digest, logs in with OIDC and puts both previous images back when a deploy fails; CI
reads, no more, lets every push to main publish, and tests and smoke-tests the Postgres backend."""

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


REPO = Path(__file__).resolve().parents[2]


def commands(step: dict) -> list[list[str]]:
    """The step's commands, with those of the repository scripts it sources (`source F`, `. F`)."""
    found = []
    for words in shell_commands(step.get("run") or ""):
        found.append(words)
        if len(words) == 2 and words[0] in ("source", ".") and (REPO / words[1]).is_file():
            found += shell_commands((REPO / words[1]).read_text())
    return found


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


# --- Delivery: what is published, what is deployed, and how a failure is undone -------------


def test_sha_tags_are_pushed_from_the_default_branch_only(ci):
    sha_rules = [line.strip() for line in ci["env"]["IMAGE_TAGS"].splitlines() if line.strip().startswith("type=sha")]
    assert sha_rules and all("enable={{is_default_branch}}" in rule for rule in sha_rules)


def test_no_push_to_main_cancels_another_pushs_pending_run(ci):
    # A push's group is its own run; only pull requests share (and cancel within) a group.
    group = ci["concurrency"]["group"]
    assert "github.run_id" in group and "pull_request" in str(ci["concurrency"]["cancel-in-progress"])


def test_a_manual_deploy_and_an_automatic_one_never_share_a_pending_slot(cd):
    assert "github.event_name" in cd["concurrency"]["group"] and cd["concurrency"]["cancel-in-progress"] is False


def test_a_deploy_waits_for_earlier_deploy_runs_first(cd):
    first = cd["jobs"]["deploy"]["steps"][0]
    assert "GITHUB_RUN_ID" in first.get("run", "") and "in_progress" in first.get("run", "")


@pytest.fixture(scope="module")
def cd_steps(cd):
    return {step.get("name", ""): step for _, _, step in steps_of(cd)}


def test_cd_resolves_the_tag_to_digests_before_any_update(cd):
    steps = cd["jobs"]["deploy"]["steps"]
    resolve = next(i for i, step in enumerate(steps) if "imagetools inspect" in step.get("run", "")
                   and "@${digest}" in step.get("run", ""))
    update = next(i for i, step in enumerate(steps) if any(w[:3] == ["az", "containerapp", "update"]
                                                          for w in commands(step)))
    assert resolve < update


def test_cd_puts_both_previous_images_back_when_the_deploy_or_the_smoke_test_fails(cd):
    steps = cd["jobs"]["deploy"]["steps"]
    restore = [step for step in steps if "failure()" in str(step.get("if", ""))
               and "PREVIOUS_API_IMAGE" in step.get("run", "") and "PREVIOUS_WEB_IMAGE" in step.get("run", "")]
    smoke = next(i for i, step in enumerate(steps) if smoke_targets(step))
    assert restore and steps.index(restore[0]) > smoke


def test_the_revision_wait_gives_up_at_once_on_a_degraded_or_unhealthy_revision(repo):
    script = (repo / ".github" / "workflows" / "containerapp.sh").read_text()
    assert '.running == "Degraded"' in script and '.health == "Unhealthy"' in script


def test_the_multi_platform_packages_carry_a_description_annotation(ci):
    steps = ci["jobs"]["publish-manifest"]["steps"]
    assert any("--annotation" in words and any(w.startswith("index:org.opencontainers.image.description=")
                                                 for w in words)
               for step in steps for words in commands(step))


def test_ci_runs_the_rust_tests_against_a_postgres_service(ci):
    job = ci["jobs"]["test"]
    tests = next(step for step in job["steps"] if any(w[:2] == ["cargo", "test"] for w in commands(step)))
    assert "postgres" in job.get("services", {}) and "TEST_DATABASE_URL" in tests.get("env", {})


def test_ci_smoke_tests_the_postgres_stack_with_several_replicas(ci):
    steps = ci["jobs"]["smoke"]["steps"]
    ups = [words for step in steps for words in commands(step)
           if is_compose(words, "up") and "compose.postgres.yaml" in words]
    assert any("--scale" in words and int(words[words.index("--scale") + 1].split("=")[1]) >= 2 for words in ups)
