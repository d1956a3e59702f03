"""compose.observability.yaml on the Postgres stack with three API replicas: Prometheus runs
hardened, finds every replica by itself and the web tier's figures, loads every rule; the replicas
are scraped, their request counters add up to the requests sent through Nginx, every dashboard
query returns data, a frozen replica shows as down and fires its alert, a stopped one leaves the
targets. Then the same overlay on the SQLite stack, where the writer's panels return data.

What the API itself exports (its own listener on METRICS_ADDR, port 9464, the names in
docs/operations.md) comes with the API side of issue 22: with an image that lacks it, the tests
that need it fail, saying that the replicas' metrics listener does not answer."""

from __future__ import annotations

import threading
import time

import pytest

from support import http
from support.compose import docker, inspect
from support.events import Stream
from support.load import add_item
from support.net import free_port, wait_until
from support.prometheus import Prometheus, alert_rules, dashboard_queries, metric_names, scraped_since
from support.stack import POSTGRES, SQLITE, StackVariant, up

OBSERVABILITY = "compose.observability.yaml"
POSTGRES_OBSERVED = StackVariant("postgres", 3, (*POSTGRES.files, OBSERVABILITY))
SQLITE_OBSERVED = StackVariant("sqlite", 1, (*SQLITE.files, OBSERVABILITY))
SCRAPE_INTERVAL = 15
# Long enough for a scrape of every target and one evaluation of the rules after it.
SCRAPE_WINDOW = 3 * SCRAPE_INTERVAL
API_PORT = 9464
NO_API_METRICS = ("the API replicas' metrics listener (METRICS_ADDR, :9464/metrics) does not answer; "
                  "the API image needs the API side of issue 22")
# Figures only one backend has: the SQLite writer and the free space beside the database file;
# the Postgres pool and change listener.
SQLITE_ONLY = ("items_sqlite_", "items_database_disk_free_bytes")
POSTGRES_ONLY = ("db_client_connection_", "items_db_pool_", "items_postgres_")


def reads(expr: str, prefixes: tuple[str, ...]) -> bool:
    return any(name.startswith(prefixes) for name in metric_names(expr))


@pytest.fixture(scope="module")
def prometheus_port(project):
    """Prometheus' published port for this module (the default 9090 may be taken on this host)."""
    port = free_port()
    project.env["PROMETHEUS_PORT"] = str(port)
    yield port
    project.env.pop("PROMETHEUS_PORT", None)


@pytest.fixture(scope="module")
def stack(project, built_images, prometheus_port):
    project("down", "--volumes", "--remove-orphans", files=POSTGRES_OBSERVED.files)
    up(project, POSTGRES_OBSERVED, log="observability-up.log")
    yield project
    project("down", "--volumes", "--remove-orphans", files=POSTGRES_OBSERVED.files, log="observability-down.log")


@pytest.fixture(scope="module")
def prometheus(stack, prometheus_port) -> Prometheus:
    client = Prometheus(f"http://127.0.0.1:{prometheus_port}")
    wait_until("Prometheus to answer queries", lambda: client.query("vector(1)"), timeout=60, interval=1,
               ignore=(OSError, AssertionError))
    return client


def backend_address(container: str, port: int) -> str:
    """host:port of a container on the backend network, as Prometheus names the target."""
    networks = inspect("container", container)["NetworkSettings"]["Networks"]
    [address] = [n["IPAddress"] for name, n in networks.items() if name.endswith("_backend")]
    return f"{address}:{port}"


def api_addresses(stack) -> set[str]:
    """The metrics listener of every running API replica."""
    return {backend_address(container, API_PORT) for container in stack.containers("api")}


def up_value(prometheus, address: str) -> float | None:
    return prometheus.value(f'up{{job="api", instance="{address}"}}')


def wait_for_api_targets(prometheus, addresses: set[str]) -> list[dict]:
    def found():
        targets = prometheus.targets("api")
        return targets if {t["labels"]["instance"] for t in targets} == addresses else None
    return wait_until(f"Prometheus to find the API replicas {sorted(addresses)}", found, timeout=60, interval=1)


def answering(prometheus, addresses: set[str]) -> list[dict]:
    """The API targets once every replica answers its scrape; as they are after a scrape window
    when some do not (the tests that need them say which, and why)."""
    wait_for_api_targets(prometheus, addresses)
    try:
        wait_until("every API replica to answer its scrape",
                   lambda: all(t["health"] == "up" for t in prometheus.targets("api")), timeout=SCRAPE_WINDOW,
                   interval=1)
    except TimeoutError:
        pass
    return prometheus.targets("api")


@pytest.fixture(scope="module")
def scraped_replicas(stack, prometheus) -> list[dict]:
    return answering(prometheus, api_addresses(stack))


def require_api_metrics(scraped_replicas) -> None:
    down = {t["labels"]["instance"]: t["lastError"] for t in scraped_replicas if t["health"] != "up"}
    assert down == {}, f"{NO_API_METRICS}: {down}"


# --- Prometheus itself ---------------------------------------------------------------------


def test_prometheus_is_healthy(stack):
    assert stack.health("prometheus") == "healthy"


def test_prometheus_is_published_on_loopback_only(stack, prometheus_port):
    ports = inspect("container", stack.container("prometheus"))["NetworkSettings"]["Ports"]
    assert [(b["HostIp"], b["HostPort"]) for b in ports["9090/tcp"]] == [("127.0.0.1", str(prometheus_port))]


def test_prometheus_runs_hardened(stack):
    config = inspect("container", stack.container("prometheus"))
    host = config["HostConfig"]
    assert (config["Config"]["User"], host["ReadonlyRootfs"], host["CapDrop"], host["SecurityOpt"]) == (
        "65534:65534", True, ["ALL"], ["no-new-privileges:true"])


def test_prometheus_keeps_its_data_in_a_volume_and_reads_its_configuration_read_only(stack):
    mounts = {m["Destination"]: m for m in inspect("container", stack.container("prometheus"))["Mounts"]}
    assert (mounts["/prometheus"]["Type"], mounts["/prometheus"]["Name"], mounts["/etc/prometheus"]["RW"]) == (
        "volume", f"{stack.name}_prometheus-data", False)


def test_no_metrics_port_is_published(stack):
    published = {}
    for service in ("api", "web"):
        for container in stack.containers(service):
            ports = inspect("container", container)["NetworkSettings"]["Ports"] or {}
            published[service] = published.get(service, set()) | {p for p, b in ports.items() if b}
    assert published == {"api": set(), "web": {"8080/tcp"}}


def test_every_rule_loads_and_evaluates(prometheus):
    expected = set(alert_rules())

    def evaluated():
        rules = {r["name"]: r for r in prometheus.rules() if r["type"] == "alerting"}
        return rules if set(rules) == expected and all(r["health"] == "ok" for r in rules.values()) else None
    rules = wait_until("every alerting rule to be evaluated", evaluated, timeout=SCRAPE_WINDOW, interval=1)
    assert {name: r["health"] for name, r in rules.items()} == {name: "ok" for name in expected}


def test_prometheus_finds_one_api_target_per_replica_by_itself(stack, prometheus):
    targets = wait_for_api_targets(prometheus, api_addresses(stack))
    assert len(targets) == 3


def test_the_web_tiers_figures_are_scraped(stack, prometheus):
    def up_and_read():
        targets = prometheus.targets("web")
        up = [t["health"] for t in targets] == ["up"] and prometheus.value('nginx_up{job="web"}') == 1
        return targets if up else None
    targets = wait_until("the web tier's figures to be scraped", up_and_read, timeout=SCRAPE_WINDOW, interval=1)
    age = prometheus.value('time() - items_web_metrics_timestamp_seconds{job="web"}')
    assert ([t["labels"]["instance"] for t in targets], age < SCRAPE_INTERVAL + 10) == (
        [backend_address(stack.container("web"), 9113)], True)


@pytest.mark.parametrize("path", ["/metrics", "/api/metrics", "/stub_status", "/api/../metrics"])
def test_the_public_port_serves_neither_the_apis_nor_nginxs_metrics(stack, path):
    response = http.request(stack.web_url + path)
    assert response.status == 404 and "# TYPE" not in response.text, (response.status, response.text[:200])


# --- the API's own figures (the API side of issue 22) ---------------------------------------


def test_every_api_replica_is_scraped(scraped_replicas):
    require_api_metrics(scraped_replicas)


def test_every_replica_reports_this_build_on_postgres(prometheus, scraped_replicas, build_info):
    require_api_metrics(scraped_replicas)
    found = prometheus.query('items_build_info{job="api"}')
    assert sorted((s["metric"]["version"], s["metric"]["vcs_ref"], s["metric"]["backend"], s["value"][1])
                  for s in found) == [(build_info.version, build_info.vcs_ref, "postgres", "1")] * 3


class OpenStream:
    """A change stream open through the web tier, its events' names read in the background."""

    def __init__(self, web_url: str) -> None:
        self.stream = Stream(web_url)
        self.events: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)

    def _read(self) -> None:
        try:
            while True:
                self.events.append(self.stream.next_event()["name"])
        except (OSError, EOFError, ValueError, AttributeError):
            return  # closed

    def __enter__(self) -> "OpenStream":
        self.reader.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stream.close()
        self.reader.join(10)


def drive(web_url: str, writes: int, reads_by_id: int) -> None:
    """Adds items, reads some of them back one by one, and reads the newest page (from the list
    cache, and past it after each write)."""
    ids = [add_item(web_url, f"observed {n}") for n in range(writes)]
    for item in ids[:reads_by_id]:
        response = http.request(f"{web_url}/api/items/{item}")
        assert response.status == 200, response.text
    for _ in range(10):
        http.request(f"{web_url}/api/items?limit=10")
    add_item(web_url, "observed last")
    for _ in range(10):
        http.request(f"{web_url}/api/items?limit=10")


def request_counts(prometheus, route: str, method: str) -> dict[str, float]:
    """Requests each replica has counted on one route and method, whatever their status."""
    found = prometheus.query(f'sum by (instance) (http_server_request_duration_seconds_count'
                             f'{{job="api", http_route="{route}", http_request_method="{method}"}})')
    return {s["metric"]["instance"]: float(s["value"][1]) for s in found}


@pytest.fixture(scope="module")
def traffic(stack, prometheus, scraped_replicas):
    """Requests sent through Nginx while a change stream is open, and the counters before and
    after, once Prometheus has scraped every replica since the last one was answered."""
    require_api_metrics(scraped_replicas)
    before = {key: request_counts(prometheus, *key) for key in (("/api/items", "POST"), ("/api/items/{id}", "GET"))}
    nginx_before = prometheus.value('sum(nginx_http_requests_total{job="web"})', default=0)
    with OpenStream(stack.web_url):
        sent = {("/api/items", "POST"): 151, ("/api/items/{id}", "GET"): 90}
        drive(stack.web_url, writes=150, reads_by_id=90)
    answered_at = time.time()

    def counted():
        after = {key: request_counts(prometheus, *key) for key in sent}
        grown = {key: sum(after[key].values()) - sum(before[key].values()) for key in sent}
        # The web tier's figures are up to NGINX_METRICS_REFRESH_SECS (5 s) older than its scrape.
        done = scraped_since(prometheus.targets("api"), answered_at) and scraped_since(
            prometheus.targets("web"), answered_at + 6)
        return {"after": after, "grown": grown} if done else None
    counts = wait_until("a scrape of every replica and the web tier after the last request", counted,
                        timeout=SCRAPE_WINDOW + 6, interval=1)
    return {**counts, "before": before, "sent": sent, "nginx_before": nginx_before,
            "nginx_after": prometheus.value('sum(nginx_http_requests_total{job="web"})', default=0)}


def test_the_request_counters_add_up_to_the_requests_sent(traffic, figure):
    figure("requests sent through nginx, counted by the replicas",
           {f"{method} {route}": grown for (route, method), grown in traffic["grown"].items()})
    assert traffic["grown"] == {key: float(n) for key, n in traffic["sent"].items()}


def test_every_replica_counted_some_of_them(traffic):
    assert all(len([c for c in traffic["after"][key].values() if c > 0]) == 3 for key in traffic["sent"])


def test_nginx_counted_at_least_the_requests_sent(traffic):
    assert traffic["nginx_after"] - traffic["nginx_before"] >= sum(traffic["sent"].values())


def test_every_dashboard_query_parses(prometheus):
    failed = {}
    for title, expr in dashboard_queries():
        try:
            prometheus.query(expr)
        except AssertionError as error:
            failed[f"{title}: {expr}"] = str(error)
    assert failed == {}


def test_every_dashboard_query_returns_data_on_postgres(prometheus, traffic):
    empty = [f"{title}: {expr}" for title, expr in dashboard_queries()
             if not reads(expr, SQLITE_ONLY) and not prometheus.query(expr)]
    assert empty == []


# --- replicas going away ----------------------------------------------------------------------


def test_a_frozen_replica_shows_as_down_and_fires_its_alert(stack, prometheus, scraped_replicas, figure):
    # docker pause stops every process of the container where it stands: it keeps its address
    # and its DNS entry, and answers nothing, like a hung replica.
    require_api_metrics(scraped_replicas)
    victim = stack.containers("api")[-1]
    address = backend_address(victim, API_PORT)
    docker("pause", victim)
    started = time.monotonic()
    try:
        wait_until(f"{address} to show as down", lambda: up_value(prometheus, address) == 0, timeout=SCRAPE_WINDOW,
                   interval=1)
        firing = wait_until("ItemsApiReplicaDown to fire", lambda: prometheus.alerts("ItemsApiReplicaDown"),
                            timeout=60 + SCRAPE_WINDOW + SCRAPE_INTERVAL, interval=2)
        figure("frozen replica: seconds until ItemsApiReplicaDown fired", f"{time.monotonic() - started:.0f}")
    finally:
        docker("unpause", victim)
    assert [a["labels"]["instance"] for a in firing] == [address]
    wait_until("the replica to be scraped again", lambda: up_value(prometheus, address) == 1, timeout=SCRAPE_WINDOW,
               interval=1)


def test_a_stopped_replica_leaves_the_targets(stack, prometheus, scraped_replicas):
    require_api_metrics(scraped_replicas)
    docker("stop", stack.containers("api")[-1], timeout=60)
    try:
        remaining = api_addresses(stack)
        wait_for_api_targets(prometheus, remaining)
        two_answer = wait_until("two replicas answering their scrapes",
                               lambda: prometheus.value('count(up{job="api"} == 1)') == 2, timeout=SCRAPE_WINDOW,
                               interval=1)
    finally:
        stack("up", "-d", "--wait", "--scale", "api=3", log="observability-scale-restore.log")
    assert two_answer and len(remaining) == 2


# --- the SQLite stack ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sqlite_observed(stack, project, prometheus_port, build_info):
    """The same overlay on the SQLite stack, after some writes and reads."""
    project("down", "--volumes", "--remove-orphans", files=POSTGRES_OBSERVED.files)
    up(project, SQLITE_OBSERVED, log="observability-sqlite-up.log")
    client = Prometheus(f"http://127.0.0.1:{prometheus_port}")
    wait_until("Prometheus to answer queries", lambda: client.query("vector(1)"), timeout=60, interval=1,
               ignore=(OSError, AssertionError))
    targets = answering(client, api_addresses(project))
    with OpenStream(project.web_url):
        drive(project.web_url, writes=60, reads_by_id=10)
    answered_at = time.time()

    def scraped_after_the_writes() -> bool:
        # The web tier's figures are up to NGINX_METRICS_REFRESH_SECS (5 s) older than its scrape.
        # A rate needs two samples of a series: the stack is new, so the web tier's first
        # figures may have come with the writes.
        return (scraped_since(client.targets("api"), answered_at)
                and scraped_since(client.targets("web"), answered_at + 6)
                and client.value('sum(count_over_time(nginx_http_requests_total{job="web"}[2m]))', default=0) >= 2)
    wait_until("a scrape of the replica and the web tier after the writes", scraped_after_the_writes,
               timeout=SCRAPE_WINDOW + 6 + SCRAPE_INTERVAL, interval=1)
    yield {"prometheus": client, "targets": targets}
    project("down", "--volumes", "--remove-orphans", files=SQLITE_OBSERVED.files, log="observability-down.log")


def test_on_sqlite_prometheus_scrapes_the_one_replica(sqlite_observed):
    require_api_metrics(sqlite_observed["targets"])
    assert len(sqlite_observed["targets"]) == 1


def test_on_sqlite_the_replica_reports_the_sqlite_backend(sqlite_observed, build_info):
    require_api_metrics(sqlite_observed["targets"])
    found = sqlite_observed["prometheus"].query('items_build_info{job="api"}')
    assert [(s["metric"]["version"], s["metric"]["backend"]) for s in found] == [(build_info.version, "sqlite")]


def test_on_sqlite_every_dashboard_query_but_the_postgres_ones_returns_data(sqlite_observed):
    require_api_metrics(sqlite_observed["targets"])
    queries = [(title, expr) for title, expr in dashboard_queries()
               if reads(expr, SQLITE_ONLY) or not reads(expr, POSTGRES_ONLY)]
    empty = [f"{title}: {expr}" for title, expr in queries if not sqlite_observed["prometheus"].query(expr)]
    assert (len([q for q in queries if reads(q[1], SQLITE_ONLY)]) >= 4, empty) == (True, [])
