"""Both images: they build (the unchanged rebuild from cache), an edited handler recompiles only
the crate, and each image is small, labelled with its build, non-root and health-checked."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from support.compose import docker, inspect

# The static binary is most of it; OpenTelemetry's OTLP export (gRPC, which the Azure Container Apps
# agent takes, and HTTP) grew it by about 3 MB.
API_IMAGE_BUDGET_BYTES = 24 * 1000 * 1000
DEPENDENCIES = ("tokio", "axum", "rusqlite", "libsqlite3-sys")
LABELS = ("title", "description", "licenses", "source")


@pytest.mark.parametrize("build", ["api (first)", "web (first)", "api (no change)"])
def test_the_image_builds(images, build):
    done = images.builds[build]
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]


@pytest.fixture(scope="module")
def edited_build(built_images, project, repo, docker_logs):
    """A copy of the build context with one handler edited, built with the same cache mounts."""
    context = Path(tempfile.mkdtemp(prefix="items-context-"))
    try:
        (context / "web").mkdir()
        for name in ("Cargo.toml", "Cargo.lock", ".dockerignore"):
            shutil.copy2(repo / name, context / name)
        shutil.copytree(repo / "api", context / "api", ignore=shutil.ignore_patterns("target"))
        for name in ("static", "templates"):
            shutil.copytree(repo / "web" / name, context / "web" / name)
        handler = context / "api" / "src" / "http" / "routes" / "items.rs"
        # A code change, not a comment: a new public function must be compiled and linked.
        with open(handler, "a") as source:
            source.write(f'\n#[doc(hidden)]\npub fn rebuild_marker() -> &\'static str {{\n    "{project.name}"\n}}\n')
        log = docker_logs / "build-api-edited.log"
        docker("build", "--progress", "plain", "-f", "api/Dockerfile", "-t", f"{project.image('api')}:edited",
               str(context), log=log)
        return log.read_text()
    finally:
        shutil.rmtree(context, ignore_errors=True)
        docker("image", "rm", f"{project.image('api')}:edited", check=False)


def test_editing_one_handler_recompiles_items_api(edited_build):
    assert "Compiling items-api" in edited_build


@pytest.mark.parametrize("crate", DEPENDENCIES)
def test_editing_one_handler_does_not_recompile_the_dependency(edited_build, crate):
    assert f"Compiling {crate} v" not in edited_build


@pytest.fixture(scope="module")
def image(built_images, project, figure):
    def image(service: str) -> dict:
        details = inspect("image", project.image(service))
        figure(f"{service} image bytes", details["Size"])
        return details

    return image


@pytest.mark.parametrize("service", ["api", "web"])
@pytest.mark.parametrize("label", LABELS)
def test_the_image_has_the_oci_label(image, service, label):
    assert image(service)["Config"]["Labels"].get(f"org.opencontainers.image.{label}")


@pytest.mark.parametrize("service", ["api", "web"])
def test_the_version_label_is_the_build_version(image, build_info, service):
    assert image(service)["Config"]["Labels"]["org.opencontainers.image.version"] == build_info.version


@pytest.mark.parametrize("service", ["api", "web"])
def test_the_created_label_is_the_build_date(image, build_info, service):
    assert image(service)["Config"]["Labels"]["org.opencontainers.image.created"] == build_info.date


@pytest.mark.parametrize("service", ["api", "web"])
def test_the_revision_label_is_the_vcs_ref(image, build_info, service):
    assert image(service)["Config"]["Labels"]["org.opencontainers.image.revision"] == build_info.vcs_ref


@pytest.mark.parametrize("service", ["api", "web"])
def test_the_image_runs_as_a_non_root_user(image, service):
    user = image(service)["Config"]["User"]
    assert user and not user.startswith(("0", "root"))


@pytest.mark.parametrize("service", ["api", "web"])
def test_the_image_has_a_healthcheck(image, service):
    test = " ".join(image(service)["Config"].get("Healthcheck", {}).get("Test", []))
    assert "healthz" in test or "healthcheck" in test


def test_the_api_image_is_within_its_size_budget(image):
    assert image("api")["Size"] <= API_IMAGE_BUDGET_BYTES


def test_the_api_image_listens_on_every_interface_on_port_8000(image):
    assert "BIND_ADDR=0.0.0.0:8000" in image("api")["Config"]["Env"]


def test_the_api_image_keeps_its_database_in_the_data_volume(image):
    assert "DB_PATH=/data/app.db" in image("api")["Config"]["Env"]
