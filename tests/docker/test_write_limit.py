"""The web image limits each client's writes unless told otherwise: a container run with nothing
but the image's own settings refuses writes past the burst with a JSON 429 and still answers
reads. The stacks of the other modules take write load from this one machine, so the project
turns the limit off for them (compose.no-write-limit.yaml)."""

from __future__ import annotations

import pytest

from support import http
from support.compose import docker, inspect
from support.net import free_port, wait_until


@pytest.fixture(scope="module")
def image_env(built_images, project) -> dict[str, str]:
    env = inspect("image", project.image("web"))["Config"]["Env"]
    return dict(entry.split("=", 1) for entry in env)


@pytest.fixture(scope="module")
def web_alone(built_images, project):
    """The web image with no settings of its own and no API (its requests get nginx's JSON 502),
    with the writable paths compose.yaml gives it."""
    port = free_port()
    name = f"{project.name}-web-alone"
    docker("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080", "--read-only",
           "--tmpfs", "/etc/nginx/conf.d:size=1m,uid=101,gid=101,mode=0755",
           "--tmpfs", "/tmp:size=32m,uid=101,gid=101,mode=0700", project.image("web"))
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until("the web container to answer /healthz",
                   lambda: http.request(url + "/healthz", timeout=2).status == 200, timeout=60)
        yield url
    finally:
        docker("logs", name, check=False, log=project.logs / "web-alone.log")
        docker("rm", "-f", name, check=False)


def test_the_image_turns_the_write_limit_on(image_env):
    assert image_env.get("WRITE_LIMIT") == "on"


@pytest.fixture(scope="module")
def writes(web_alone, image_env):
    # Sent until one is refused: however slow the machine, the rate cannot keep up with ten times
    # the burst.
    burst = int(image_env["WRITE_LIMIT_BURST"])
    responses = []
    while len(responses) < 10 * (burst + 1) and (not responses or responses[-1].status != 429):
        responses.append(http.request(web_alone + "/api/items", "POST", json_body={"text": "x"}))
    return burst, responses


def test_the_image_lets_a_burst_of_writes_through(writes):
    burst, responses = writes
    assert [response.status for response in responses[: burst + 1]] == [502] * (burst + 1)


def test_the_image_refuses_writes_past_the_burst_with_429(writes):
    assert writes[1][-1].status == 429


def test_the_images_429_is_json_with_a_detail(writes):
    refused = writes[1][-1]
    assert refused.header("Content-Type") == "application/json" and refused.json()["detail"]


def test_the_images_429_says_when_to_retry(writes):
    assert writes[1][-1].header("Retry-After") == "1"


def test_the_image_answers_reads_while_writes_are_refused(web_alone, writes):
    assert writes[1][-1].status == 429
    assert http.request(web_alone + "/api/items").status == 502
