"""deploy/kubernetes: every overlay rendered by `kubectl kustomize` (Kustomize as kubectl ships it),
each object validated offline against the Kubernetes API schemas (kubernetes-validate, strict:
unknown fields refused) and the Gateway API's, then held object by object to the rules in
support/kubernetes.py: the restricted Pod Security Standard, probes, requests and limits, image
tags, service account tokens, and the connections the NetworkPolicies let through. The last
tests change one setting of a rendered object and expect the rules to report it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from support import kubernetes as k8s

pytest.importorskip("yaml", reason="PyYAML: .venv/bin/pip install -r .ci/requirements.txt")

REPO = Path(__file__).resolve().parents[2]
KUBECTL_INSTALL = "kubectl 1.32 or newer, with Kustomize built in (.ci/run installs it when missing)"
# The oldest release the manifests use features of (the native preStop sleep, matchLabelKeys in
# topology spread) and the newest the schemas package knows.
KUBERNETES_VERSIONS = ("1.32.0", "1.37.0")
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
POSTGRES_OVERLAYS = ("postgres", "dev", "aks")


@pytest.fixture(scope="session")
def kubectl(linter) -> str:
    return linter("kubectl", KUBECTL_INSTALL)


@pytest.fixture(scope="session")
def rendered(kubectl):
    cache: dict[str, list[dict]] = {}

    def rendered(overlay: str) -> list[dict]:
        if overlay not in cache:
            cache[overlay] = k8s.render(kubectl, overlay)
        return cache[overlay]

    return rendered


def the(objects: list[dict], kind: str, name: str) -> dict:
    found = [obj for obj in objects if obj["kind"] == kind and obj["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def container(objects: list[dict], kind: str, name: str, container_name: str) -> dict:
    _, pod = k8s.pod_template(the(objects, kind, name))
    return next(c for c in pod["containers"] if c["name"] == container_name)


def env_names(container_spec: dict) -> set[str]:
    return {variable["name"] for variable in container_spec.get("env") or []}


# --- Rendering and schemas --------------------------------------------------------------------


def test_every_overlay_directory_is_checked():
    assert sorted(p.name for p in (k8s.KUBERNETES / "overlays").iterdir() if p.is_dir()) == sorted(k8s.OVERLAYS)


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_the_overlay_renders(rendered, overlay):
    kinds = {obj["kind"] for obj in rendered(overlay)}
    assert {"Namespace", "Deployment", "Service", "NetworkPolicy", "HTTPRoute"} <= kinds


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_every_object_validates_against_the_api_schemas(rendered, overlay):
    pytest.importorskip("kubernetes_validate", reason="kubernetes-validate: .venv/bin/pip install -r .ci/requirements.txt")
    errors = [error for obj in rendered(overlay) for error in k8s.schema_errors(obj, KUBERNETES_VERSIONS)]
    assert errors == []


def test_a_misspelled_field_fails_the_schema_check(rendered):
    pytest.importorskip("kubernetes_validate", reason="kubernetes-validate: .venv/bin/pip install -r .ci/requirements.txt")

    def misspell(obj):
        obj["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True

    api = the(k8s.mutated(rendered("postgres"), "Deployment", "api", misspell), "Deployment", "api")
    assert any("readOnlyRootFileSystem" in error for error in k8s.schema_errors(api, KUBERNETES_VERSIONS))
    route = the(k8s.mutated(rendered("postgres"), "HTTPRoute", "web",
                            lambda obj: obj["spec"]["rules"][0].update(backendRef=[])), "HTTPRoute", "web")
    assert any("backendRef" in error for error in k8s.schema_errors(route, KUBERNETES_VERSIONS))


# --- Every pod, object by object --------------------------------------------------------------


@pytest.mark.parametrize("check", k8s.CHECKS, ids=lambda check: check.__name__)
@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_every_object_passes_the_check(rendered, overlay, check):
    assert [problem for obj in rendered(overlay) for problem in check(obj)] == []


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_the_namespace_enforces_the_restricted_profile_and_holds_everything(rendered, overlay):
    objects = rendered(overlay)
    labels = the(objects, "Namespace", "items")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    cluster_scoped = {"Namespace"}
    elsewhere = [k8s.name_of(obj) for obj in objects if obj["kind"] not in cluster_scoped
                 and obj["metadata"].get("namespace") != "items" and obj["kind"] != "Gateway"]
    assert elsewhere == []


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_the_api_probes_mean_what_they_say(rendered, overlay):
    api = container(rendered(overlay), "Deployment", "api", "api")
    # Startup waits for the database with the migrated schema; after that a database outage
    # neither takes replicas out (readiness) nor restarts them (liveness).
    assert api["startupProbe"]["httpGet"]["path"] == "/api/health"
    assert api["readinessProbe"]["httpGet"]["path"] == "/api/healthz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/api/healthz"
    startup = api["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600, "a migration gets ten minutes at least"


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_the_web_probes_ask_nginx_only(rendered, overlay):
    web = container(rendered(overlay), "Deployment", "web", "web")
    assert {web[probe]["httpGet"]["path"] for probe in ("startupProbe", "readinessProbe", "livenessProbe")} == {"/healthz"}


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_the_api_grace_period_covers_its_drain_and_its_requests(rendered, overlay):
    deployment = the(rendered(overlay), "Deployment", "api")
    _, pod = k8s.pod_template(deployment)
    api = container(rendered(overlay), "Deployment", "api", "api")
    drain = int(k8s.env_value(api, "SHUTDOWN_DRAIN_SECS"))
    timeout = int(k8s.env_value(api, "SHUTDOWN_TIMEOUT_SECS"))
    pre_stop = (((api.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds", 0)
    # Endpoint removal reaches every node's kube-proxy within a few seconds.
    assert drain >= 3
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain + timeout


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_the_web_tier_stops_after_the_route_dropped_it_and_finishes_its_streams(rendered, overlay):
    _, pod = k8s.pod_template(the(rendered(overlay), "Deployment", "web"))
    web = container(rendered(overlay), "Deployment", "web", "web")
    pre_stop = web["lifecycle"]["preStop"]["sleep"]["seconds"]
    worker_shutdown = int(re.search(r"worker_shutdown_timeout (\d+)s;", (REPO / "web" / "nginx.conf").read_text())[1])
    assert pre_stop >= 3 and pod["terminationGracePeriodSeconds"] > pre_stop + worker_shutdown


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_writable_paths_are_memory_backed_empty_dirs_as_compose_tmpfs(rendered, overlay):
    objects = rendered(overlay)
    for name, paths in (("api", {"/tmp"}), ("web", {"/tmp", "/etc/nginx/conf.d"})):
        _, pod = k8s.pod_template(the(objects, "Deployment", name))
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container(objects, "Deployment", name, name)["volumeMounts"]}
        for path in paths:
            assert volumes[mounts[path]]["emptyDir"]["medium"] == "Memory", f"{name} {path}"


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_the_web_tier_proxies_to_the_api_service(rendered, overlay):
    objects = rendered(overlay)
    service = the(objects, "Service", "api")
    port = service["spec"]["ports"][0]["port"]
    assert service["spec"]["type"] == "ClusterIP" and service["spec"].get("clusterIP") != "None"
    assert k8s.env_value(container(objects, "Deployment", "web", "web"), "API_UPSTREAM") == f"http://api:{port}"


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_the_route_sends_everything_to_the_web_service(rendered, overlay):
    objects = rendered(overlay)
    rule, = the(objects, "HTTPRoute", "web")["spec"]["rules"]
    backend, = rule["backendRefs"]
    web_ports = [p["port"] for p in the(objects, "Service", "web")["spec"]["ports"]]
    assert (backend["kind"], backend["name"]) == ("Service", "web") and backend["port"] in web_ports


# --- Images -----------------------------------------------------------------------------------


def test_the_manifests_name_the_release_of_the_crate_version():
    import yaml

    images = yaml.safe_load((k8s.KUBERNETES / "components" / "release" / "kustomization.yaml").read_text())["images"]
    version = tomllib.loads((REPO / "api" / "Cargo.toml").read_text())["package"]["version"]
    assert {image["name"]: image["newTag"] for image in images} == {"items-api": version, "items-web": version}


def test_the_dev_postgres_is_the_image_compose_runs(rendered):
    image = re.search(r"^  postgres:\n(?:    .*\n)*?    image: (\S+)$", (REPO / "compose.postgres.yaml").read_text(), re.M)[1]
    postgres = container(rendered("dev"), "StatefulSet", "postgres", "postgres")
    assert postgres["image"] == image


# --- SQLite: one writer ---------------------------------------------------------------------


def test_sqlite_runs_one_replica_replaced_never_alongside(rendered):
    objects = rendered("sqlite")
    deployment = the(objects, "Deployment", "api")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    assert not [obj for obj in objects if obj["kind"] in ("HorizontalPodAutoscaler", "Job")]
    _, pod = k8s.pod_template(deployment)
    claim = next(v for v in pod["volumes"] if "persistentVolumeClaim" in v)
    mounts = {m["name"]: m["mountPath"] for m in container(objects, "Deployment", "api", "api")["volumeMounts"]}
    assert mounts[claim["name"]] == "/data"
    the(objects, "PersistentVolumeClaim", claim["persistentVolumeClaim"]["claimName"])


# --- Postgres: replicas, migrations, secrets --------------------------------------------------


@pytest.mark.parametrize("overlay", POSTGRES_OVERLAYS)
def test_postgres_replicas_autoscale_from_two_spread_over_nodes_with_a_budget(rendered, overlay):
    objects = rendered(overlay)
    deployment = the(objects, "Deployment", "api")
    assert "replicas" not in deployment["spec"], "the HorizontalPodAutoscaler owns the count"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    autoscaler = the(objects, "HorizontalPodAutoscaler", "api")
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == "api" and autoscaler["spec"]["minReplicas"] >= 2
    assert the(objects, "PodDisruptionBudget", "api")["spec"]["maxUnavailable"] == 1
    _, pod = k8s.pod_template(deployment)
    spread = {c["topologyKey"]: c["whenUnsatisfiable"] for c in pod["topologySpreadConstraints"]}
    assert spread["kubernetes.io/hostname"] == "DoNotSchedule"


@pytest.mark.parametrize("overlay", POSTGRES_OVERLAYS)
def test_the_api_never_migrates_and_the_job_migrates_as_the_owner(rendered, overlay):
    objects = rendered(overlay)
    api = container(objects, "Deployment", "api", "api")
    assert k8s.env_value(api, "MIGRATE_ON_START") == "false"
    job = the(objects, "Job", "items-migrate")
    migrate = container(objects, "Job", "items-migrate", "migrate")
    assert migrate["image"] == api["image"] and migrate["args"] == ["migrate"]
    assert {"DATABASE_URL", "MIGRATE_APP_ROLE"} <= env_names(migrate)
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] >= 1


@pytest.mark.parametrize("overlay", POSTGRES_OVERLAYS)
def test_the_api_pods_never_see_the_owners_credentials(rendered, overlay):
    deployment = the(rendered(overlay), "Deployment", "api")
    assert "items-db-owner" not in str(deployment)


@pytest.mark.parametrize("overlay", ("postgres", "dev"))
def test_passwords_reach_the_processes_as_files_only(rendered, overlay):
    objects = rendered(overlay)
    api = container(objects, "Deployment", "api", "api")
    migrate = container(objects, "Job", "items-migrate", "migrate")
    assert k8s.env_value(api, "DATABASE_PASSWORD_FILE") and k8s.env_value(migrate, "DATABASE_PASSWORD_FILE")
    assert k8s.env_value(migrate, "MIGRATE_APP_ROLE_PASSWORD_FILE")
    for spec in (api, migrate):
        from_secrets = [v for v in spec["env"] if "secretKeyRef" in (v.get("valueFrom") or {})]
        assert all(v["valueFrom"]["secretKeyRef"]["key"] in ("url", "user") for v in from_secrets)


def test_dev_runs_its_own_postgres_on_a_volume(rendered):
    statefulset = the(rendered("dev"), "StatefulSet", "postgres")
    assert statefulset["spec"]["replicas"] == 1
    claim, = statefulset["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container(rendered("dev"), "StatefulSet", "postgres", "postgres")["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/var/lib/postgresql/data"


# --- AKS: workload identity -------------------------------------------------------------------


def test_aks_pods_sign_in_with_workload_identity_and_no_password(rendered):
    objects = rendered("aks")
    for kind, name, container_name, account in (("Deployment", "api", "api", "api"),
                                                 ("Job", "items-migrate", "migrate", "items-migrate")):
        metadata, pod = k8s.pod_template(the(objects, kind, name))
        assert metadata["labels"]["azure.workload.identity/use"] == "true"
        assert pod["serviceAccountName"] == account
        client_id = the(objects, "ServiceAccount", account)["metadata"]["annotations"]["azure.workload.identity/client-id"]
        assert GUID.match(client_id)
        spec = container(objects, kind, name, container_name)
        assert k8s.env_value(spec, "DATABASE_AUTH") == "azure-workload-identity"
        assert not any(n.endswith("PASSWORD_FILE") for n in env_names(spec))
        assert "password" not in str(pod.get("volumes"))
    migrate = container(objects, "Job", "items-migrate", "migrate")
    assert "MIGRATE_APP_ROLE_ENTRA_OBJECT_ID" in env_names(migrate)


def test_aks_route_attaches_to_the_add_ons_gateway_which_takes_routes_from_items_only(rendered):
    objects = rendered("aks")
    gateway = the(objects, "Gateway", "items")
    assert gateway["spec"]["gatewayClassName"] == "approuting-istio"
    parent, = the(objects, "HTTPRoute", "web")["spec"]["parentRefs"]
    assert (parent["name"], parent["namespace"]) == ("items", gateway["metadata"]["namespace"])
    allowed = gateway["spec"]["listeners"][0]["allowedRoutes"]["namespaces"]
    assert allowed["selector"]["matchLabels"] == {"kubernetes.io/metadata.name": "items"}


# --- NetworkPolicies ------------------------------------------------------------------------

DNS_PORTS = (("UDP", 53), ("TCP", 53))
BEYOND = ("outside", "elsewhere", "monitoring", "dns")


def expected_flows(overlay: str) -> set[tuple[str, str, str, int]]:
    pods = {"sqlite": ["web", "api"], "postgres": ["web", "api", "migrate"], "dev": ["web", "api", "migrate", "postgres"],
            "aks": ["web", "api", "migrate"]}[overlay]
    flows = {(pod, "dns", protocol, port) for pod in [*pods, "stranger"] for protocol, port in DNS_PORTS}
    flows |= {(source, "web", "TCP", 8080) for source in BEYOND}
    flows |= {("web", "api", "TCP", 8000)}
    # Scrapes reach the metrics ports alone; traces leave for the collector.
    flows |= {("monitoring", "api", "TCP", 9464), ("monitoring", "web", "TCP", 9113)}
    flows |= {("api", "monitoring", "TCP", port) for port in (4317, 4318)}
    if overlay == "dev":
        flows |= {(client, "postgres", "TCP", 5432) for client in ("api", "migrate")}
    elif overlay in ("postgres", "aks"):
        flows |= {(client, target, "TCP", 5432) for client in ("api", "migrate") for target in BEYOND}
    if overlay == "aks":
        flows |= {(client, target, "TCP", 443) for client in ("api", "migrate") for target in BEYOND}
    return flows


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_every_pod_is_governed_by_policies_in_both_directions(rendered, overlay):
    assert k8s.unselected_pods(rendered(overlay)) == []


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_only_the_intended_connections_get_through(rendered, overlay):
    actual = k8s.flows(rendered(overlay))
    expected = expected_flows(overlay)
    assert (sorted(actual - expected), sorted(expected - actual)) == ([], [])


# --- The rules catch what they claim ----------------------------------------------------------


def api_container(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]["containers"][0]


MUTATIONS = {
    "allowPrivilegeEscalation dropped": (lambda o: api_container(o)["securityContext"].pop("allowPrivilegeEscalation"),
                                         "allowPrivilegeEscalation is not false"),
    "readOnlyRootFilesystem dropped": (lambda o: api_container(o)["securityContext"].pop("readOnlyRootFilesystem"),
                                       "readOnlyRootFilesystem is not true"),
    "capabilities dropped": (lambda o: api_container(o)["securityContext"].pop("capabilities"),
                             "capabilities do not drop ALL"),
    "runAsNonRoot overridden": (lambda o: api_container(o)["securityContext"].update(runAsNonRoot=False),
                                "runAsNonRoot is not true"),
    "seccomp unconfined": (lambda o: api_container(o)["securityContext"].update(seccompProfile={"type": "Unconfined"}),
                           "seccompProfile is Unconfined"),
    "a capability added": (lambda o: api_container(o)["securityContext"]["capabilities"].update(add=["NET_RAW"]),
                           "capabilities add"),
    "readiness dropped": (lambda o: api_container(o).pop("readinessProbe"), "no readinessProbe"),
    "liveness dropped": (lambda o: api_container(o).pop("livenessProbe"), "no livenessProbe"),
    "startup dropped": (lambda o: api_container(o).pop("startupProbe"), "no startupProbe"),
    "limits dropped": (lambda o: api_container(o)["resources"].pop("limits"), "no limits.memory"),
    "requests dropped": (lambda o: api_container(o)["resources"].pop("requests"), "no requests.cpu"),
    "latest tag": (lambda o: api_container(o).update(image="ghcr.io/example/items-app/api:latest"), "latest"),
    "untagged image": (lambda o: api_container(o).update(image="ghcr.io/example/items-app/api"), "has no tag"),
    "token mounted": (lambda o: o["spec"]["template"]["spec"].pop("automountServiceAccountToken"),
                      "automountServiceAccountToken is not false"),
    "host network": (lambda o: o["spec"]["template"]["spec"].update(hostNetwork=True), "hostNetwork is set"),
    "hostPath volume": (lambda o: o["spec"]["template"]["spec"]["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
                        "type the restricted profile refuses"),
}


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_one_dropped_setting_in_one_container_is_reported(rendered, mutation):
    change, expected = MUTATIONS[mutation]
    objects = k8s.mutated(rendered("postgres"), "Deployment", "api", change)
    problems = k8s.workload_problems(the(objects, "Deployment", "api"))
    assert any(expected in problem and "Deployment/api" in problem for problem in problems), problems
    # Only that object is reported.
    assert [p for obj in objects if obj["metadata"]["name"] != "api" for p in k8s.workload_problems(obj)] == []


def test_a_policy_that_lets_anyone_reach_the_api_is_reported(rendered):
    objects = k8s.mutated(rendered("postgres"), "NetworkPolicy", "api",
                          lambda o: o["spec"]["ingress"][0].pop("from"))
    extra = k8s.flows(objects) - expected_flows("postgres")
    assert ("outside", "api", "TCP", 8000) in extra and ("stranger", "api", "TCP", 8000) not in extra


def test_a_pod_that_no_policy_governs_is_reported(rendered):
    def without(objects, *names):
        return [obj for obj in objects if not (obj["kind"] == "NetworkPolicy" and obj["metadata"]["name"] in names)]

    objects = without(rendered("postgres"), "default-deny", "dns")
    assert k8s.unselected_pods(objects) == []
    assert k8s.unselected_pods(without(objects, "web", "metrics")) == ["web: no Ingress policy", "web: no Egress policy"]


def test_a_missing_default_deny_lets_strays_in(rendered):
    objects = [obj for obj in rendered("dev") if obj["metadata"]["name"] != "default-deny"]
    extra = k8s.flows(objects) - expected_flows("dev")
    assert {("outside", "stranger", "TCP", 9999), ("elsewhere", "stranger", "TCP", 8000)} <= extra


def test_the_cluster_in_ci_gets_the_gateway_api_release_the_schemas_come_from():
    import yaml

    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "kubernetes.yml").read_text())
    readme = (REPO / "tests" / "lint" / "schemas" / "README.md").read_text()
    version = workflow["env"]["GATEWAY_API_VERSION"]
    assert f"release {version}" in readme and f"tag {version}" in readme
