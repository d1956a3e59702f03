"""deploy/azure: main.bicep, its modules and the .bicepparam files parsed by pycep-parser
(support/bicep.py), checked for what the compiler would refuse (module parameters, names that are
not known when the deployment starts), for the rules the service depends on, worked out for each
backend and way of signing in, and for the connection budget. The compiler itself runs where it is
installed (the last test)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from support.bicep import (SERVICE_PRINCIPAL_DEPLOYER, START_PROPERTIES, Deployment, Runtime, access_path,
                           bicepparam_values, parse_bicep, read_bicepparam)

pytest.importorskip("pycep", reason="pycep-parser: .venv/bin/pip install -r .ci/requirements.txt")

AZURE = Path(__file__).resolve().parents[2] / "deploy" / "azure"
MAIN = AZURE / "main.bicep"
# The AKS cluster's own entry template, deployed beside main.bicep's resources, never by CD.
AKS = AZURE / "aks.bicep"
ENTRY_TEMPLATES = (MAIN, AKS)
TEMPLATES = sorted([*ENTRY_TEMPLATES, *(AZURE / "modules").glob("*.bicep")])
PARAMS_FILES = sorted(AZURE.glob("*.bicepparam"))
BACKEND_PARAMS = {"sqlite": AZURE / "main.sqlite.bicepparam", "postgres": AZURE / "main.postgres.bicepparam"}

# The API versions chosen because they know the values passed (Postgres 17 is listed from
# 2025-08-01 on) or are the newest GA ones; a template may use these or newer, never older.
MINIMUM_API_VERSIONS = {
    "Microsoft.DBforPostgreSQL/": "2025-08-01",
    "Microsoft.App/": "2026-01-01",
}
# The one preview API version allowed, for the properties no GA version has: the environment's
# managed OpenTelemetry agent is in the preview versions of Microsoft.App/managedEnvironments only
# (not in the GA 2026-01-01). The exception holds only while the resource sets those properties.
PREVIEW_FOR = {
    "Microsoft.App/managedEnvironments": ("2025-10-02-preview",
                                          {"appInsightsConfiguration", "openTelemetryConfiguration"}),
}

# Connections a Postgres SKU allows the app: max_connections less the 15 Azure reserves.
USABLE_CONNECTIONS = {"Standard_B1ms": 50 - 15}
# During a deploy the old and new revisions both hold their pools.
REVISIONS_AT_ONCE = 2
MIGRATE_JOB_CONNECTIONS = 1
PEOPLE_CONNECTIONS = 3

BICEP_TYPES = {"int": int, "string": str, "bool": bool, "array": list, "object": dict}


def decorators(parameter: dict) -> dict:
    return {d["type"]: d.get("argument") for d in parameter.get("decorators", [])}


def deployment_of(params_file: Path, overrides: dict | None = None, **kwargs) -> Deployment:
    values = {**bicepparam_values(read_bicepparam(params_file), kwargs.pop("environment", None)),
              **(overrides or {})}
    return Deployment(parse_bicep(MAIN), values, path=MAIN, **kwargs)


# --- the templates as the compiler reads them ------------------------------------------------


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_the_template_parses(template):
    assert parse_bicep(template)


def module_calls():
    """(entry template, module name) of every module call, with the module's file."""
    return {(entry.name, name): (entry.parent / module["detail"]["path"]).resolve()
            for entry in ENTRY_TEMPLATES for name, module in parse_bicep(entry)["modules"].items()}


@pytest.mark.parametrize("module", module_calls(), ids=lambda key: "/".join(key))
def test_each_module_call_passes_every_required_parameter_and_only_declared_ones(module):
    entry, name = module
    call = parse_bicep(AZURE / entry)["modules"][name]["config"]
    call = call.get("config", call)
    declared = parse_bicep(module_calls()[module])["parameters"]
    required = {name for name, p in declared.items() if p.get("default") is None}
    passed = set(call.get("params", {}))
    assert (sorted(required - passed), sorted(passed - set(declared))) == ([], [])


def every_module_is_called():
    return {path.name for path in (AZURE / "modules").glob("*.bicep")} - {p.name for p in module_calls().values()}


def test_every_module_is_called_from_an_entry_template():
    assert every_module_is_called() == set()


def runtime_references(template: dict, node, seen: frozenset = frozenset()) -> list[str]:
    """What in an expression is known only once resources exist: another resource's properties
    (anything but id, name, type, apiVersion) or a module output. Parameters count as known: a
    caller's runtime value passed in as a module parameter is evaluated before the module starts."""
    found: list[str] = []
    if isinstance(node, str):
        if node in template.get("variables", {}) and node not in seen:
            found += runtime_references(template, template["variables"][node]["value"], seen | {node})
        for inner in re.findall(r"\$\{([^}]*)\}", node):
            found += runtime_references(template, inner_expression(inner), seen)
        return found
    if isinstance(node, list):
        for item in node:
            found += runtime_references(template, item, seen)
        return found
    if isinstance(node, dict):
        if "operator" in node and node["operator"]["type"] in ("property_accessor", "index_accessor"):
            root, path = access_path(node)
            if isinstance(root, str) and root in template.get("resources", {}) and path and path[0] not in START_PROPERTIES:
                return [f"{root}.{'.'.join(map(str, path))}"]
            if isinstance(root, str) and root in template.get("modules", {}):
                return [f"{root}.{'.'.join(map(str, path))}"]
        for value in node.values():
            found += runtime_references(template, value, seen)
    return found


def inner_expression(text: str):
    from support.bicep import parse_expression

    return parse_expression(text)


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_no_resource_name_comes_from_a_runtime_property(template):
    # BCP120: a name must be calculable when the deployment starts (a principal ID is not).
    parsed = parse_bicep(template)
    derived = {}
    for name, resource in parsed.get("resources", {}).items():
        config = resource["config"]
        body = config.get("config", config)
        if runtime_references(parsed, body.get("name")):
            derived[name] = runtime_references(parsed, body.get("name"))
    assert derived == {}


def body_of(resource: dict) -> dict:
    config = resource["config"]
    return config.get("config", config)


def allowed_preview(resource: dict) -> bool:
    version, needs = PREVIEW_FOR.get(resource["type"], ("", set()))
    return resource["api_version"] == version and bool(needs & set(body_of(resource).get("properties", {})))


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_no_resource_uses_a_preview_api_version(template):
    resources = parse_bicep(template).get("resources", {})
    assert {n: r["api_version"] for n, r in resources.items()
            if "preview" in r["api_version"] and not allowed_preview(r)} == {}


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_the_allowed_preview_is_exempted_from_the_recent_api_version_rule_where_it_is_used(template):
    # bicepconfig.json makes use-recent-api-versions an error, and a GA version newer than the
    # preview exists.
    lines = template.read_text().splitlines()
    previews = [n for n, line in enumerate(lines) if re.match(r"resource \w+ '[^']+@[^']*-preview'", line)]
    assert [lines[n] for n in previews if lines[n - 1].strip() != "#disable-next-line use-recent-api-versions"] == []


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_api_versions_are_at_least_the_chosen_ones(template):
    older = {}
    for name, resource in parse_bicep(template).get("resources", {}).items():
        for prefix, minimum in MINIMUM_API_VERSIONS.items():
            older_than_chosen = resource["type"].startswith(prefix) and resource["api_version"] < minimum
            if older_than_chosen and not allowed_preview(resource):
                older[name] = f"{resource['type']}@{resource['api_version']} < {minimum}"
    assert older == {}


def test_the_postgres_server_children_run_one_after_another():
    # Concurrent updates of one flexible server fail with ServerIsBusy.
    parsed = parse_bicep(AZURE / "modules" / "postgres.bicep")
    children = {}
    for name, resource in parsed["resources"].items():
        config = resource["config"]
        body = config.get("config", config)
        if body.get("parent") == "server":
            children[name] = set(body.get("dependsOn", []))
            assert "loop_type" not in config or decorators(resource).get("batchSize") == 1, name

    def before(name: str) -> set:
        result = set()
        for dependency in children.get(name, ()):
            result |= {dependency} | before(dependency)
        return result

    unordered = [(a, b) for a in children for b in children
                 if a < b and a not in before(b) and b not in before(a)]
    assert (len(children) >= 5, unordered) == (True, [])


def test_the_api_readiness_probe_is_liveness_so_a_database_outage_keeps_replicas_in_rotation():
    for params_file in BACKEND_PARAMS.values():
        container = deployment_of(params_file).module("api").properties("api")["template"]["containers"][0]
        probes = {p["type"]: p["httpGet"]["path"] for p in container["probes"]}
        assert probes == {"Startup": "/api/healthz", "Liveness": "/api/healthz", "Readiness": "/api/healthz"}


# --- parameter files ---------------------------------------------------------------------------


@pytest.mark.parametrize("params_file", PARAMS_FILES, ids=lambda p: p.name)
def test_the_parameters_file_uses_main_bicep(params_file):
    assert read_bicepparam(params_file).using in ("./main.bicep", "main.bicep")


@pytest.mark.parametrize("params_file", PARAMS_FILES, ids=lambda p: p.name)
def test_the_parameters_file_names_only_declared_parameters(params_file):
    assert set(read_bicepparam(params_file).assignments) - set(parse_bicep(MAIN)["parameters"]) == set()


@pytest.mark.parametrize("params_file", PARAMS_FILES, ids=lambda p: p.name)
def test_the_parameters_file_assigns_every_required_parameter(params_file):
    # az builds a .bicepparam once without the command line's overrides (BCP258 on a gap).
    required = {n for n, p in parse_bicep(MAIN)["parameters"].items() if p.get("default") is None}
    assert required - set(read_bicepparam(params_file).assignments) == set()


@pytest.mark.parametrize("params_file", BACKEND_PARAMS.values(), ids=lambda p: p.name)
def test_what_the_workflow_overrides_is_assigned_in_the_backend_file(params_file):
    # Overrides of parameters a .bicepparam does not assign were ignored by older Bicep CLIs.
    assigned = set(read_bicepparam(params_file).assignments)
    assert {"imageTag", "imageRepository", "ghcrUsername", "ghcrPassword"} - assigned == set()


@pytest.mark.parametrize("params_file", PARAMS_FILES, ids=lambda p: p.name)
def test_the_parameters_file_values_have_the_declared_types_and_limits(params_file):
    declared = parse_bicep(MAIN)["parameters"]
    broken = []
    for name, value in bicepparam_values(read_bicepparam(params_file)).items():
        if isinstance(value, Runtime):
            continue
        parameter = declared[name]
        if not isinstance(value, BICEP_TYPES[parameter["type"]]):
            broken.append(f"{name}: {type(value).__name__}")
        limits = decorators(parameter)
        if "allowed" in limits and value not in limits["allowed"]:
            broken.append(f"{name} not in {limits['allowed']}")
        if "min_value" in limits and value < limits["min_value"]:
            broken.append(f"{name} < {limits['min_value']}")
        if "max_value" in limits and value > limits["max_value"]:
            broken.append(f"{name} > {limits['max_value']}")
    assert broken == []


@pytest.mark.parametrize("params_file", PARAMS_FILES, ids=lambda p: p.name)
def test_no_secure_parameter_gets_a_literal_in_a_parameters_file(params_file):
    secure = {n for n, p in parse_bicep(MAIN)["parameters"].items() if "secure" in decorators(p)}
    literal = {n for n, node in read_bicepparam(params_file).assignments.items() if n in secure and isinstance(node, str)}
    assert literal == set()


def test_bicepconfig_makes_every_linter_rule_it_names_an_error():
    config = json.loads((AZURE / "bicepconfig.json").read_text())
    rules = config["analyzers"]["core"]["rules"]
    assert (config["analyzers"]["core"]["enabled"], {r["level"] for r in rules.values()},
            {"explicit-values-for-loc-params", "use-recent-api-versions", "no-unused-params",
             "secure-secrets-in-params", "outputs-should-not-contain-secrets"} - set(rules)) == (True, {"error"}, set())


# --- the connection budget ---------------------------------------------------------------------


def connection_budget(values: dict) -> tuple[int, int]:
    needed = ((values["apiPoolSize"] + 1) * values["apiMaxReplicas"] * REVISIONS_AT_ONCE
              + MIGRATE_JOB_CONNECTIONS + PEOPLE_CONNECTIONS)
    return needed, USABLE_CONNECTIONS[values["postgresSkuName"]]


def test_the_default_parameters_fit_the_default_skus_connections():
    main = Deployment(parse_bicep(MAIN), {}, path=MAIN)
    values = {name: main.value(name) for name in ("apiPoolSize", "apiMaxReplicas", "postgresSkuName")}
    needed, usable = connection_budget(values)
    assert needed <= usable, f"(pool + 1) x replicas x 2 + 1 + 3 = {needed} > {usable}"


def test_the_postgres_parameters_file_fits_its_skus_connections():
    main = Deployment(parse_bicep(MAIN), {}, path=MAIN)
    values = {name: main.value(name) for name in ("apiPoolSize", "apiMaxReplicas", "postgresSkuName")}
    values.update({k: v for k, v in bicepparam_values(read_bicepparam(BACKEND_PARAMS["postgres"])).items() if k in values})
    needed, usable = connection_budget(values)
    assert needed <= usable, f"(pool + 1) x replicas x 2 + 1 + 3 = {needed} > {usable}"


# --- each deployment: SQLite, and Postgres with each way of signing in --------------------------

DEPLOYMENTS = {
    "sqlite": (BACKEND_PARAMS["sqlite"], {}),
    "postgres-managed-identity": (BACKEND_PARAMS["postgres"], {}),
    "postgres-password": (BACKEND_PARAMS["postgres"], {"postgresAuth": "password",
                                                        "postgresAdminPassword": "admin-secret",
                                                        "postgresAppPassword": "app-secret"}),
}


@pytest.fixture(scope="module", params=DEPLOYMENTS, ids=str)
def deployment(request):
    params_file, overrides = DEPLOYMENTS[request.param]
    return deployment_of(params_file, overrides)


@pytest.fixture(scope="module")
def sqlite_deployment():
    return deployment_of(*DEPLOYMENTS["sqlite"])


@pytest.fixture(scope="module", params=["postgres-managed-identity", "postgres-password"])
def postgres_deployment(request):
    return deployment_of(*DEPLOYMENTS[request.param])


@pytest.fixture(scope="module")
def mi_deployment():
    return deployment_of(*DEPLOYMENTS["postgres-managed-identity"])


@pytest.fixture(scope="module")
def password_deployment():
    return deployment_of(*DEPLOYMENTS["postgres-password"])


def api_of(deployment):
    return deployment.module("api").properties("api")


def env_of(container: dict) -> dict:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def api_env_of(deployment) -> dict:
    return env_of(api_of(deployment)["template"]["containers"][0])


def job_of(deployment):
    return deployment.module("migrateJob").properties("job")


def job_env_of(deployment) -> dict:
    return env_of(job_of(deployment)["template"]["containers"][0])


def test_the_api_ingress_is_internal_on_port_8000(deployment):
    ingress = api_of(deployment)["configuration"]["ingress"]
    assert (ingress["external"], ingress["targetPort"]) == (False, 8000)


def test_the_api_runs_a_single_revision(deployment):
    assert api_of(deployment)["configuration"]["activeRevisionsMode"] == "Single"


def test_the_api_runs_in_production(deployment):
    assert api_env_of(deployment).get("APP_ENV") == "production"


def test_every_api_probe_uses_port_8000(deployment):
    probes = api_of(deployment)["template"]["containers"][0]["probes"]
    assert {p["httpGet"]["port"] for p in probes} == {8000}


def test_the_api_runs_exactly_one_replica_on_sqlite(sqlite_deployment):
    scale = api_of(sqlite_deployment)["template"]["scale"]
    assert (scale.get("minReplicas"), scale.get("maxReplicas")) == (1, 1)


def test_the_api_uses_the_delete_journal_mode_no_wal_on_smb(sqlite_deployment):
    assert api_env_of(sqlite_deployment).get("SQLITE_JOURNAL_MODE") == "delete"


def test_the_api_database_is_data_app_db(sqlite_deployment):
    assert api_env_of(sqlite_deployment).get("DB_PATH") == "/data/app.db"


def test_the_api_has_an_azure_files_volume_mounted_with_nobrl_on_data(sqlite_deployment):
    template = api_of(sqlite_deployment)["template"]
    volume = [v for v in template["volumes"] if v["storageType"] == "AzureFile"]
    mounts = {m["volumeName"]: m["mountPath"] for m in template["containers"][0]["volumeMounts"]}
    assert (len(volume), "nobrl" in volume[0]["mountOptions"].split(","), mounts.get(volume[0]["name"])) == (
        1, True, "/data")


def test_sqlite_deploys_no_postgres_server_and_no_migration_job(sqlite_deployment):
    assert (sqlite_deployment.module_deployed("postgres"), sqlite_deployment.module_deployed("migrateJob"),
            sqlite_deployment.output("migrateJobName")) == (False, False, "")


def test_postgres_deploys_no_share(postgres_deployment):
    volumes = api_of(postgres_deployment)["template"].get("volumes", [])
    assert (postgres_deployment.module_deployed("sqliteStorage"),
            [v for v in volumes if v["storageType"] == "AzureFile"]) == (False, [])


def test_postgres_runs_at_least_two_api_replicas_and_scales_out_on_http_load(postgres_deployment):
    scale = api_of(postgres_deployment)["template"]["scale"]
    assert (scale["minReplicas"] >= 2, scale["maxReplicas"] > scale["minReplicas"],
            any("http" in rule for rule in scale["rules"])) == (True, True, True)


def test_postgres_sets_no_sqlite_settings(postgres_deployment):
    assert {"DB_PATH", "SQLITE_JOURNAL_MODE"} & set(api_env_of(postgres_deployment)) == set()


def test_the_api_waits_for_the_migration_job_on_postgres(postgres_deployment):
    assert api_env_of(postgres_deployment)["MIGRATE_ON_START"] == "false"


def test_every_postgres_url_verifies_tls_and_carries_no_password(postgres_deployment):
    for url in (api_env_of(postgres_deployment)["DATABASE_URL"], job_env_of(postgres_deployment)["DATABASE_URL"]):
        text = url.expression if isinstance(url, Runtime) else url
        credentials = text.split("://", 1)[1].split("@", 1)[0]
        assert ("sslmode=verify-full" in text, ":" in credentials) == (True, False)


def test_the_server_refuses_connections_without_tls(postgres_deployment):
    setting = postgres_deployment.module("postgres").resource("requireTls")
    assert (setting["name"], setting["properties"]["value"]) == ("require_secure_transport", "on")


def test_the_server_keeps_automated_backups_for_a_week_or_more(postgres_deployment):
    assert postgres_deployment.module("postgres").properties("server")["backup"]["backupRetentionDays"] >= 7


def test_the_server_runs_postgres_17(postgres_deployment):
    assert postgres_deployment.module("postgres").properties("server")["version"] == "17"


def test_the_server_is_reachable_from_azure_services_only(postgres_deployment):
    rule = postgres_deployment.module("postgres").properties("firewall")
    assert (rule["startIpAddress"], rule["endIpAddress"]) == ("0.0.0.0", "0.0.0.0")


def test_the_migration_job_is_manual_with_few_retries_and_a_timeout(postgres_deployment):
    configuration = job_of(postgres_deployment)["configuration"]
    assert (configuration["triggerType"], configuration["replicaRetryLimit"] <= 1,
            configuration["replicaTimeout"] > 0) == ("Manual", True, True)


def test_the_migration_job_runs_the_api_image_with_the_migrate_command(postgres_deployment):
    container = job_of(postgres_deployment)["template"]["containers"][0]
    api_image = api_of(postgres_deployment)["template"]["containers"][0]["image"]
    assert (container["image"], container["args"]) == (api_image, ["migrate"])


def test_the_migration_job_is_named_by_its_parameter(mi_deployment):
    assert (mi_deployment.module("migrateJob").resource("job")["name"],
            mi_deployment.output("migrateJobName")) == ("items-migrate", "items-migrate")


def test_entra_sign_in_gives_the_api_its_own_identity_which_is_no_administrator(mi_deployment):
    env = api_env_of(mi_deployment)
    server = mi_deployment.module("postgres")
    administrators = {server.resource(name)["properties"]["principalName"]
                      for name in ("migrateAdmin", "entraAdmin") if server.deployed(name)}
    identity = mi_deployment.module("api").resource("api")["identity"]
    assert (env["DATABASE_AUTH"], env["AZURE_CLIENT_ID"], env["DATABASE_URL"].expression.split("@")[0],
            identity["type"], list(identity["userAssignedIdentities"]), administrators) == (
        "azure-managed-identity", Runtime("apiIdentity.properties.clientId"), "postgres://items-api-identity",
        "UserAssigned", [Runtime("apiIdentity.id")], {"items-migrate-identity", "deployer@example.com"})


def test_entra_sign_in_turns_password_sign_in_off(mi_deployment):
    auth = mi_deployment.module("postgres").properties("server")["authConfig"]
    assert (auth["activeDirectoryAuth"], auth["passwordAuth"]) == ("Enabled", "Disabled")


def test_entra_sign_in_the_job_migrates_as_the_migration_identity_for_the_api_identity(mi_deployment):
    env = job_env_of(mi_deployment)
    assert {name: env.get(name) for name in ("DATABASE_AUTH", "AZURE_CLIENT_ID", "MIGRATE_APP_ROLE",
                                             "MIGRATE_APP_ROLE_ENTRA_OBJECT_ID")} == {
        "DATABASE_AUTH": "azure-managed-identity",
        "AZURE_CLIENT_ID": Runtime("migrateIdentity.properties.clientId"),
        "MIGRATE_APP_ROLE": "items-api-identity",
        "MIGRATE_APP_ROLE_ENTRA_OBJECT_ID": Runtime("apiIdentity.properties.principalId"),
    } and env["DATABASE_URL"].expression.startswith("postgres://items-migrate-identity@")


def test_the_migration_identity_is_the_administrator_named_by_its_principal_id(mi_deployment):
    admin = mi_deployment.module("postgres").resource("migrateAdmin")
    assert (admin["name"], admin["properties"]["principalType"]) == (
        Runtime("migrateIdentity.properties.principalId"), "ServicePrincipal")


def test_the_deployer_becomes_an_entra_administrator_by_default(postgres_deployment):
    admin = postgres_deployment.module("postgres")
    entry = admin.resource("entraAdmin")
    assert (admin.deployed("entraAdmin"), entry["name"], entry["properties"]["principalName"],
            entry["properties"]["principalType"]) == (
        True, "00000000-0000-0000-0000-00000000d0e5", "deployer@example.com", "User")


def test_a_service_principal_deployer_adds_no_administrator_it_cannot_name():
    deployment = deployment_of(*DEPLOYMENTS["postgres-managed-identity"], deployer=SERVICE_PRINCIPAL_DEPLOYER)
    assert (deployment.module("postgres").deployed("entraAdmin"), deployment.output("postgresEntraAdmin")) == (False, "")


def test_a_group_can_be_the_entra_administrator():
    deployment = deployment_of(BACKEND_PARAMS["postgres"], {
        "postgresEntraAdminObjectId": "11111111-1111-1111-1111-111111111111",
        "postgresEntraAdminName": "items-dba", "postgresEntraAdminType": "Group"})
    entry = deployment.module("postgres").resource("entraAdmin")
    assert (entry["name"], entry["properties"]["principalName"], entry["properties"]["principalType"]) == (
        "11111111-1111-1111-1111-111111111111", "items-dba", "Group")


def secret_files(app: dict) -> dict:
    """mount path of each secret file -> the secret's value."""
    values = {s["name"]: s["value"] for s in app["configuration"].get("secrets", [])}
    container = app["template"]["containers"][0]
    mounts = {m["volumeName"]: m["mountPath"] for m in container.get("volumeMounts", [])}
    return {f"{mounts[v['name']]}/{s['path']}": values[s["secretRef"]]
            for v in app["template"].get("volumes", []) if v["storageType"] == "Secret" for s in v["secrets"]}


def test_password_sign_in_the_api_signs_in_as_the_app_login_with_only_its_password(password_deployment):
    api = api_of(password_deployment)
    env = api_env_of(password_deployment)
    assert (env["DATABASE_URL"].expression.split("@")[0], env["DATABASE_PASSWORD_FILE"], secret_files(api),
            any("secretRef" in e for e in api["template"]["containers"][0]["env"])) == (
        "postgres://items_app", "/run/secrets/db-password", {"/run/secrets/db-password": "app-secret"}, False)


def test_password_sign_in_the_job_signs_in_as_the_admin_and_sets_the_app_login(password_deployment):
    job = job_of(password_deployment)
    env = job_env_of(password_deployment)
    files = secret_files(job)
    assert (env["DATABASE_URL"].expression.split("@")[0], files[env["DATABASE_PASSWORD_FILE"]],
            env["MIGRATE_APP_ROLE"], files[env["MIGRATE_APP_ROLE_PASSWORD_FILE"]], "DATABASE_AUTH" in env) == (
        "postgres://itemsadmin", "admin-secret", "items_app", "app-secret", False)


def test_password_sign_in_keeps_entra_sign_in_for_people(password_deployment):
    auth = password_deployment.module("postgres").properties("server")["authConfig"]
    assert (auth["activeDirectoryAuth"], auth["passwordAuth"],
            password_deployment.module("postgres").deployed("migrateAdmin")) == ("Enabled", "Enabled", False)


def test_the_web_ingress_is_external_on_port_8080(deployment):
    ingress = deployment.module("web").properties("web")["configuration"]["ingress"]
    assert (ingress["external"], ingress["targetPort"]) == (True, 8080)


def test_the_web_tier_reaches_the_api_through_its_ingress_not_port_8000(deployment):
    env = env_of(deployment.module("web").properties("web")["template"]["containers"][0])
    upstream = env["API_UPSTREAM"]
    text = upstream.expression if isinstance(upstream, Runtime) else upstream
    assert text.startswith("https://") and ":8000" not in text


def test_the_web_tier_counts_writes_per_client_behind_the_ingress(deployment):
    # Without it every client behind one ingress instance shares one write budget.
    env = env_of(deployment.module("web").properties("web")["template"]["containers"][0])
    assert env.get("REAL_IP_FROM") == "0.0.0.0/0"


def test_the_github_path_pulls_both_images_from_the_repository_at_the_tag(deployment):
    images = {name: deployment.module(name).properties(name)["template"]["containers"][0]["image"]
              for name in ("api", "web")}
    assert images == {"api": "ghcr.io/your-github-owner/your-repo/api:latest",
                      "web": "ghcr.io/your-github-owner/your-repo/web:latest"}


def test_ghcr_credentials_become_a_registry_secret():
    deployment = deployment_of(BACKEND_PARAMS["sqlite"], {"ghcrUsername": "owner", "ghcrPassword": "token"})
    app = deployment.module("api").properties("api")["configuration"]
    assert (app["registries"], app["secrets"]) == (
        [{"server": "ghcr.io", "username": "owner", "passwordSecretRef": "registry-password"}],
        [{"name": "registry-password", "value": "token"}])


# --- the azd path ------------------------------------------------------------------------------

AZD_ENVIRONMENT = {"AZURE_LOCATION": "westeurope", "AZURE_ENV_NAME": "dev"}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def azd_deployment(request):
    return deployment_of(AZURE / "main.bicepparam",
                         environment={**AZD_ENVIRONMENT, "ITEMS_DATABASE_BACKEND": request.param})


def test_azd_chooses_the_backend_with_an_environment_variable(azd_deployment):
    assert azd_deployment.module_deployed("postgres") == (azd_deployment.value("databaseBackend") == "postgres")


def test_azd_finds_both_apps_by_their_service_tags(azd_deployment):
    tags = {name: azd_deployment.module(name).resource(name)["tags"] for name in ("api", "web")}
    assert {name: (t["azd-service-name"], t["azd-env-name"]) for name, t in tags.items()} == {
        "api": ("api", "dev"), "web": ("web", "dev")}


def test_azd_pulls_from_its_registry_with_the_pull_identity(azd_deployment):
    for name in ("api", "web"):
        registries = azd_deployment.module(name).properties(name)["configuration"]["registries"]
        assert registries == [{"server": Runtime("registry.properties.loginServer"),
                               "identity": Runtime("pullIdentity.id")}]
    assert azd_deployment.output("AZURE_CONTAINER_REGISTRY_ENDPOINT") == Runtime("registry.properties.loginServer")


def test_the_pull_identity_gets_acrpull_on_the_registry(azd_deployment):
    registry = azd_deployment.module("registry")
    role = registry.properties("pullRole")
    assert (role["principalId"], registry.value("acrPullRoleId")) == (
        Runtime("pullIdentity.properties.principalId"), "7f951dda-4ed3-4680-a7ca-43fe172d538d")


def test_azd_keeps_the_image_an_app_runs_when_it_provisions_again():
    deployment = deployment_of(AZURE / "main.bicepparam", environment={
        **AZD_ENVIRONMENT, "SERVICE_API_RESOURCE_EXISTS": "true"})
    image = deployment.module("api").properties("api")["template"]["containers"][0]["image"]
    assert image == Runtime("app.properties.template.containers.0.image")


def test_azd_deploys_the_image_it_pushed():
    deployment = deployment_of(AZURE / "main.bicepparam", environment={
        **AZD_ENVIRONMENT, "SERVICE_API_IMAGE_NAME": "acr.example/items/api-dev:azd-deploy-1"})
    image = deployment.module("api").properties("api")["template"]["containers"][0]["image"]
    assert image == "acr.example/items/api-dev:azd-deploy-1"


def test_the_github_path_creates_no_registry(deployment):
    assert (deployment.module_deployed("registry"), deployment.output("AZURE_CONTAINER_REGISTRY_ENDPOINT")) == (False, "")


# --- the compiler ------------------------------------------------------------------------------


def bicep_command() -> list[str] | None:
    if shutil.which("bicep"):
        return ["bicep"]
    if shutil.which("az") and subprocess.run(["az", "bicep", "version"], capture_output=True).returncode == 0:
        return ["az", "bicep"]
    return None


def compiler_runs(command: list[str], path: Path) -> list[list[str]]:
    """Build (build-params for a .bicepparam) and lint, in the Bicep CLI's or az's spelling."""
    build = "build-params" if path.suffix == ".bicepparam" else "build"
    if command[0] == "az":
        return [[*command, build, "--file", str(path), "--stdout"], [*command, "lint", "--file", str(path)]]
    return [[*command, build, str(path), "--stdout"], [*command, "lint", str(path)]]


@pytest.mark.optional_tool
def test_every_file_builds_and_lints_with_the_bicep_compiler(repo):
    command = bicep_command()
    if command is None:
        pytest.skip("compiled by `az bicep build` in the GitHub workflow's bicep job; the compiler cannot be installed here")
    # main.bicepparam reads azd's environment.
    environment = {**os.environ, **AZD_ENVIRONMENT}
    failures = []
    for path in [*TEMPLATES, *PARAMS_FILES]:
        for argv in compiler_runs(command, path):
            done = subprocess.run(argv, cwd=repo, capture_output=True, text=True, timeout=300, env=environment)
            if done.returncode != 0:
                failures.append(f"{' '.join(argv[:3])} {path.name}: {done.stderr.strip()}")
    assert failures == []


# --- AKS (aks.bicep): workload identity for deploy/kubernetes ---------------------------------


def test_the_aks_cluster_issues_service_account_tokens_entra_trusts_and_enforces_network_policies():
    cluster = parse_bicep(AZURE / "modules" / "aks-cluster.bicep")["resources"]["cluster"]["config"]
    properties = cluster.get("config", cluster)["properties"]
    assert properties["oidcIssuerProfile"]["enabled"] is True
    assert properties["securityProfile"]["workloadIdentity"]["enabled"] is True
    assert properties["networkProfile"]["networkPolicy"] in ("cilium", "azure", "calico")


def test_each_kubernetes_service_account_that_signs_in_gets_a_federated_credential_on_its_identity():
    import yaml

    calls = {call["params"]["serviceAccount"]: call["params"]
             for module in parse_bicep(AKS)["modules"].values()
             for call in [module["config"].get("config", module["config"])]
             if "serviceAccount" in call["params"]}
    assert calls["api"]["identityName"] == "${namePrefix}-api-identity"
    assert calls["items-migrate"]["identityName"] == "${namePrefix}-migrate-identity"
    manifests = AZURE.parent / "kubernetes"
    accounts = {document["metadata"]["name"]
                for path in [manifests / "base" / "api.yaml", manifests / "components" / "postgres" / "migrate-job.yaml"]
                for document in yaml.safe_load_all(path.read_text()) if document["kind"] == "ServiceAccount"}
    assert set(calls) == accounts
    assert parse_bicep(AKS)["parameters"]["namespace"]["default"] == "items"
    credential = parse_bicep(AZURE / "modules" / "federated-credential.bicep")["resources"]["credential"]["config"]
    properties = credential.get("config", credential)["properties"]
    assert properties["audiences"] == ["api://AzureADTokenExchange"]
    assert properties["subject"] == "system:serviceaccount:${namespace}:${serviceAccount}"


# --- monitoring: Application Insights, the OpenTelemetry agent, the alerts ----------------------


def test_the_environment_sends_traces_and_logs_to_application_insights_through_its_agent(deployment):
    environment = deployment.module("environment").properties("environment")
    telemetry = environment["openTelemetryConfiguration"]
    assert (environment["appInsightsConfiguration"]["connectionString"],
            telemetry["tracesConfiguration"]["destinations"], telemetry["logsConfiguration"]["destinations"]) == (
        Runtime("appInsights.properties.ConnectionString"), ["appInsights"], ["appInsights"])


def test_the_environment_still_sends_console_logs_to_log_analytics(deployment):
    logs = deployment.module("environment").properties("environment")["appLogsConfiguration"]
    assert (logs["destination"], logs["logAnalyticsConfiguration"]["customerId"]) == (
        "log-analytics", Runtime("workspace.properties.customerId"))


def test_application_insights_keeps_its_data_in_the_log_analytics_workspace(deployment):
    monitoring = deployment.module("monitoring")
    component = monitoring.resource("appInsights")
    assert (component["kind"], component["properties"]["WorkspaceResourceId"],
            component["properties"]["IngestionMode"]) == ("web", Runtime("workspace.id"), "LogAnalytics")


def test_the_environment_reads_the_component_monitoring_creates(deployment):
    assert deployment.module_params("environment")["appInsightsName"] == deployment.module_params("monitoring")[
        "appInsightsName"] == "items-insights"


def metric_alerts(deployment) -> dict[str, dict]:
    alerts = deployment.module("alerts")
    return {name: alerts.resource(name) for name, resource in alerts.resources.items()
            if resource["type"] == "Microsoft.Insights/metricAlerts" and alerts.deployed(name)}


def criterion(alert: dict) -> dict:
    [found] = alert["properties"]["criteria"]["allOf"]
    return found


def test_every_alert_goes_to_the_action_group_and_resolves_itself(deployment):
    wrong = {name: (alert["location"], alert["properties"]["actions"], alert["properties"]["autoMitigate"])
             for name, alert in metric_alerts(deployment).items()
             if (alert["location"], alert["properties"]["actions"], alert["properties"]["autoMitigate"])
             != ("global", [{"actionGroupId": Runtime("actionGroup.id")}], True)}
    assert wrong == {}


@pytest.mark.parametrize("app", ["api", "web"])
def test_each_app_alerts_on_its_5xx_answers(deployment, app):
    alert = metric_alerts(deployment)[f"{app}5xx"]
    found = criterion(alert)
    assert (alert["properties"]["scopes"], found["metricName"], found["dimensions"], found["timeAggregation"],
            found["threshold"], alert["properties"]["windowSize"]) == (
        [Runtime(f"{app}App.id")], "Requests",
        [{"name": "statusCodeCategory", "operator": "Include", "values": ["5xx"]}], "Total", 10, "PT5M")


@pytest.mark.parametrize("app", ["api", "web"])
def test_each_app_alerts_on_replica_restarts(deployment, app):
    alert = metric_alerts(deployment)[f"{app}Restarts"]
    assert (alert["properties"]["scopes"], criterion(alert)["metricName"]) == (
        [Runtime(f"{app}App.id")], "RestartCount")


def test_the_alerts_watch_the_apps_this_deployment_runs(deployment):
    params = deployment.module_params("alerts")
    assert (params["apiAppName"], params["webAppName"]) == ("items-api", "items-web")


def test_postgres_alerts_on_the_servers_connections_cpu_and_storage(postgres_deployment):
    alerts = metric_alerts(postgres_deployment)
    watched = {name: (criterion(alerts[name])["metricName"], alerts[name]["properties"]["targetResourceType"])
               for name in ("postgresConnections", "postgresCpu", "postgresStorage")}
    assert watched == {"postgresConnections": ("active_connections", "Microsoft.DBforPostgreSQL/flexibleServers"),
                       "postgresCpu": ("cpu_percent", "Microsoft.DBforPostgreSQL/flexibleServers"),
                       "postgresStorage": ("storage_percent", "Microsoft.DBforPostgreSQL/flexibleServers")}


def test_the_server_alerts_watch_the_server_this_deployment_creates(postgres_deployment):
    alerts = postgres_deployment.module("alerts")
    scopes = []
    for name in ("postgresConnections", "postgresCpu", "postgresStorage"):
        [scope] = alerts.resources[name]["config"]["config"]["properties"]["scopes"]
        arguments = scope["function"]["parameters"]
        scopes.append((scope["function"]["type"], arguments["resource_type"], arguments["resource_name_1"]))
    assert (alerts.given["postgresServerName"], set(scopes)) == (
        postgres_deployment.module("postgres").output("serverName"),
        {("resource_id", "Microsoft.DBforPostgreSQL/flexibleServers", "postgresServerName")})


def test_sqlite_has_no_server_alerts(sqlite_deployment):
    assert sorted(metric_alerts(sqlite_deployment)) == ["api5xx", "apiRestarts", "web5xx", "webRestarts"]


def test_the_connection_alert_sits_between_what_replicas_hold_and_what_the_sku_allows():
    main = Deployment(parse_bicep(MAIN), {}, path=MAIN)
    values = {name: main.value(name) for name in ("apiPoolSize", "apiMaxReplicas", "postgresSkuName",
                                                   "postgresConnectionsAlertThreshold")}
    held = (values["apiPoolSize"] + 1) * values["apiMaxReplicas"] + PEOPLE_CONNECTIONS
    assert held < values["postgresConnectionsAlertThreshold"] < USABLE_CONNECTIONS[values["postgresSkuName"]]


def test_the_action_group_emails_the_address_given():
    deployment = deployment_of(BACKEND_PARAMS["sqlite"], {"alertEmailAddress": "oncall@example.com"})
    group = deployment.module("alerts").properties("actionGroup")
    assert (group["emailReceivers"], len(group["groupShortName"]) <= 12) == (
        [{"name": "on-call", "emailAddress": "oncall@example.com", "useCommonAlertSchema": True}], True)


def test_without_an_address_the_alerts_still_fire_and_nobody_is_emailed(sqlite_deployment):
    assert sqlite_deployment.module("alerts").properties("actionGroup")["emailReceivers"] == []


@pytest.mark.parametrize("params_file", PARAMS_FILES, ids=lambda p: p.name)
def test_every_parameters_file_takes_the_alert_address_from_the_environment(params_file):
    variable = "ITEMS_ALERT_EMAIL" if params_file.name == "main.bicepparam" else "ALERT_EMAIL_ADDRESS"
    values = bicepparam_values(read_bicepparam(params_file), {**AZD_ENVIRONMENT, variable: "oncall@example.com"})
    assert values["alertEmailAddress"] == "oncall@example.com"
