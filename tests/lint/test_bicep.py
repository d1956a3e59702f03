"""deploy/azure: main.bicep parsed by pycep-parser, its parameters file by json, and the rules the
service depends on, worked out for each backend (support/bicep.py): the API internal with its
probes; on SQLite one replica over SMB with the share on /data; on Postgres several replicas, no
share, TLS verified and enforced, backups, sign-in without a password in the URL; the web tier
public and reaching the API through its ingress."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from support.bicep import Deployment

BICEP_TYPES = {"int": int, "string": str, "bool": bool, "array": list, "object": dict}


@pytest.fixture(scope="module")
def bicep(repo):
    pycep = pytest.importorskip("pycep", reason="pycep-parser: .venv/bin/pip install -r .ci/requirements.txt")
    return pycep.BicepParser().parse(file_path=repo / "deploy" / "azure" / "main.bicep")


@pytest.fixture(scope="module")
def given(repo):
    return json.loads((repo / "deploy" / "azure" / "main.parameters.json").read_text())["parameters"]


def decorators(parameter: dict) -> dict:
    return {d["type"]: d.get("argument") for d in parameter.get("decorators", [])}


def test_every_given_parameter_is_declared_in_main_bicep(bicep, given):
    assert set(given) - set(bicep["parameters"]) == set()


def test_every_required_parameter_is_given(bicep, given):
    required = {name for name, p in bicep["parameters"].items()
                if p.get("default") is None and "secure" not in decorators(p)}
    assert required - set(given) == set()


def test_every_given_value_has_the_declared_type(bicep, given):
    wrong = {name: entry["value"] for name, entry in given.items() if name in bicep["parameters"]
             and not isinstance(entry["value"], BICEP_TYPES[bicep["parameters"][name]["type"]])}
    assert wrong == {}


def test_every_given_value_keeps_the_declared_limits(bicep, given):
    broken = []
    for name, entry in given.items():
        limits = decorators(bicep["parameters"].get(name, {}))
        value = entry["value"]
        size = len(value) if isinstance(value, (str, list)) else None
        if "min_value" in limits and value < limits["min_value"]:
            broken.append(f"{name} < {limits['min_value']}")
        if "max_value" in limits and value > limits["max_value"]:
            broken.append(f"{name} > {limits['max_value']}")
        if "min_length" in limits and size is not None and size < limits["min_length"]:
            broken.append(f"{name} shorter than {limits['min_length']}")
        if "max_length" in limits and size is not None and size > limits["max_length"]:
            broken.append(f"{name} longer than {limits['max_length']}")
    assert broken == []


def test_no_resource_uses_a_preview_api_version(bicep):
    previews = {name: r["api_version"] for name, r in bicep["resources"].items() if "preview" in r["api_version"]}
    assert previews == {}


def test_the_container_apps_are_declared_as_api_and_web(bicep):
    apps = {name for name, r in bicep["resources"].items() if r["type"] == "Microsoft.App/containerApps"}
    assert {"api", "web"} <= apps


# The deployments the rules are checked for: the parameters file as given (SQLite), and Postgres
# with each way of signing in.
DEPLOYMENTS = {
    "sqlite": {},
    "postgres-managed-identity": {"databaseBackend": "postgres"},
    "postgres-password": {"databaseBackend": "postgres", "postgresAuth": "password"},
}


@pytest.fixture(scope="module", params=DEPLOYMENTS, ids=str)
def deployment(request, bicep, given):
    values = {name: entry["value"] for name, entry in given.items()}
    return Deployment(bicep, {**values, **DEPLOYMENTS[request.param]})


@pytest.fixture(scope="module")
def sqlite_deployment(bicep, given):
    return Deployment(bicep, {name: entry["value"] for name, entry in given.items()})


@pytest.fixture(scope="module", params=["postgres-managed-identity", "postgres-password"])
def postgres_deployment(request, bicep, given):
    values = {name: entry["value"] for name, entry in given.items()}
    return Deployment(bicep, {**values, **DEPLOYMENTS[request.param]})


def api_env_of(deployment):
    container = deployment.properties("api")["template"]["containers"][0]
    return {e["name"]: e.get("value") for e in container.get("env", [])}


@pytest.fixture(scope="module")
def api(deployment):
    return deployment.properties("api")


@pytest.fixture(scope="module")
def api_container(api):
    return api["template"]["containers"][0]


@pytest.fixture(scope="module")
def api_env(deployment):
    return api_env_of(deployment)


@pytest.fixture(scope="module")
def api_probes(api_container):
    return {p["type"]: p.get("httpGet", {}) for p in api_container.get("probes", [])}


def test_the_api_ingress_is_internal(api):
    assert api["configuration"]["ingress"]["external"] is False


def test_the_api_ingress_targets_port_8000(api):
    assert api["configuration"]["ingress"]["targetPort"] == 8000


def test_the_api_runs_a_single_revision(api):
    assert api["configuration"]["activeRevisionsMode"] == "Single"


def test_the_api_runs_in_production(api_env):
    assert api_env.get("APP_ENV") == "production"


@pytest.mark.parametrize("probe, path", [("Liveness", "/api/healthz"), ("Readiness", "/api/health"),
                                         ("Startup", "/api/healthz")])
def test_the_api_probe_path(api_probes, probe, path):
    assert api_probes.get(probe, {}).get("path") == path


def test_every_api_probe_uses_port_8000(api_probes):
    assert {p.get("port") for p in api_probes.values()} == {8000}


def test_the_api_runs_exactly_one_replica_on_sqlite(sqlite_deployment):
    scale = sqlite_deployment.properties("api")["template"]["scale"]
    assert (scale.get("minReplicas"), scale.get("maxReplicas")) == (1, 1)


def test_the_api_uses_the_delete_journal_mode_no_wal_on_smb(sqlite_deployment):
    assert str(api_env_of(sqlite_deployment).get("SQLITE_JOURNAL_MODE")).lower() == "delete"


def test_the_api_database_is_data_app_db(sqlite_deployment):
    assert api_env_of(sqlite_deployment).get("DB_PATH") == "/data/app.db"


def test_the_api_has_an_azure_files_volume_mounted_with_nobrl(sqlite_deployment):
    volumes = sqlite_deployment.properties("api")["template"].get("volumes", [])
    assert any(v.get("storageType") == "AzureFile" and "nobrl" in str(v.get("mountOptions")).split(",")
               for v in volumes)


def test_the_api_volume_is_mounted_on_data(sqlite_deployment):
    container = sqlite_deployment.properties("api")["template"]["containers"][0]
    assert any(m.get("mountPath") == "/data" for m in container.get("volumeMounts", []))


def test_sqlite_deploys_no_postgres_server(sqlite_deployment):
    assert not sqlite_deployment.deployed("postgres")


def test_postgres_runs_at_least_two_api_replicas(postgres_deployment):
    assert postgres_deployment.properties("api")["template"]["scale"]["minReplicas"] >= 2


def test_postgres_lets_the_api_scale_out_on_http_load(postgres_deployment):
    scale = postgres_deployment.properties("api")["template"]["scale"]
    assert scale["maxReplicas"] > scale["minReplicas"] and any("http" in rule for rule in scale["rules"])


def test_postgres_mounts_no_azure_files_share(postgres_deployment):
    volumes = postgres_deployment.properties("api")["template"].get("volumes", [])
    assert not postgres_deployment.deployed("share") and all(v["storageType"] != "AzureFile" for v in volumes)


def test_postgres_sets_no_sqlite_settings(postgres_deployment):
    assert {"DB_PATH", "SQLITE_JOURNAL_MODE"} & set(api_env_of(postgres_deployment)) == set()


def test_postgres_connects_with_verified_tls(postgres_deployment):
    assert "sslmode=verify-full" in api_env_of(postgres_deployment)["DATABASE_URL"]


def test_the_postgres_url_carries_no_password(postgres_deployment):
    url = api_env_of(postgres_deployment)["DATABASE_URL"]
    credentials = url.split("://", 1)[1].split("@", 1)[0]
    assert ":" not in credentials


def test_the_server_refuses_connections_without_tls(postgres_deployment):
    setting = postgres_deployment.resource("postgresTls")
    assert (setting["name"], setting["properties"]["value"]) == ("require_secure_transport", "on")


def test_the_server_keeps_automated_backups_for_a_week_or_more(postgres_deployment):
    assert postgres_deployment.properties("postgres")["backup"]["backupRetentionDays"] >= 7


def test_the_server_runs_a_current_major_version(postgres_deployment):
    assert int(postgres_deployment.properties("postgres")["version"]) >= 16


def test_the_server_is_reachable_from_azure_services_only(postgres_deployment):
    rule = postgres_deployment.properties("postgresFirewall")
    assert (rule["startIpAddress"], rule["endIpAddress"]) == ("0.0.0.0", "0.0.0.0")


def test_managed_identity_sign_in_uses_the_apps_user_assigned_identity(bicep, given):
    values = {name: entry["value"] for name, entry in given.items()}
    deployment = Deployment(bicep, {**values, **DEPLOYMENTS["postgres-managed-identity"]})
    env = api_env_of(deployment)
    server = deployment.properties("postgres")["authConfig"]
    assert (env["DATABASE_AUTH"], "AZURE_CLIENT_ID" in env, deployment.resource("api")["identity"]["type"],
            server["activeDirectoryAuth"], server["passwordAuth"], deployment.deployed("postgresAdmin")) == (
        "azure-managed-identity", True, "UserAssigned", "Enabled", "Disabled", True)


def test_the_password_reaches_the_api_as_a_secret_file_not_an_environment_variable(bicep, given):
    values = {name: entry["value"] for name, entry in given.items()}
    deployment = Deployment(bicep, {**values, **DEPLOYMENTS["postgres-password"]})
    api = deployment.properties("api")
    env = api["template"]["containers"][0]["env"]
    secret_volumes = [v for v in api["template"]["volumes"] if v["storageType"] == "Secret"]
    assert (api_env_of(deployment)["DATABASE_PASSWORD_FILE"], any("secretRef" in e for e in env),
            [s["secretRef"] for v in secret_volumes for s in v["secrets"]]) == (
        "/run/secrets/db-password", False, ["db-password"])


@pytest.fixture(scope="module")
def web(bicep):
    return bicep["resources"]["web"]["config"]["properties"]


def test_the_web_ingress_is_external(web):
    assert web["configuration"]["ingress"]["external"] is True


def test_the_web_ingress_targets_port_8080(web):
    assert web["configuration"]["ingress"]["targetPort"] == 8080


def test_the_web_tier_reaches_the_api_through_its_ingress_not_port_8000(web):
    env = {e["name"]: e.get("value") for e in web["template"]["containers"][0].get("env", [])}
    upstream = str(env.get("API_UPSTREAM", ""))
    assert upstream and ":8000" not in upstream


@pytest.mark.optional_tool
def test_main_bicep_builds_with_the_bicep_compiler(repo):
    # No Bicep compiler can be installed here; where one exists (az bicep, bicep) it builds too.
    if shutil.which("az") and subprocess.run(["az", "bicep", "version"], capture_output=True).returncode == 0:
        argv = ["az", "bicep", "build", "--file", "deploy/azure/main.bicep", "--stdout"]
    elif shutil.which("bicep"):
        argv = ["bicep", "build", "deploy/azure/main.bicep", "--stdout"]
    else:
        pytest.skip("no Bicep compiler (az bicep, bicep); main.bicep is checked by structure only")
    done = subprocess.run(argv, cwd=repo, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
