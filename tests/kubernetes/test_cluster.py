"""The dev overlay on a cluster, under write load through the web tier: an API pod deleted, then
a rollout of new image tags for both tiers. Nothing acknowledged may be lost; during the rollout
no request may fail at all (the drain, Connection: close while draining, the preStop sleep and
maxUnavailable 0 are what make that hold). Run by the Kubernetes workflow against kind."""

from __future__ import annotations

import os

import pytest

from support.load import WriteLoad, all_ids

WRITERS = 8


def pods(kubectl, component: str) -> list[str]:
    return kubectl("get", "pods", "-l", f"app.kubernetes.io/component={component}",
                   "--field-selector=status.phase=Running", "-o", "jsonpath={.items[*].metadata.name}").split()


def report(load: WriteLoad) -> str:
    return f"statuses {dict(sorted(load.statuses.items()))}, {load.count()} acknowledged"


def test_an_api_pod_deleted_under_write_load_loses_no_acknowledged_write(web_url, kubectl):
    replicas = pods(kubectl, "api")
    assert len(replicas) >= 2, replicas
    with WriteLoad(web_url, WRITERS) as load:
        load.wait_for(200)
        kubectl("delete", "pod", replicas[0], "--wait=false")
        load.wait_for(300)
        kubectl("rollout", "status", "deployment/api", "--timeout=180s")
        load.wait_for(200)
    print(report(load))
    assert set(load.acknowledged) - all_ids(web_url) == set()
    assert load.not_json == []


def test_a_rollout_of_new_image_tags_fails_no_request_and_loses_nothing(web_url, kubectl):
    api_image, web_image = os.environ.get("ITEMS_K8S_NEXT_API_IMAGE"), os.environ.get("ITEMS_K8S_NEXT_WEB_IMAGE")
    if not (api_image and web_image):
        pytest.fail("ITEMS_K8S_NEXT_API_IMAGE and ITEMS_K8S_NEXT_WEB_IMAGE name the images to roll out")
    with WriteLoad(web_url, WRITERS) as load:
        load.wait_for(200)
        kubectl("set", "image", "deployment/api", f"api={api_image}")
        kubectl("rollout", "status", "deployment/api", "--timeout=300s")
        kubectl("set", "image", "deployment/web", f"web={web_image}")
        kubectl("rollout", "status", "deployment/web", "--timeout=300s")
        load.wait_for(200)
    print(report(load))
    assert set(load.statuses) == {201}, report(load)
    assert set(load.acknowledged) - all_ids(web_url) == set()
