"""Dependabot keeps every pin current: each image and action the repository names, and each package
manifest, is covered by an update entry of the ecosystem that reads it there, in the directory that
ecosystem looks in. Where each ecosystem looks follows dependabot-core's file fetchers and parsers:
docker reads the literal FROM lines of the Dockerfiles in a directory (not ARG defaults) and the
`image:` of the Kubernetes manifests there;
docker-compose the compose files in a directory; github-actions `/.github/workflows` for `/` and
the YAML files of any other directory listed (a composite action's); devcontainers only the
features of `.devcontainer/devcontainer.json`, never its image. An image named where no ecosystem
reads it (a workflow's service or container, a devcontainer.json image) is never updated, so it
fails here. dependabot.yml, the workflows and the composite actions are also validated against
check-jsonschema's vendored schemas."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

from support.repo import project_files

yaml = pytest.importorskip("yaml", reason="PyYAML: .venv/bin/pip install -r .ci/requirements.txt")
dockerfile = pytest.importorskip("dockerfile", reason="dockerfile: .venv/bin/pip install -r .ci/requirements.txt")

REPO = Path(__file__).resolve().parents[2]
PIP_INSTALL = ".venv/bin/pip install -r .ci/requirements.txt"

DOCKERFILE = re.compile(r"(^|/)(Dockerfile|[^/]+\.Dockerfile|Dockerfile\.[^/]+|Containerfile)$")
# dependabot-core's docker_compose file fetcher.
COMPOSE_FILE = re.compile(r"(docker-)?compose(-\w+)?(\.[\w-]+)?\.ya?ml", re.IGNORECASE)
WORKFLOW = re.compile(r"\.github/workflows/[^/]+\.ya?ml")
ACTION = re.compile(r"(^|.*/)action\.ya?ml")
KUBERNETES_MANIFEST = re.compile(r"deploy/kubernetes/.+\.ya?ml")
# The images this repository publishes itself (compose.registry.yaml runs them).
# This project's own images: from its registry, or built by the stack itself.
# In the Kubernetes manifests, the names Kustomize's `images:` replaces with the release.
OWN_IMAGE = re.compile(r"^(\$\{REGISTRY(:-[^}]*)?\}/(api|web):|\$\{COMPOSE_PROJECT_NAME\}-(api|web)$|items-(api|web)$)")

ARG_DEFAULT_GAP = (
    "Dependabot reads literal FROM lines only, not an ARG default used as `FROM ${ARG}` "
    "(dependabot-core#2057): api/Dockerfile and web/Dockerfile need `FROM <image> AS <stage>`"
)


class ComposeLoader(yaml.SafeLoader):
    """SafeLoader that reads Compose's merge tags (!override, !reset) as plain values."""


for _tag in ("!override", "!reset"):
    ComposeLoader.add_constructor(
        _tag,
        lambda loader, node: (loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode)
                              else loader.construct_mapping(node) if isinstance(node, yaml.MappingNode)
                              else loader.construct_scalar(node)),
    )


@dataclass(frozen=True)
class Pin:
    """Something pinned (an image or an action), where, and which update entry would keep it
    current: `ecosystem` in `directory`, or no ecosystem at all when Dependabot never reads it."""

    what: str
    path: str
    place: str
    ecosystem: str | None
    directory: str

    @property
    def id(self) -> str:
        return f"{self.path} {self.place} {self.what}"


def directory_of(path: str) -> str:
    parent = str(PurePosixPath(path).parent)
    return "/" if parent == "." else f"/{parent}"


def dockerfile_pins(path: str, text: str) -> list[Pin]:
    pins, stages = [], set()
    for command in dockerfile.parse_string(text):
        kind = command.cmd.upper()
        if kind == "ARG":
            for word in command.value:
                name, equals, default = word.partition("=")
                if equals and name.endswith("_IMAGE"):
                    pins.append(Pin(default, path, f"ARG {name}", None, directory_of(path)))
        elif kind == "FROM":
            words = list(command.value)
            image = words[0]
            if len(words) >= 3 and words[1].upper() == "AS":
                stages.add(words[2])
            # A variable is an ARG (collected above); a stage name or scratch is no image.
            if "$" not in image and image not in stages and image != "scratch":
                pins.append(Pin(image, path, "FROM", "docker", directory_of(path)))
    return pins


def compose_pins(path: str, text: str) -> list[Pin]:
    pins = []
    for name, service in ((yaml.load(text, Loader=ComposeLoader) or {}).get("services") or {}).items():
        image = (service or {}).get("image")
        if not image or OWN_IMAGE.match(image):
            continue
        # An interpolated reference is resolved only when Compose runs: nothing can update it.
        ecosystem = None if "${" in image else "docker-compose"
        pins.append(Pin(image, path, f"services.{name}.image", ecosystem, directory_of(path)))
    return pins


def step_pins(path: str, steps: list, directory: str) -> list[Pin]:
    pins = []
    for index, step in enumerate(steps or []):
        uses = str((step or {}).get("uses") or "")
        if not uses or uses.startswith("./"):
            continue
        if uses.startswith("docker://"):
            pins.append(Pin(uses.removeprefix("docker://"), path, f"steps[{index}].uses", None, directory))
        else:
            pins.append(Pin(uses, path, f"steps[{index}].uses", "github-actions", directory))
    return pins


def workflow_pins(path: str, text: str) -> list[Pin]:
    pins = []
    for job_id, job in ((yaml.safe_load(text) or {}).get("jobs") or {}).items():
        job = job or {}
        # A workflow's services and containers: no Dependabot ecosystem reads them.
        for name, service in (job.get("services") or {}).items():
            if (service or {}).get("image"):
                pins.append(Pin(service["image"], path, f"jobs.{job_id}.services.{name}.image", None, "/"))
        container = job.get("container")
        image = container.get("image") if isinstance(container, dict) else container
        if image:
            pins.append(Pin(image, path, f"jobs.{job_id}.container", None, "/"))
        uses = str(job.get("uses") or "")
        if uses and not uses.startswith("./"):
            pins.append(Pin(uses, path, f"jobs.{job_id}.uses", "github-actions", "/"))
        pins += [Pin(p.what, p.path, f"jobs.{job_id}.{p.place}", p.ecosystem, p.directory)
                 for p in step_pins(path, job.get("steps"), "/")]
    return pins


def action_pins(path: str, text: str) -> list[Pin]:
    runs = (yaml.safe_load(text) or {}).get("runs") or {}
    pins = step_pins(path, runs.get("steps"), directory_of(path))
    if str(runs.get("image", "")).startswith("docker://"):
        pins.append(Pin(runs["image"].removeprefix("docker://"), path, "runs.image", None, directory_of(path)))
    return pins


def devcontainer_pins(path: str, text: str) -> list[Pin]:
    config = json.loads(text)
    # The devcontainers ecosystem finds .devcontainer/devcontainer.json (and .devcontainer/*/...)
    # from the directory that holds .devcontainer.
    rooted = f"/{path}"
    home = (rooted[:rooted.find("/.devcontainer/")] or "/") if "/.devcontainer/" in rooted else directory_of(path)
    pins = [Pin(feature, path, "features", "devcontainers", home) for feature in config.get("features") or {}]
    if config.get("image"):
        pins.append(Pin(config["image"], path, "image", None, home))
    return pins


def kubernetes_pins(path: str, text: str) -> list[Pin]:
    """The images of every container in the manifest's workloads (a kustomization names none)."""
    pins = []

    def walk(node, place: str) -> None:
        if isinstance(node, dict):
            for key in ("initContainers", "containers"):
                for container in node.get(key) or []:
                    image = (container or {}).get("image")
                    if image and not OWN_IMAGE.match(image):
                        pins.append(Pin(image, path, f"{place}.{container.get('name')}", "docker", directory_of(path)))
            for key, value in node.items():
                walk(value, f"{place}.{key}" if place else key)
        elif isinstance(node, list):
            for item in node:
                walk(item, place)

    for document in yaml.safe_load_all(text):
        if isinstance(document, dict) and document.get("kind") != "Kustomization":
            walk(document, f"{document.get('kind')}/{(document.get('metadata') or {}).get('name')}")
    return pins


def pins_in(name: str, text: str) -> list[Pin]:
    if DOCKERFILE.search(name):
        return dockerfile_pins(name, text)
    if WORKFLOW.fullmatch(name):
        return workflow_pins(name, text)
    if ACTION.fullmatch(name):
        return action_pins(name, text)
    if COMPOSE_FILE.fullmatch(PurePosixPath(name).name):
        return compose_pins(name, text)
    if KUBERNETES_MANIFEST.fullmatch(name):
        return kubernetes_pins(name, text)
    if PurePosixPath(name).name in ("devcontainer.json", ".devcontainer.json"):
        return devcontainer_pins(name, text)
    return []


def repository_pins() -> list[Pin]:
    return [pin for name in project_files(REPO) for pin in pins_in(name, (REPO / name).read_text(encoding="utf-8"))]


def manifests() -> list[tuple[str, str]]:
    """(ecosystem, directory) of every package manifest: cargo, npm and pip."""
    found = set()
    for name in project_files(REPO):
        base = PurePosixPath(name).name
        if base == "Cargo.lock":
            found.add(("cargo", directory_of(name)))
        elif base == "package.json" and "node_modules/" not in name:
            found.add(("npm", directory_of(name)))
        elif re.fullmatch(r"[^/]*requirements[^/]*\.txt", base):
            found.add(("pip", directory_of(name)))
    return sorted(found)


def load_config() -> dict:
    return yaml.safe_load((REPO / ".github" / "dependabot.yml").read_text(encoding="utf-8"))


def entries(config: dict) -> list[tuple[str, list[str]]]:
    """(ecosystem, directories) of each update entry, directories as `/path` without a trailing `/`."""
    found = []
    for update in config.get("updates") or []:
        listed = update.get("directories") or [update.get("directory", "")]
        found.append((update["package-ecosystem"], ["/" + d.strip("/") for d in listed]))
    return found


def covered(ecosystem: str | None, directory: str, config: dict) -> bool:
    return ecosystem is not None and any(
        kind == ecosystem and any(fnmatch.fnmatchcase(directory, pattern) for pattern in directories)
        for kind, directories in entries(config))


def pin_params() -> list:
    params = []
    for pin in repository_pins():
        params.append(pytest.param(pin, id=pin.id))
    return params


@pytest.fixture(scope="module")
def config() -> dict:
    return load_config()


@pytest.mark.parametrize("pin", pin_params())
def test_the_pin_is_kept_current_by_a_dependabot_entry(pin, config):
    gap = f" ({ARG_DEFAULT_GAP})" if pin.place.startswith("ARG ") else ""
    assert pin.ecosystem is not None, (
        f"no Dependabot ecosystem reads {pin.place} in {pin.path}: move the pin where one does{gap}")
    assert covered(pin.ecosystem, pin.directory, config), (
        f"add {pin.directory} to the {pin.ecosystem} entry of .github/dependabot.yml")


@pytest.mark.parametrize("ecosystem, directory", manifests(), ids=lambda value: str(value))
def test_the_manifest_is_kept_current_by_a_dependabot_entry(ecosystem, directory, config):
    assert covered(ecosystem, directory, config)


@pytest.mark.parametrize("directory", sorted({directory_of(n) for n in project_files(REPO) if DOCKERFILE.search(n)}))
def test_every_directory_with_a_dockerfile_has_a_docker_entry(directory, config):
    assert covered("docker", directory, config)


def test_every_directory_an_entry_lists_exists(config):
    missing = [f"{kind} {directory}" for kind, directories in entries(config) for directory in directories
               if not any(ch in directory for ch in "*?[") and not (REPO / directory.lstrip("/")).is_dir()]
    assert missing == []


def test_updates_come_weekly_with_minor_and_patch_grouped(config):
    for update in config["updates"]:
        assert update["schedule"]["interval"] == "weekly", update["package-ecosystem"]
        groups = (update.get("groups") or {}).values()
        assert any(set(group.get("update-types", ["major", "minor", "patch"])) >= {"minor", "patch"}
                   for group in groups), update["package-ecosystem"]


# The rules above catch what they claim: pins Dependabot cannot reach, or that no entry covers.


def test_a_workflow_service_image_is_reported_as_never_updated():
    pins = workflow_pins(".github/workflows/x.yml", "jobs:\n  j:\n    services:\n      db:\n        image: postgres:17\n")
    assert [(p.what, p.ecosystem) for p in pins] == [("postgres:17", None)]


def test_an_action_in_an_unlisted_composite_action_is_not_covered(config):
    pins = action_pins(".github/actions/other/action.yml",
                       "runs:\n  using: composite\n  steps:\n    - uses: actions/cache@v5\n")
    assert [p.directory for p in pins] == ["/.github/actions/other"]
    assert not covered(pins[0].ecosystem, pins[0].directory, config)


def test_a_kubernetes_image_is_read_by_docker_and_our_own_are_left_to_the_release():
    manifest = ("kind: StatefulSet\nmetadata: {name: db}\nspec:\n  template:\n    spec:\n      containers:\n"
                "        - {name: db, image: 'postgres:17'}\n        - {name: api, image: items-api}\n")
    pins = kubernetes_pins("deploy/kubernetes/overlays/x/db.yaml", manifest)
    assert [(p.what, p.ecosystem, p.directory) for p in pins] == [
        ("postgres:17", "docker", "/deploy/kubernetes/overlays/x")]


def test_an_arg_default_is_reported_and_a_literal_from_is_read_by_docker():
    pins = dockerfile_pins("api/Dockerfile", "ARG BASE_IMAGE=rust:1\nFROM ${BASE_IMAGE} AS build\n"
                                             "FROM debian:12\nCOPY --from=build /a /a\n")
    assert [(p.what, p.ecosystem) for p in pins] == [("rust:1", None), ("debian:12", "docker")]


# --- Schemas: check-jsonschema's vendored copies, run as itself -----------------------------


def check_jsonschema(repo, linter, schema: str, names: list[str]) -> subprocess.CompletedProcess:
    tool = linter("check-jsonschema", f"{PIP_INSTALL} (check-jsonschema)")
    return subprocess.run([tool, "--builtin-schema", schema, *names], cwd=repo, capture_output=True, text=True,
                          timeout=300)


def test_dependabot_yml_matches_its_schema(repo, linter):
    done = check_jsonschema(repo, linter, "vendor.dependabot", [".github/dependabot.yml"])
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_workflow_matches_the_workflow_schema(repo, files, linter):
    workflows = [name for name in files if WORKFLOW.fullmatch(name)]
    done = check_jsonschema(repo, linter, "vendor.github-workflows", workflows)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_composite_action_matches_the_action_schema(repo, files, linter):
    actions = [name for name in files if ACTION.fullmatch(name)]
    assert actions, "no action.yml found"
    done = check_jsonschema(repo, linter, "vendor.github-actions", actions)
    assert done.returncode == 0, done.stdout + done.stderr
