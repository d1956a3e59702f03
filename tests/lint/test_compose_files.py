"""compose.registry.yaml is compose.yaml for published images: kept standalone on purpose (no
include or extends), so these tests hold the two in step. Read with a YAML parser, anchors and
merge keys resolved."""

from __future__ import annotations

import pytest
import yaml

PUBLISHED_IMAGES = {
    "api": "${REGISTRY:-ghcr.io/example/items-app}/api:${IMAGE_TAG:-latest}",
    "web": "${REGISTRY:-ghcr.io/example/items-app}/web:${IMAGE_TAG:-latest}",
}


@pytest.fixture(scope="module")
def built(repo) -> dict:
    return yaml.safe_load((repo / "compose.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def published(repo) -> dict:
    return yaml.safe_load((repo / "compose.registry.yaml").read_text(encoding="utf-8"))


def without(service: dict, key: str) -> dict:
    return {name: value for name, value in service.items() if name != key}


def test_both_files_define_the_same_services(built, published):
    assert sorted(published["services"]) == sorted(built["services"])


@pytest.mark.parametrize("service", sorted(PUBLISHED_IMAGES))
def test_a_published_service_differs_from_the_built_one_only_in_image_for_build(built, published,
                                                                                 service):
    # Hardening, health checks, limits, volumes, networks and environment, all of it.
    assert without(published["services"][service], "image") == without(built["services"][service], "build")


@pytest.mark.parametrize("service", sorted(PUBLISHED_IMAGES))
def test_a_published_service_runs_the_image_ci_pushes(published, service):
    assert published["services"][service]["image"] == PUBLISHED_IMAGES[service]


@pytest.mark.parametrize("service", sorted(PUBLISHED_IMAGES))
def test_a_published_service_builds_nothing(published, service):
    assert "build" not in published["services"][service]


@pytest.mark.parametrize("section", ["name", "networks", "volumes"])
def test_the_top_level_sections_are_the_same(built, published, section):
    # The same project name and volume: moving between the two keeps the data.
    assert published.get(section) == built.get(section)
