"""compose.postgres.yaml: API replicas on one Postgres behind the web tier, stressed the way an
operator would: requests spread over every replica, a replica stopped and the service scaled
under write load, Postgres killed under load, and the data kept across `down` and `up`."""

from __future__ import annotations

import time

import pytest

from support import http
from support.compose import docker, inspect
from support.net import wait_until
from support.load import WriteLoad, all_ids
from support.stack import POSTGRES, up

WRITERS = 8


@pytest.fixture(scope="module")
def stack(project, built_images):
    project("down", "--volumes", "--remove-orphans", files=POSTGRES.files)
    up(project, POSTGRES)
    return project


def replica_hosts(stack) -> set[str]:
    """The host names of the running API containers (what /api/health reports)."""
    return {inspect("container", c)["Config"]["Hostname"] for c in stack.containers("api")}


def wait_for_servers(stack, count: int) -> None:
    """Until the web tier's server list has `count` replicas."""
    def listed() -> bool:
        done = stack("exec", "-T", "web", "cat", "/tmp/items-api-servers.conf", check=False)
        return len([line for line in done.stdout.splitlines() if line.startswith("server")]) == count
    wait_until(f"the web tier to list {count} API replicas", listed, timeout=60, interval=0.5)


def test_every_replica_is_healthy(stack):
    containers = stack.containers("api")
    assert [inspect("container", c)["State"]["Health"]["Status"] for c in containers] == ["healthy"] * 3


def test_postgres_is_healthy(stack):
    assert stack.health("postgres") == "healthy"


def test_the_api_runs_on_postgres(stack):
    assert http.request(stack.web_url + "/api/health").json()["database"]["backend"] == "postgres"


@pytest.fixture(scope="module")
def answered_by(stack):
    return [http.request(stack.web_url + "/api/health").json()["hostname"] for _ in range(60)]


def test_sixty_requests_reach_all_three_replicas(stack, answered_by, figure):
    figure("60 requests: answers per replica", sorted(answered_by.count(host) for host in set(answered_by)))
    assert set(answered_by) == replica_hosts(stack)


def test_the_password_is_not_in_any_containers_environment(stack):
    environments = [inspect("container", c)["Config"]["Env"] for service in ("api", "postgres")
                    for c in stack.containers(service)]
    password = stack("exec", "-T", "postgres", "cat", "/run/secrets/db-password").stdout.strip()
    assert len(password) >= 20 and not any(password in entry for env in environments for entry in env)


def psql(stack, sql: str) -> str:
    """SQL as the owner, over the server's own socket."""
    return stack("exec", "-T", "postgres", "psql", "-U", "items", "-d", "items", "-Atc", sql).stdout.strip()


def test_the_replicas_serve_as_the_role_migrate_made_and_never_see_the_owners_password(stack):
    mounted = {mount.get("Name") for c in stack.containers("api") for mount in inspect("container", c)["Mounts"]}
    assert mounted == {f"{stack.name}_db-app-secret"}
    sessions = psql(stack, "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = 'items' "
                           "AND backend_type = 'client backend' AND pid <> pg_backend_pid()")
    assert sessions.split() == ["items_app"]


def test_the_serving_role_may_change_items_and_nothing_else(stack):
    rights = psql(stack, "SELECT has_table_privilege('items_app', 'items', 'INSERT'), "
                         "has_table_privilege('items_app', 'items_revision', 'UPDATE'), "
                         "has_database_privilege('items_app', 'items', 'CREATE'), "
                         "has_schema_privilege('items_app', 'public', 'CREATE'), "
                         "(SELECT rolsuper OR rolcreaterole OR rolcreatedb FROM pg_roles WHERE rolname = 'items_app')")
    assert rights.split("|") == ["t", "f", "f", "f", "f"]


def test_postgres_publishes_no_port(stack):
    ports = inspect("container", stack.container("postgres"))["NetworkSettings"]["Ports"] or {}
    assert [binding for bindings in ports.values() for binding in bindings or []] == []


def test_postgres_runs_hardened(stack):
    config = inspect("container", stack.container("postgres"))
    assert (config["Config"]["User"], config["HostConfig"]["ReadonlyRootfs"], config["HostConfig"]["CapDrop"]) == (
        "postgres", True, ["ALL"])


# --- One replica stopped under load --------------------------------------------------------


@pytest.fixture(scope="module")
def one_stopped(stack, figure):
    wait_for_servers(stack, 3)
    with WriteLoad(stack.web_url, WRITERS) as load:
        load.wait_for(200)
        victim = stack.containers("api")[-1]
        # SIGTERM: the replica fails readiness, is dropped by the web tier, then stops.
        docker("stop", victim, timeout=60)
        load.wait_for(200)
    figure("replica stop: acknowledged writes", len(load.acknowledged))
    figure("replica stop: failed requests", sum(load.failed.values()))
    stack("up", "-d", "--wait", "--scale", "api=3", log="scale-restore.log")
    stored = all_ids(stack.web_url)
    figure("replica stop: acknowledged writes lost", len(set(load.acknowledged) - stored))
    return {"load": load, "stored": stored}


def test_stopping_a_replica_under_load_fails_no_request(one_stopped):
    assert one_stopped["load"].failed == {}


def test_stopping_a_replica_under_load_loses_no_acknowledged_write(one_stopped):
    assert set(one_stopped["load"].acknowledged) - one_stopped["stored"] == set()


# --- Scaling 3 -> 5 -> 2 under load ----------------------------------------------------------


@pytest.fixture(scope="module")
def rescaled(stack, one_stopped, figure):
    replicas = []
    with WriteLoad(stack.web_url, WRITERS) as load:
        for count in (5, 2):
            load.wait_for(100)
            stack("up", "-d", "--wait", "--no-recreate", "--scale", f"api={count}", log=f"scale-{count}.log")
            wait_for_servers(stack, count)
            replicas.append(len(stack.containers("api")))
        load.wait_for(100)
    stored = all_ids(stack.web_url)
    figure("scaling 3->5->2: acknowledged writes", len(load.acknowledged))
    figure("scaling 3->5->2: failed requests", sum(load.failed.values()))
    figure("scaling 3->5->2: acknowledged writes lost", len(set(load.acknowledged) - stored))
    return {"load": load, "replicas": replicas, "stored": stored}


def test_the_service_scales_to_five_then_two_replicas(rescaled):
    assert rescaled["replicas"] == [5, 2]


def test_scaling_under_load_fails_no_request(rescaled):
    assert rescaled["load"].failed == {}


def test_scaling_under_load_loses_no_acknowledged_write(rescaled):
    assert set(rescaled["load"].acknowledged) - rescaled["stored"] == set()


# --- Postgres killed under load --------------------------------------------------------------


@pytest.fixture(scope="module")
def database_killed(stack, rescaled, figure):
    with WriteLoad(stack.web_url, WRITERS, backoff=0.2) as load:
        load.wait_for(100)
        postgres = stack.container("postgres")
        docker("kill", "-s", "KILL", postgres)
        # The outage is seen as JSON 503s...
        wait_until("503s during the outage", lambda: load.count(503) >= 5, timeout=60, interval=0.2)
        time.sleep(2)
        # ...until Postgres is back (`docker kill` counts as a manual stop on some engines).
        if not inspect("container", postgres)["State"]["Running"]:
            docker("start", postgres)
        stack.wait_healthy("postgres")
        started = time.monotonic()
        load.wait_for(100, timeout=120)
        recovered_after = time.monotonic() - started
    figure("postgres kill: 503s during the outage", load.count(503))
    figure("postgres kill: seconds to recover after it was healthy", f"{recovered_after:.1f}")
    stored = all_ids(stack.web_url)
    figure("postgres kill: acknowledged writes", len(load.acknowledged))
    figure("postgres kill: acknowledged writes lost", len(set(load.acknowledged) - stored))
    return {"load": load, "stored": stored, "health": stack.health("api")}


def test_while_postgres_is_down_writes_get_json_503s_only(database_killed):
    assert set(database_killed["load"].failed) == {503} and database_killed["load"].not_json == []


def test_the_api_recovers_by_itself_when_postgres_is_back(database_killed):
    assert database_killed["health"] == "healthy"


def test_killing_postgres_loses_no_acknowledged_write(database_killed):
    assert set(database_killed["load"].acknowledged) - database_killed["stored"] == set()


# --- down, then up ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def after_down_up(stack, database_killed):
    before = all_ids(stack.web_url)
    stack("down", log="postgres-down.log")
    up(stack, POSTGRES, log="postgres-up-again.log")
    return before, all_ids(stack.web_url)


def test_down_then_up_keeps_every_item(after_down_up):
    before, after = after_down_up
    assert before and after == before
