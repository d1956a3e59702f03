"""deploy/azure: main.bicep parsed by pycep-parser, its parameters file by json, and the rules the
service depends on: the API internal, one replica on SQLite over SMB, probes and the share on
/data; the web tier public and reaching the API through its ingress."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

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


@pytest.fixture(scope="module")
def api(bicep):
    return bicep["resources"]["api"]["config"]["properties"]


@pytest.fixture(scope="module")
def api_container(api):
    return api["template"]["containers"][0]


@pytest.fixture(scope="module")
def api_env(api_container):
    return {e["name"]: e.get("value") for e in api_container.get("env", [])}


@pytest.fixture(scope="module")
def api_probes(api_container):
    return {p["type"]: p.get("httpGet", {}) for p in api_container.get("probes", [])}


def test_the_api_ingress_is_internal(api):
    assert api["configuration"]["ingress"]["external"] is False


def test_the_api_ingress_targets_port_8000(api):
    assert api["configuration"]["ingress"]["targetPort"] == 8000


def test_the_api_runs_a_single_revision(api):
    assert api["configuration"]["activeRevisionsMode"] == "Single"


def test_the_api_runs_exactly_one_replica_on_sqlite(api):
    scale = api["template"]["scale"]
    assert (scale.get("minReplicas"), scale.get("maxReplicas")) == (1, 1)


def test_the_api_uses_the_delete_journal_mode_no_wal_on_smb(api_env):
    assert str(api_env.get("SQLITE_JOURNAL_MODE")).lower() == "delete"


def test_the_api_database_is_data_app_db(api_env):
    assert api_env.get("DB_PATH") == "/data/app.db"


def test_the_api_runs_in_production(api_env):
    assert api_env.get("APP_ENV") == "production"


@pytest.mark.parametrize("probe, path", [("Liveness", "/api/healthz"), ("Readiness", "/api/health"),
                                         ("Startup", "/api/healthz")])
def test_the_api_probe_path(api_probes, probe, path):
    assert api_probes.get(probe, {}).get("path") == path


def test_every_api_probe_uses_port_8000(api_probes):
    assert {p.get("port") for p in api_probes.values()} == {8000}


def test_the_api_has_an_azure_files_volume_mounted_with_nobrl(bicep, api):
    def value(v):
        return bicep["variables"][v]["value"] if isinstance(v, str) and v in bicep["variables"] else v

    assert any(v.get("storageType") == "AzureFile" and "nobrl" in str(value(v.get("mountOptions"))).split(",")
               for v in api["template"].get("volumes", []))


def test_the_api_volume_is_mounted_on_data(api_container):
    assert any(m.get("mountPath") == "/data" for m in api_container.get("volumeMounts", []))


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
