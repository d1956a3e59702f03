"""azure.yaml, the Azure Developer CLI's project file: valid against azd's published schema (vendored
in tests/lint/schemas/, the machine may have no network), pointing at deploy/azure, both apps
built from their Dockerfiles, and the predeploy hook that runs the migration job. The hook itself
runs here against stand-ins for `azd` and `curl` that answer like Azure Resource Manager."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from support.bicep import bicepparam_values, read_bicepparam
from support.tools import require_tool, unavailable

PIP_INSTALL = ".venv/bin/pip install -r .ci/requirements.txt"


@pytest.fixture(scope="module")
def project(repo) -> dict:
    return yaml.safe_load((repo / "azure.yaml").read_text())


def test_azure_yaml_is_valid_against_azds_schema(repo):
    # Run from the interpreter that runs the tests, which has the pinned tools installed.
    if importlib.util.find_spec("check_jsonschema") is None:
        unavailable("check-jsonschema is not installed", f"{PIP_INSTALL} (check-jsonschema)")
    done = subprocess.run([sys.executable, "-m", "check_jsonschema", "--schemafile", "tests/lint/schemas/azure.yaml.json",
                           "azure.yaml"], cwd=repo, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_service_names_its_host(project):
    # Without one the schema reaches for remote sub-schemas, which fails offline with a confusing error.
    assert {name: "host" in service for name, service in project["services"].items()} == {"api": True, "web": True}


def test_azd_provisions_deploy_azure_with_its_parameters_file(repo, project):
    infra = project["infra"]
    folder = repo / infra["path"]
    assert (infra["provider"], (folder / f"{infra['module']}.bicep").is_file(),
            (folder / f"{infra['module']}.bicepparam").is_file()) == ("bicep", True, True)


def test_no_service_name_matches_a_bicep_file_in_the_infra_folder(repo, project):
    # azd would deploy that file for the service instead of updating the app's image.
    folder = repo / project["infra"]["path"]
    assert [name for name in project["services"] if (folder / f"{name}.bicep").exists()] == []


@pytest.mark.parametrize("service, dockerfile", [("api", "api/Dockerfile"), ("web", "web/Dockerfile")])
def test_each_app_is_built_from_its_dockerfile_at_the_repository_root(repo, project, service, dockerfile):
    entry = project["services"][service]
    built = repo / entry["project"] / entry["docker"]["path"]
    assert (entry["host"], built.resolve(), (repo / entry["project"] / entry["docker"]["context"]).resolve()) == (
        "containerapp", (repo / dockerfile).resolve(), repo.resolve())


def test_the_api_predeploy_hook_is_an_executable_script(repo, project):
    hook = project["services"]["api"]["hooks"]["predeploy"]
    script = repo / project["services"]["api"]["project"] / hook["run"]
    assert (hook["shell"], script.is_file(), os.access(script, os.X_OK)) == ("sh", True, True)


def test_the_backend_variable_reaches_the_template_and_the_pipeline(repo, project):
    params = read_bicepparam(repo / "deploy" / "azure" / "main.bicepparam")
    chosen = {backend: bicepparam_values(params, {"AZURE_LOCATION": "x", "AZURE_ENV_NAME": "x",
                                                  "ITEMS_DATABASE_BACKEND": backend})["databaseBackend"]
              for backend in ("sqlite", "postgres")}
    assert (chosen, "ITEMS_DATABASE_BACKEND" in project["pipeline"]["variables"],
            "AZURE_RESOURCE_GROUP" in project["pipeline"]["variables"]) == (
        {"sqlite": "sqlite", "postgres": "postgres"}, True, True)


# --- the hook, against stand-ins ---------------------------------------------------------------

FAKE_AZD = """\
#!/bin/sh
[ "$1 $2" = "auth token" ] || exit 2
echo '{"token": "t0ken", "expiresOn": "2030-01-01T00:00:00Z"}'
"""

# Answers each request from $ARM_STATE: the job (GET/PATCH), the start (202, then the Location),
# the execution (Running once, then $EXECUTION_END). Every call is logged to $ARM_LOG.
FAKE_CURL = """\
#!/bin/sh
method=GET headers= body= data=
url=
while [ $# -gt 0 ]; do
  case "$1" in
    -X) method="$2"; shift 2 ;;
    -D) headers="$2"; shift 2 ;;
    -o) body="$2"; shift 2 ;;
    -w | -H) shift 2 ;;
    --data) data="$2"; shift 2 ;;
    -sS) shift ;;
    *) url="$1"; shift ;;
  esac
done
echo "$method $url $data" >> "$ARM_LOG"
: > "$headers"
status=200
case "$method $url" in
  "GET "*/jobs/items-migrate\\?*)
    echo '{"properties": {"provisioningState": "Succeeded", "template": {"containers": [{"name": "migrate", "image": "old", "args": ["migrate"]}]}}}' > "$body" ;;
  "PATCH "*) echo '{}' > "$body"; status=202 ;;
  "POST "*/start\\?*)
    echo '' > "$body"; printf 'Location: https://management.azure.com/started\\r\\n' > "$headers"; status=202 ;;
  "GET https://management.azure.com/started") echo '{"name": "items-migrate-abc", "id": "x"}' > "$body" ;;
  "GET "*/executions/items-migrate-abc\\?*)
    if [ -e "$ARM_LOG.running" ]; then
      echo "{\\"properties\\": {\\"status\\": \\"$EXECUTION_END\\"}}" > "$body"
    else
      : > "$ARM_LOG.running"; echo '{"properties": {"status": "Running"}}' > "$body"
    fi ;;
  *) status=404; echo '{}' > "$body" ;;
esac
printf '%s' "$status"
"""


def run_hook(repo: Path, tmp_path: Path, **environment: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    require_tool("jq", "apt-get install jq")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("azd", FAKE_AZD), ("curl", FAKE_CURL), ("sleep", "#!/bin/sh\nexit 0\n")):
        (bin_dir / name).write_text(textwrap.dedent(text))
        (bin_dir / name).chmod(stat.S_IRWXU)
    log = tmp_path / "arm.log"
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "ARM_LOG": str(log), "EXECUTION_END": "Succeeded",
           "AZURE_SUBSCRIPTION_ID": "sub", "AZURE_RESOURCE_GROUP": "rg", **environment}
    done = subprocess.run(["sh", "deploy/azure/azd-migrate.sh"], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=60)
    return done, log.read_text().splitlines() if log.exists() else []


def test_the_hook_does_nothing_on_sqlite(repo, tmp_path):
    done, calls = run_hook(repo, tmp_path, SERVICE_API_IMAGE_NAME="acr.example/api:1")
    assert (done.returncode, calls) == (0, []), done.stderr


def test_the_hook_updates_the_job_image_starts_it_and_waits_for_success(repo, tmp_path):
    done, calls = run_hook(repo, tmp_path, migrateJobName="items-migrate", SERVICE_API_IMAGE_NAME="acr.example/api:1")
    patches = [call for call in calls if call.startswith("PATCH ")]
    patched = json.loads(patches[0].split(" ", 2)[2]) if patches else {}
    assert (done.returncode, patched, [c.split(" ")[0] for c in calls if "/start?" in c]) == (
        0, {"properties": {"template": {"containers": [{"name": "migrate", "image": "acr.example/api:1",
                                                         "args": ["migrate"]}]}}}, ["POST"]), done.stderr


def test_the_hook_fails_the_deploy_when_the_migration_fails(repo, tmp_path):
    done, _ = run_hook(repo, tmp_path, migrateJobName="items-migrate", SERVICE_API_IMAGE_NAME="acr.example/api:1",
                       EXECUTION_END="Failed")
    assert (done.returncode, "items-migrate-abc: Failed" in done.stderr) == (1, True)


def test_the_hook_refuses_to_run_without_the_pushed_image(repo, tmp_path):
    done, calls = run_hook(repo, tmp_path, migrateJobName="items-migrate")
    assert (done.returncode, calls) == (1, [])
