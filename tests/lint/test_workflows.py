"""The delivery rules, read from the workflows with a YAML parser and their `run:` scripts split
into commands with the shell's quoting rules (a script a step sources counts as part of it). CI
checks, and only after every check passed does it publish (publish.yml, with the only
`packages: write`); main and latest move only forward; CD only updates images, by digest, never
behind production, logs in with OIDC, runs the migration job first, gives every step a time limit
that adds up, and puts both previous images back when a deploy fails or is cancelled. CI, CD and
the local Docker tests run the one smoke definition (tests/smoke.py)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from support.repo import shell_commands

SMOKE_PATHS = ("tests/smoke.py", "./tests/smoke.py")
REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / ".github" / "workflows"
# GitHub lets the steps that still run after a cancellation go on for this long, then kills them.
CANCEL_GRACE_MINUTES = 5


def load(repo: Path, name: str) -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML: .venv/bin/pip install -r .ci/requirements.txt")
    return yaml.safe_load((repo / ".github" / "workflows" / name).read_text())


def steps_of(workflow: dict) -> list[tuple[str, int, dict]]:
    return [(job_id, index, step) for job_id, job in (workflow.get("jobs") or {}).items()
            for index, step in enumerate(job.get("steps") or [])]


SHELL_KEYWORDS = {"if", "elif", "then", "else", "while", "until", "do", "!", "{", "time"}


def unwrapped(words: list[str]) -> list[str]:
    """The command itself: without the shell keywords before it (`if !`, `elif`, ...), and for a
    deadline wrapper, `timeout [-k N] N CMD...` and `az_within N ARGS...` (containerapp.sh's
    `timeout ... az`), CMD and `az ARGS`."""
    if words and words[0] in SHELL_KEYWORDS:
        return unwrapped(words[1:])
    if words and words[0] == "timeout":
        rest = words[1:]
        while rest and rest[0].startswith("-"):
            rest = rest[1:] if "=" in rest[0] else rest[2:]
        return unwrapped(rest[1:])
    if words and words[0] == "az_within":
        return ["az", *words[2:]]
    return words


def commands(step: dict) -> list[list[str]]:
    """The step's commands, with those of the repository scripts it sources (`source F`, `. F`)."""
    found = []
    for words in shell_commands(step.get("run") or ""):
        found.append(unwrapped(words))
        if len(words) == 2 and words[0] in ("source", ".") and (REPO / words[1]).is_file():
            found += [unwrapped(w) for w in shell_commands((REPO / words[1]).read_text())]
    return found


def own_commands(step: dict) -> list[list[str]]:
    """The step's own commands, without the sourced scripts (whose function definitions would
    otherwise look like calls)."""
    return [unwrapped(words) for words in shell_commands(step.get("run") or "")]


def smoke_targets(step: dict) -> list[str]:
    """The base URLs a step runs the smoke definition against."""
    return [words[2] for words in commands(step)
            if len(words) >= 3 and Path(words[0]).name.startswith("python") and words[1] in SMOKE_PATHS]


def is_compose(words: list[str], subcommand: str) -> bool:
    return words[:2] == ["docker", "compose"] and subcommand in words


def step_index(steps: list[dict], predicate) -> int:
    return next(i for i, step in enumerate(steps) if predicate(step))


@pytest.fixture(scope="module")
def ci(repo):
    return load(repo, "ci.yml")


@pytest.fixture(scope="module")
def publish(repo):
    return load(repo, "publish.yml")


@pytest.fixture(scope="module")
def cd(repo):
    return load(repo, "deploy-azure.yml")


@pytest.fixture(scope="module")
def deploy_steps(cd):
    return cd["jobs"]["deploy"]["steps"]


# --- CI: the checks ------------------------------------------------------------------------


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


def test_ci_smoke_tests_the_postgres_stack_with_several_replicas(ci):
    steps = ci["jobs"]["smoke"]["steps"]
    ups = [words for step in steps for words in commands(step)
           if is_compose(words, "up") and "compose.postgres.yaml" in words]
    assert any("--scale" in words and int(words[words.index("--scale") + 1].split("=")[1]) >= 2 for words in ups)


@pytest.mark.parametrize("step_name", ["lint", "web"])
def test_ci_runs_the_same_test_command_as_a_developer(ci, step_name):
    assert any(words == ["scripts/test", step_name] for _, _, step in steps_of(ci) for words in commands(step))


def test_ci_runs_the_rust_tests_against_the_postgres_image_the_compose_stack_runs(ci):
    steps = ci["jobs"]["test"]["steps"]
    start = step_index(steps, lambda s: any(w[:2] == ["docker", "run"] for w in commands(s)))
    tests = step_index(steps, lambda s: any(w[:2] == ["cargo", "test"] for w in commands(s)))
    reads_compose = any(is_compose(w, "config") and "compose.postgres.yaml" in w for w in commands(steps[start]))
    assert reads_compose and start < tests and "TEST_DATABASE_URL" in steps[tests].get("env", {})


def test_the_cargo_cache_lives_only_in_the_rust_action(repo, ci):
    direct = [f"{path.name}: {step.get('name')}" for path in sorted(WORKFLOWS.glob("*.yml"))
              for _, _, step in steps_of(load(repo, path.name))
              if str(step.get("uses", "")).lower().startswith("swatinem/rust-cache@")]
    users = {job_id for job_id, _, step in steps_of(ci) if step.get("uses") == "./.github/actions/rust"}
    assert direct == [] and {"test", "web", "reliability"} <= users


def test_every_job_that_runs_cargo_sets_up_rust_with_the_action_first(ci):
    for job_id, job in ci["jobs"].items():
        steps = job.get("steps") or []
        cargo = [i for i, step in enumerate(steps) if any(w and w[0] == "cargo" for w in commands(step))]
        if cargo:
            action = step_index(steps, lambda s: s.get("uses") == "./.github/actions/rust")
            assert action < cargo[0], job_id


def test_the_rust_action_installs_the_pinned_toolchain_and_saves_the_cache_from_main_only(repo):
    yaml = pytest.importorskip("yaml")
    action = yaml.safe_load((repo / ".github" / "actions" / "rust" / "action.yml").read_text())
    steps = action["runs"]["steps"]
    assert action["runs"]["using"] == "composite"
    assert any(w == ["rustup", "toolchain", "install"] for step in steps for w in commands(step))
    cache = next(step for step in steps if str(step.get("uses", "")).startswith("Swatinem/rust-cache@"))
    assert cache["with"]["save-if"] == "${{ github.ref == 'refs/heads/main' }}"


def test_the_bicep_job_builds_every_file_and_lints_on_every_event(ci):
    job = ci["jobs"]["bicep"]
    run = " ".join(step.get("run") or "" for step in job["steps"])
    words = [w for step in job["steps"] for w in commands(step)]
    assert "if" not in job
    assert ["check", "bicep", "build", "main.bicep", "--stdout"] in words
    assert "modules/*.bicep" in run and "*.bicepparam" in run
    assert any(w[:3] == ["check", "bicep", "build-params"] for w in words)
    assert any(w[:3] == ["check", "bicep", "lint"] for w in words)


def test_ci_grants_only_contents_read_at_the_top(ci):
    assert ci.get("permissions") == {"contents": "read"}


def test_no_push_to_main_cancels_another_pushs_pending_run(ci):
    # A push's group is its own run; only pull requests share (and cancel within) a group.
    group = ci["concurrency"]["group"]
    assert "github.run_id" in group and "pull_request" in str(ci["concurrency"]["cancel-in-progress"])


# --- Publishing: after every check, least privilege, tags -----------------------------------


def test_publishing_is_a_reusable_workflow_only(publish):
    # PyYAML reads the key `on` as True.
    triggers = publish.get("on", publish.get(True))
    assert list(triggers) == ["workflow_call"]


def test_ci_publishes_pushes_only_after_every_other_job_passed(ci):
    callers = {job_id: job for job_id, job in ci["jobs"].items() if job.get("uses") == "./.github/workflows/publish.yml"}
    assert len(callers) == 1
    (job_id, job), = callers.items()
    assert set(job["needs"]) == set(ci["jobs"]) - {job_id}
    assert job["if"] == "github.event_name == 'push'"


def test_packages_write_is_granted_only_where_images_are_pushed(repo, ci, publish):
    writers = {f"ci.yml:{job_id}" for job_id, job in ci["jobs"].items()
               if (job.get("permissions") or {}).get("packages") == "write"}
    writers |= {f"publish.yml:{job_id}" for job_id, job in publish["jobs"].items()
                if (job.get("permissions") or {}).get("packages") == "write"}
    assert writers == {"ci.yml:publish", "publish.yml:build", "publish.yml:manifest", "publish.yml:tags"}
    assert publish.get("permissions") == {"contents": "read"}
    for job_id in ("build", "manifest", "tags"):
        assert publish["jobs"][job_id]["permissions"] == {"contents": "read", "packages": "write"}


def test_sha_tags_are_pushed_from_the_default_branch_only(publish):
    sha_rules = [line.strip() for line in publish["env"]["IMMUTABLE_TAGS"].splitlines()
                 if line.strip().startswith("type=sha")]
    assert sha_rules and all("enable={{is_default_branch}}" in rule for rule in sha_rules)


def test_the_index_is_pushed_with_the_immutable_tags_only(publish):
    meta = next(step for step in publish["jobs"]["manifest"]["steps"]
                if str(step.get("uses", "")).startswith("docker/metadata-action@"))
    assert meta["with"]["tags"] == "${{ env.IMMUTABLE_TAGS }}"
    assert not any("latest" in line or "event=branch" in line for line in publish["env"]["IMMUTABLE_TAGS"].splitlines())


@pytest.mark.parametrize("annotation", ["description", "revision"])
def test_the_multi_platform_index_carries_the_annotation(publish, annotation):
    words = [w for step in publish["jobs"]["manifest"]["steps"] for w in commands(step)]
    assert any(w[:4] == ["docker", "buildx", "imagetools", "create"] and "--annotation" in w
               and any(a.startswith(f"index:org.opencontainers.image.{annotation}=") for a in w) for w in words)


def test_main_and_latest_move_only_to_a_descendant_one_run_at_a_time(publish):
    job = publish["jobs"]["tags"]
    checkout = next(step for step in job["steps"] if str(step.get("uses", "")).startswith("actions/checkout@"))
    words = [w for step in job["steps"] for w in own_commands(step)]
    check = next(i for i, w in enumerate(words) if w and w[0] == "descends_from")
    move = next(i for i, w in enumerate(words) if w[:4] == ["docker", "buildx", "imagetools", "create"])
    assert checkout["with"]["fetch-depth"] == 0
    assert job["concurrency"]["cancel-in-progress"] is False and job["needs"] == ["manifest"]
    assert "default_branch" in job["if"] and check < move


# --- CD: image updates only, OIDC only ------------------------------------------------------


@pytest.fixture(scope="module")
def cd_commands(cd):
    return [words for _, _, step in steps_of(cd) for words in commands(step)]


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


def test_cd_never_creates_recreates_or_deletes_anything_in_container_apps(cd_commands):
    assert [w for w in cd_commands if w[:2] == ["az", "containerapp"]
            and {"create", "up", "delete"} & set(w[2:4])] == []


def test_cd_never_deploys_the_template(cd_commands):
    assert [w for w in cd_commands if w[:2] == ["az", "deployment"] and "create" in w] == []


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


# --- CD: order, migrations, what-if, rollback, time limits ----------------------------------


def test_a_manual_deploy_and_an_automatic_one_never_share_a_pending_slot(cd):
    assert "github.event_name" in cd["concurrency"]["group"] and cd["concurrency"]["cancel-in-progress"] is False


def test_a_deploy_waits_for_earlier_deploy_runs_first(deploy_steps):
    first = deploy_steps[0]
    assert "GITHUB_RUN_ID" in first.get("run", "") and "in_progress" in first.get("run", "")


def is_update(step: dict) -> bool:
    """The step itself changes an app's image (a script it sources does only when called)."""
    return any(w[:1] == ["deploy"] or w[:3] == ["az", "containerapp", "update"] for w in own_commands(step))


def test_cd_resolves_the_tag_to_digests_before_any_update(deploy_steps):
    resolve = step_index(deploy_steps, lambda s: "imagetools inspect" in s.get("run", "") and "@${digest}" in s.get("run", ""))
    assert resolve < step_index(deploy_steps, is_update)


def test_an_automatic_deploy_stops_when_production_is_not_behind_it(deploy_steps):
    order = step_index(deploy_steps, lambda s: any(w[:1] == ["descends_from"] for w in own_commands(s)))
    step = deploy_steps[order]
    words = own_commands(step)
    check = next(w for w in words if w[:1] == ["descends_from"])
    assert check[1:] == ["$running", "$THIS_COMMIT"] and "workflow_run" in step["run"]
    assert "skip=true" in step["run"] and "::notice::" in step["run"] and "$GITHUB_STEP_SUMMARY" in step["run"]
    # Skipping is not a failure: the step does not exit non-zero on that path.
    skip_branch = step["run"].split("descends_from")[1].split("else")[0]
    assert "exit 1" not in skip_branch
    changing = [s for s in deploy_steps if is_update(s) or "migrate " in s.get("run", "")]
    assert changing and all("steps.production.outputs.skip != 'true'" in str(s.get("if")) for s in changing)
    assert order < step_index(deploy_steps, is_update)


def test_the_order_check_has_the_history_it_needs(deploy_steps):
    checkout = next(s for s in deploy_steps if str(s.get("uses", "")).startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0


def test_the_migration_job_runs_with_the_new_api_image_before_the_apps_change(cd, deploy_steps):
    migrate = step_index(deploy_steps, lambda s: any(w[:1] == ["migrate"] for w in own_commands(s)))
    call = next(w for w in own_commands(deploy_steps[migrate]) if w[:1] == ["migrate"])
    assert call[1:3] == ["$MIGRATE_JOB", "$API_IMAGE"] and migrate < step_index(deploy_steps, is_update)
    assert cd["jobs"]["deploy"]["env"]["MIGRATE_JOB"] == "${{ vars.AZURE_MIGRATE_JOB || 'items-migrate' }}"
    words = commands(deploy_steps[migrate])
    for subcommand in (["job", "update"], ["job", "start"], ["job", "execution", "show"]):
        assert any(w[:2] == ["az", "containerapp"] and w[2:2 + len(subcommand)] == subcommand for w in words), subcommand


def test_the_what_if_is_shown_and_never_fails_the_deploy(deploy_steps):
    step = next(s for s in deploy_steps if any(w[:4] == ["az", "deployment", "group", "what-if"] for w in commands(s)))
    what_if = next(w for w in commands(step) if w[:4] == ["az", "deployment", "group", "what-if"])
    assert step.get("continue-on-error") is True and "$GITHUB_STEP_SUMMARY" in step["run"]
    assert "deploy/azure/main.bicep" in what_if and "imageTag=$IMAGE_TAG" in what_if
    assert what_if[what_if.index("--result-format") + 1] == "ResourceIdOnly"
    assert "deploy/azure/main.${DATABASE_BACKEND}.bicepparam" in step["run"]


@pytest.fixture(scope="module")
def rollback(deploy_steps):
    found = [s for s in deploy_steps if any(w[:1] == ["restore"] for w in own_commands(s))]
    assert len(found) == 1
    return found[0]


def test_cd_puts_both_previous_images_back_on_failure_and_on_cancellation(deploy_steps, rollback):
    restored = [w[1:3] for w in own_commands(rollback) if w[:1] == ["restore"]]
    condition = str(rollback.get("if", ""))
    assert "failure()" in condition and "cancelled()" in condition
    assert restored == [["$WEB_APP", "$PREVIOUS_WEB_IMAGE"], ["$API_APP", "$PREVIOUS_API_IMAGE"]]
    assert deploy_steps.index(rollback) > step_index(deploy_steps, lambda s: bool(smoke_targets(s)))


def test_the_revision_wait_gives_up_at_once_on_a_revision_that_cannot_become_healthy(repo):
    script = (repo / ".github" / "workflows" / "containerapp.sh").read_text()
    words = [unwrapped(w) for w in shell_commands(script)]
    for state in ('"Failed"', '"Degraded"', '"ActivationFailed"', '.health == "Unhealthy"', '.provisioning == "Failed"'):
        assert state in script, state
    assert any(w[:4] == ["az", "containerapp", "replica", "list"] and "--revision" in w for w in words)
    assert '"$restarts" -gt "$first_restarts"' in script


def timeout_of(step: dict) -> int:
    return step["timeout-minutes"]


def is_rollback(step: dict) -> bool:
    """Runs only when something went wrong: a failure or a cancellation, never on success."""
    condition = str(step.get("if", ""))
    return ("failure()" in condition or "cancelled()" in condition) and "success()" not in condition


def test_every_deploy_step_has_a_time_limit(deploy_steps):
    assert [s.get("name") for s in deploy_steps if not isinstance(s.get("timeout-minutes"), int)] == []


def test_the_step_limits_add_up_to_less_than_the_job_limit(repo, cd, deploy_steps):
    happy = sum(timeout_of(s) for s in deploy_steps if not is_rollback(s))
    rollback = sum(timeout_of(s) for s in deploy_steps if is_rollback(s))
    job = cd["jobs"]["deploy"]["timeout-minutes"]
    assert happy + rollback < job
    # The comment above the job limit states the same sums.
    text = (repo / ".github" / "workflows" / "deploy-azure.yml").read_text()
    stated = re.search(r"= (\d+)\n.*?(\d+) \+ (\d+) = (\d+) < (\d+)\.", text, re.S)
    assert stated and [int(n) for n in stated.groups()] == [happy, happy, rollback, happy + rollback, job]


def test_what_runs_after_a_cancellation_fits_in_the_time_github_still_gives(deploy_steps, rollback):
    after_cancel = [s for s in deploy_steps if "always()" in str(s.get("if", "")) or "cancelled()" in str(s.get("if", ""))]
    assert rollback in after_cancel
    assert sum(timeout_of(s) for s in after_cancel) < CANCEL_GRACE_MINUTES


@pytest.mark.parametrize("function", ["deploy", "migrate", "restore"])
def test_the_scripts_give_up_before_their_step_limit(deploy_steps, function):
    for step in deploy_steps:
        calls = [w for w in own_commands(step) if w[:1] == [function] and len(w) == 4]
        if calls:
            assert sum(int(w[3]) for w in calls) < 60 * timeout_of(step), step["name"]
            return
    pytest.fail(f"no step calls {function}")


# --- Comments and messages name real places ------------------------------------------------


def headings(path: Path) -> set[str]:
    return {line.lstrip("#").strip() for line in path.read_text().splitlines() if line.startswith("#")}


def section_references(repo: Path) -> list[tuple[str, str, str]]:
    """(file, document, section) of every `docs/x.md, "Section"` in the workflows and actions."""
    found = []
    for path in [*sorted(WORKFLOWS.iterdir()), *sorted((repo / ".github" / "actions").rglob("*.yml"))]:
        for document, section in re.findall(r"((?:docs/)?[\w./-]+\.md|README), \\?\"([^\"\\]+)\\?\"", path.read_text()):
            found.append((path.name, document, section))
    return found


def test_every_section_a_workflow_names_exists(repo):
    references = section_references(repo)
    assert references
    broken = [f"{name}: {document} \"{section}\"" for name, document, section in references
              if section not in headings(repo / ("README.md" if document == "README" else document))]
    assert broken == []
