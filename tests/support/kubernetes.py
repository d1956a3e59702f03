"""The Kubernetes manifests as a cluster would get them (`kubectl kustomize` of an overlay), and
the rules each rendered object is held to: the restricted Pod Security Standard, probes,
resources, image tags, service account tokens, and which connections the NetworkPolicies let
through. Each check returns what is wrong, one line per problem naming the object and the
container, so a test can show that a single dropped setting is reported."""

from __future__ import annotations

import copy
import ipaddress
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

KUBERNETES = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
OVERLAYS = ("sqlite", "postgres", "dev", "aks")
NAMESPACE = "items"
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod"}
# Long-running: a probe has something to watch. A Job runs once and exits.
SERVING = {"Deployment", "StatefulSet", "DaemonSet"}
# Volume types the restricted profile allows.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}


def render(kubectl: str, overlay: str) -> list[dict]:
    done = subprocess.run([kubectl, "kustomize", str(KUBERNETES / "overlays" / overlay)], capture_output=True,
                          text=True, timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"kubectl kustomize overlays/{overlay}: {done.stderr.strip()}")
    import yaml

    return [document for document in yaml.safe_load_all(done.stdout) if document]


def name_of(obj: dict) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def pod_template(obj: dict) -> tuple[dict, dict] | None:
    """(metadata, spec) of the pods a workload runs, or None for anything else."""
    kind = obj.get("kind")
    if kind not in WORKLOADS:
        return None
    if kind == "Pod":
        return obj.get("metadata") or {}, obj.get("spec") or {}
    spec = obj["spec"]
    if kind == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    template = spec["template"]
    return template.get("metadata") or {}, template.get("spec") or {}


def containers(pod: dict) -> Iterator[dict]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from pod.get(key) or []


def env_value(container: dict, name: str) -> str | None:
    for variable in container.get("env") or []:
        if variable["name"] == name:
            return variable.get("value")
    return None


# --- What each pod is held to ---------------------------------------------------------------


def restricted_problems(obj: dict) -> list[str]:
    """The restricted Pod Security Standard, every rule of the Kubernetes page, on the settings
    that take effect (a container's own, else the pod's)."""
    found = pod_template(obj)
    if found is None:
        return []
    _, pod = found
    where = name_of(obj)
    problems = []
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            problems.append(f"{where}: {flag} is set")
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            problems.append(f"{where}: volume {volume['name']} is of a type the restricted profile refuses: {kinds}")
    pod_context = pod.get("securityContext") or {}
    for sysctl in pod_context.get("sysctls") or []:
        problems.append(f"{where}: sysctl {sysctl['name']}")
    for container in containers(pod):
        context = container.get("securityContext") or {}
        at = f"{where} container {container['name']}"

        def effective(key: str, context: dict = context) -> Any:
            return context[key] if key in context else pod_context.get(key)

        if context.get("privileged"):
            problems.append(f"{at}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{at}: allowPrivilegeEscalation is not false")
        if effective("runAsNonRoot") is not True:
            problems.append(f"{at}: runAsNonRoot is not true")
        if effective("runAsUser") == 0:
            problems.append(f"{at}: runAsUser is 0")
        seccomp = (effective("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{at}: seccompProfile is {seccomp or 'unset'}, not RuntimeDefault")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(f"{at}: capabilities do not drop ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{at}: capabilities add {capabilities['add']}")
        if context.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{at}: readOnlyRootFilesystem is not true")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                problems.append(f"{at}: hostPort {port['hostPort']}")
    return problems


def probe_problems(obj: dict) -> list[str]:
    """A serving container has a startup, a readiness and a liveness probe."""
    found = pod_template(obj)
    if found is None or obj["kind"] not in SERVING:
        return []
    return [f"{name_of(obj)} container {container['name']}: no {probe}"
            for container in found[1].get("containers") or []
            for probe in ("startupProbe", "readinessProbe", "livenessProbe") if not container.get(probe)]


def resource_problems(obj: dict) -> list[str]:
    found = pod_template(obj)
    if found is None:
        return []
    problems = []
    for container in containers(found[1]):
        resources = container.get("resources") or {}
        for bound in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in (resources.get(bound) or {}):
                    problems.append(f"{name_of(obj)} container {container['name']}: no {bound}.{resource}")
    return problems


def image_problems(obj: dict) -> list[str]:
    """Every image is named by a tag that is not `latest` (or by a digest)."""
    found = pod_template(obj)
    if found is None:
        return []
    problems = []
    for container in containers(found[1]):
        image = container.get("image") or ""
        if "@sha256:" in image:
            continue
        last = image.rsplit("/", 1)[-1]
        tag = last.split(":", 1)[1] if ":" in last else ""
        if not tag or tag == "latest":
            problems.append(f"{name_of(obj)} container {container['name']}: image {image!r} has no tag but latest")
    return problems


def token_problems(obj: dict) -> list[str]:
    """No Kubernetes API token unless something uses it: none of our pods calls the API (the AKS
    webhook mounts its own token, for Entra's audience only)."""
    if obj.get("kind") == "ServiceAccount":
        return [] if obj.get("automountServiceAccountToken") is False else [
            f"{name_of(obj)}: automountServiceAccountToken is not false"]
    found = pod_template(obj)
    if found is None:
        return []
    return [] if found[1].get("automountServiceAccountToken") is False else [
        f"{name_of(obj)}: automountServiceAccountToken is not false"]


CHECKS = (restricted_problems, probe_problems, resource_problems, image_problems, token_problems)


def workload_problems(obj: dict) -> list[str]:
    return [problem for check in CHECKS for problem in check(obj)]


# --- Schemas --------------------------------------------------------------------------------

GATEWAY_SCHEMAS = Path(__file__).resolve().parents[1] / "lint" / "schemas" / "gateway-api"


def strict(schema: Any) -> Any:
    """A CRD schema that refuses fields it does not name, as the API server's strict field
    validation does (a CRD's structural schema would otherwise prune them silently)."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    schema = {key: strict(value) for key, value in schema.items()}
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        schema["additionalProperties"] = False
    return schema


def gateway_schema(kind: str) -> dict:
    schema = json.loads((GATEWAY_SCHEMAS / f"{kind.lower()}-v1.json").read_text())
    # metadata is the API server's to check; its schema here only says "an object".
    schema["properties"]["metadata"] = {"type": "object"}
    return strict(schema)


def schema_errors(obj: dict, versions: tuple[str, ...]) -> list[str]:
    """What the API's schemas refuse in `obj`: the built-in kinds against each Kubernetes
    version's, Gateway API kinds against the vendored CRD schemas."""
    if obj["apiVersion"] == "gateway.networking.k8s.io/v1":
        import jsonschema

        validator = jsonschema.Draft7Validator(gateway_schema(obj["kind"]))
        return [f"{name_of(obj)}: {'/'.join(map(str, error.path))}: {error.message}"
                for error in validator.iter_errors(obj)]
    import kubernetes_validate

    errors = []
    for version in versions:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            errors.append(f"{name_of(obj)} (Kubernetes {version}): {'/'.join(map(str, error.path))}: {error.message}")
    return errors


# --- Which connections the NetworkPolicies let through --------------------------------------


@dataclass(frozen=True)
class Peer:
    """Something that connects or is connected to: a pod (in a namespace, with labels) or an
    address outside the cluster (namespace None)."""

    name: str
    namespace: str | None
    labels: tuple[tuple[str, str], ...] = ()
    ports: tuple[tuple[str, int], ...] = field(default=(), compare=False)

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    @property
    def namespace_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace} if self.namespace else {}


OUTSIDE = Peer("outside", None)
DNS = Peer("dns", "kube-system", (("k8s-app", "kube-dns"),))
ELSEWHERE = Peer("elsewhere", "elsewhere", (("app", "something-else"),))
STRANGER = Peer("stranger", NAMESPACE, (("app", "debug"),))
# Prometheus and an OpenTelemetry collector.
MONITORING = Peer("monitoring", "monitoring", (("app.kubernetes.io/name", "prometheus"),))
# The ports a test asks about: every port the manifests use, and one they never name.
PORTS = (("TCP", 80), ("TCP", 443), ("TCP", 5432), ("TCP", 8000), ("TCP", 8080), ("TCP", 53), ("UDP", 53),
         ("TCP", 9464), ("TCP", 9113), ("TCP", 4317), ("TCP", 4318), ("TCP", 9999))


def workload_peers(objects: list[dict]) -> list[Peer]:
    """Each workload's pods, named by their component label."""
    peers = []
    for obj in objects:
        found = pod_template(obj)
        if found is None:
            continue
        metadata, pod = found
        labels = metadata.get("labels") or {}
        ports = tuple((port.get("name", ""), port["containerPort"]) for c in pod.get("containers") or []
                      for port in c.get("ports") or [])
        peers.append(Peer(labels.get("app.kubernetes.io/component", obj["metadata"]["name"]),
                          obj["metadata"].get("namespace", NAMESPACE), tuple(sorted(labels.items())), ports))
    return peers


def selects(selector: dict | None, labels: dict[str, str]) -> bool:
    """A label selector; an empty one selects everything."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def peer_matches(rule_peer: dict, policy_namespace: str, peer: Peer) -> bool:
    if "ipBlock" in rule_peer:
        if peer.namespace is not None:
            return False
        block = rule_peer["ipBlock"]
        # An address outside the cluster stands for any public one.
        sample = ipaddress.ip_address("203.0.113.7")
        network = ipaddress.ip_network(block["cidr"])
        return sample in network and not any(sample in ipaddress.ip_network(c) for c in block.get("except") or [])
    if peer.namespace is None:
        return False
    if "namespaceSelector" in rule_peer:
        if not selects(rule_peer["namespaceSelector"], peer.namespace_labels):
            return False
    elif peer.namespace != policy_namespace:
        return False
    return selects(rule_peer.get("podSelector"), peer.label_map)


def port_matches(rule_ports: list | None, protocol: str, port: int, target: Peer) -> bool:
    if not rule_ports:
        return True
    for rule_port in rule_ports:
        if rule_port.get("protocol", "TCP") != protocol:
            continue
        wanted = rule_port.get("port")
        if wanted is None:
            return True
        if isinstance(wanted, str):
            wanted = dict(target.ports).get(wanted)
        end = rule_port.get("endPort", wanted)
        if wanted is not None and wanted <= port <= end:
            return True
    return False


def allowed(policies: list[dict], source: Peer, target: Peer, protocol: str, port: int) -> bool:
    """Whether a connection gets through both the source's egress and the target's ingress
    policies (a pod no policy of that direction selects is open in it)."""

    def direction_allows(direction: str, subject: Peer, other: Peer) -> bool:
        if subject.namespace != NAMESPACE:
            return True
        governing = [p for p in policies if p["metadata"].get("namespace", NAMESPACE) == subject.namespace
                     and direction.capitalize() in (p["spec"].get("policyTypes") or ["Ingress"])
                     and selects(p["spec"].get("podSelector"), subject.label_map)]
        if not governing:
            return True
        key, peers_key = ("ingress", "from") if direction == "ingress" else ("egress", "to")
        for policy in governing:
            for rule in policy["spec"].get(key) or []:
                peers = rule.get(peers_key)
                peer_ok = not peers or any(peer_matches(p, policy["metadata"].get("namespace", NAMESPACE), other)
                                           for p in peers)
                if peer_ok and port_matches(rule.get("ports"), protocol, port, target):
                    return True
        return False

    return direction_allows("egress", source, target) and direction_allows("ingress", target, source)


def flows(objects: list[dict]) -> set[tuple[str, str, str, int]]:
    """Every (source, target, protocol, port) the policies let through, among the workloads, a
    stray pod in the namespace, a pod elsewhere in the cluster, Prometheus (in `monitoring`), the
    cluster DNS and the outside."""
    policies = [obj for obj in objects if obj["kind"] == "NetworkPolicy"]
    peers = [*workload_peers(objects), STRANGER, ELSEWHERE, MONITORING, DNS, OUTSIDE]
    return {(source.name, target.name, protocol, port)
            for source in peers for target in peers if source != target
            for protocol, port in PORTS
            if target.namespace == NAMESPACE or source.namespace == NAMESPACE
            if allowed(policies, source, target, protocol, port)}


def unselected_pods(objects: list[dict]) -> list[str]:
    """Workloads that some direction of policy does not govern."""
    policies = [obj for obj in objects if obj["kind"] == "NetworkPolicy"]
    missing = []
    for peer in workload_peers(objects):
        for direction in ("Ingress", "Egress"):
            if not any(direction in (p["spec"].get("policyTypes") or ["Ingress"])
                       and selects(p["spec"].get("podSelector"), peer.label_map) for p in policies):
                missing.append(f"{peer.name}: no {direction} policy")
    return missing


def mutated(objects: list[dict], kind: str, name: str, change) -> list[dict]:
    """A deep copy of `objects` with `change(obj)` applied to the object named kind/name."""
    copied = copy.deepcopy(objects)
    target = next(obj for obj in copied if obj["kind"] == kind and obj["metadata"]["name"] == name)
    change(target)
    return copied
