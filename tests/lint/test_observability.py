"""deploy/observability and compose.observability.yaml read with real parsers: the rules and the
dashboard read only metrics the API and the web tier export, every API metric is on the dashboard,
every alert has a severity, a runbook section in docs/operations.md and unit tests on both sides,
the scrape configuration matches the ports the services listen on, and Prometheus runs hardened.
promtool itself runs in tests/docker/test_prometheus_rules.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from support.prometheus import DASHBOARD, OBSERVABILITY, alert_rules, dashboard_queries, metric_names

REPO = Path(__file__).resolve().parents[2]

# The API's metrics (issue 22's contract), by family; histograms also give _bucket, _count, _sum.
API_METRICS = {
    "http_server_request_duration_seconds": "histogram",
    "http_server_active_requests": "gauge",
    "items_http_connections_open": "gauge",
    "items_http_connections_refused_total": "counter",
    "items_event_streams_open": "gauge",
    "items_event_streams_limit": "gauge",
    "items_event_streams_refused_total": "counter",
    "items_events_sent_total": "counter",
    "items_event_resets_total": "counter",
    "items_list_cache_requests_total": "counter",
    "items_sqlite_write_batch_size": "histogram",
    "items_sqlite_commit_duration_seconds": "histogram",
    "db_client_connection_count": "gauge",
    "db_client_connection_max": "gauge",
    "db_client_connection_pending_requests": "gauge",
    "items_db_pool_waits_total": "counter",
    "items_db_pool_timeouts_total": "counter",
    "items_postgres_listen_reconnects_total": "counter",
    "items_database_reachable": "gauge",
    "items_database_writable": "gauge",
    "items_database_disk_free_bytes": "gauge",
    "items_build_info": "gauge",
}
# What web/nginx-metrics.sh writes.
WEB_METRICS = {
    "nginx_connections_accepted_total": "counter",
    "nginx_connections_active": "gauge",
    "nginx_connections_handled_total": "counter",
    "nginx_connections_reading": "gauge",
    "nginx_connections_waiting": "gauge",
    "nginx_connections_writing": "gauge",
    "nginx_http_requests_total": "counter",
    "nginx_up": "gauge",
    "items_web_metrics_timestamp_seconds": "gauge",
}
# Prometheus' own series for every target.
PROMETHEUS_SERIES = {"up"}


def series_names(families: dict[str, str]) -> set[str]:
    names = set()
    for name, kind in families.items():
        names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"} if kind == "histogram" else {name}
    return names


KNOWN_SERIES = series_names(API_METRICS) | series_names(WEB_METRICS) | PROMETHEUS_SERIES


@pytest.fixture(scope="module")
def rules() -> dict[str, dict]:
    return alert_rules()


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


@pytest.fixture(scope="module")
def operations(repo) -> str:
    return (repo / "docs" / "operations.md").read_text()


@pytest.fixture(scope="module")
def unit_tests() -> list[dict]:
    tests = []
    for path in sorted((OBSERVABILITY / "tests").glob("*.yml")):
        tests += yaml.safe_load(path.read_text())["tests"]
    return tests


@pytest.fixture(scope="module")
def prometheus_config() -> dict:
    return yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())


@pytest.fixture(scope="module")
def overlay() -> dict:
    return yaml.safe_load((REPO / "compose.observability.yaml").read_text())


# --- what the rules and the dashboard read ---------------------------------------------------


def test_the_rules_read_only_exported_metrics(rules):
    unknown = {name: sorted(metric_names(rule["expr"]) - KNOWN_SERIES) for name, rule in rules.items()}
    assert {name: found for name, found in unknown.items() if found} == {}


def test_the_dashboard_reads_only_exported_metrics():
    unknown = {f"{title}: {expr}": sorted(metric_names(expr) - KNOWN_SERIES) for title, expr in dashboard_queries()}
    assert {query: found for query, found in unknown.items() if found} == {}


def test_every_api_metric_is_on_the_dashboard():
    read = set().union(*(metric_names(expr) for _, expr in dashboard_queries()))
    missing = {name for name, kind in API_METRICS.items() if not series_names({name: kind}) & read}
    assert missing == set()


def test_the_latency_alert_holds_the_aim_of_the_benchmarks(rules, repo):
    aim_ms = int(re.search(r"p99 under (\d+) ms", (repo / "docs" / "benchmarks.md").read_text()).group(1))
    threshold = re.search(r"\)\s*>\s*([0-9.]+)\s*\n\s*and", rules["ItemsApiHighLatency"]["expr"]).group(1)
    assert float(threshold) * 1000 == aim_ms


def test_no_latency_rule_or_panel_counts_the_change_stream(rules):
    quantiles = [expr for _, expr in dashboard_queries() if "histogram_quantile" in expr and "http_server" in expr]
    quantiles.append(rules["ItemsApiHighLatency"]["expr"])
    assert [expr for expr in quantiles if 'http_route!="/api/items/events"' not in expr] == []


# --- the alerts ----------------------------------------------------------------------------------


def test_every_alert_pages_or_opens_a_ticket(rules):
    assert {name: rule.get("labels", {}).get("severity") for name, rule in rules.items()
            if rule.get("labels", {}).get("severity") not in ("page", "ticket")} == {}


def test_every_alert_waits_before_it_fires(rules):
    # A single bad scrape or evaluation never pages anyone.
    waits = {name: str(rule.get("for", "")) for name, rule in rules.items()}
    assert [name for name, wait in waits.items() if not re.fullmatch(r"[1-9][0-9]*[smh]", wait)] == []


def test_every_alert_links_its_section_of_operations_md(rules, operations):
    anchors = {re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")
               for heading in re.findall(r"^#+ (.+)$", operations, re.MULTILINE)}
    runbooks = {name: rule["annotations"].get("runbook") for name, rule in rules.items()}
    broken = {name: runbook for name, runbook in runbooks.items()
              if runbook != f"docs/operations.md#{name.lower()}" or name.lower() not in anchors}
    assert broken == {}


def test_every_alert_has_a_summary_and_a_description(rules):
    assert [name for name, rule in rules.items()
            if not (rule["annotations"].get("summary") and rule["annotations"].get("description"))] == []


def outcomes(unit_tests: list[dict]) -> dict[str, set[bool]]:
    """Per alert: whether some unit test expects it firing (True), and some expects it quiet (False)."""
    found: dict[str, set[bool]] = {}
    for test in unit_tests:
        for check in test.get("alert_rule_test", []):
            found.setdefault(check["alertname"], set()).add(bool(check.get("exp_alerts")))
    return found


def test_every_alert_has_a_unit_test_that_fires_it_and_one_where_it_stays_quiet(rules, unit_tests):
    tested = outcomes(unit_tests)
    assert {name: sorted(tested.get(name, set())) for name in rules if tested.get(name) != {True, False}} == {}


def test_the_unit_tests_name_no_alert_that_does_not_exist(rules, unit_tests):
    assert set(outcomes(unit_tests)) - set(rules) == set()


# --- the operations page ---------------------------------------------------------------------


def test_operations_md_explains_every_metric(operations):
    assert sorted(name for name in {**API_METRICS, **WEB_METRICS} if f"`{name}`" not in operations) == []


def test_operations_md_explains_every_alert(rules, operations):
    assert sorted(name for name in rules if not re.search(rf"^#+ {name}$", operations, re.MULTILINE)) == []


def test_the_readme_links_operations_md(repo):
    assert "(docs/operations.md)" in (repo / "README.md").read_text()


# --- the dashboard -------------------------------------------------------------------------------


def test_the_dashboard_asks_for_its_prometheus_on_import(dashboard):
    inputs = {i["name"]: (i["type"], i["pluginId"]) for i in dashboard["__inputs"]}
    assert inputs == {"DS_PROMETHEUS": ("datasource", "prometheus")}


def test_every_panel_and_query_uses_that_prometheus(dashboard):
    wrong = [panel["title"] for panel in dashboard["panels"] if panel["type"] != "row"
             for source in [panel["datasource"], *(t["datasource"] for t in panel["targets"])]
             if source != {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}]
    assert wrong == []


def test_panel_ids_are_unique_and_every_query_has_its_own_ref_id(dashboard):
    ids = [panel["id"] for panel in dashboard["panels"]]
    refs = [[t["refId"] for t in panel.get("targets", [])] for panel in dashboard["panels"]]
    assert (len(ids) == len(set(ids)), [r for r in refs if len(r) != len(set(r))]) == (True, [])


def test_no_two_panels_overlap_and_all_fit_the_grid(dashboard):
    cells = {}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_the_dashboards_variables_are_the_ones_the_tests_fill_in(dashboard):
    used = set(re.findall(r"\$\{?(\w+)", " ".join(expr for panel in dashboard["panels"]
                                                    for expr in (t["expr"] for t in panel.get("targets", [])))))
    declared = [variable["name"] for variable in dashboard["templating"]["list"]]
    assert (used, declared) == ({"__rate_interval", "instance"}, ["instance"])


# --- Prometheus' configuration and its service -----------------------------------------------


def scrape_job(config: dict, name: str) -> dict:
    [job] = [job for job in config["scrape_configs"] if job["job_name"] == name]
    return job


@pytest.mark.parametrize("job, service", [("api", "api"), ("web", "web")])
def test_each_job_finds_its_services_containers_through_dockers_dns(prometheus_config, job, service):
    [discovery] = scrape_job(prometheus_config, job)["dns_sd_configs"]
    assert (discovery["type"], discovery["names"]) == ("A", [service])


def test_the_api_job_scrapes_the_port_metrics_addr_names(prometheus_config, overlay):
    port = int(overlay["services"]["api"]["environment"]["METRICS_ADDR"].rsplit(":", 1)[1])
    assert scrape_job(prometheus_config, "api")["dns_sd_configs"][0]["port"] == port == 9464


def test_the_web_job_scrapes_the_web_images_metrics_port(prometheus_config, overlay, repo):
    from support.dockerfile import final_stage_env

    image_port = int(final_stage_env(repo / "web" / "Dockerfile")["NGINX_METRICS_PORT"])
    overlay_port = int(overlay["services"]["web"]["environment"]["NGINX_METRICS_PORT"])
    assert scrape_job(prometheus_config, "web")["dns_sd_configs"][0]["port"] == image_port == overlay_port


def test_the_rules_are_the_ones_prometheus_loads(prometheus_config):
    assert prometheus_config["rule_files"] == ["rules/*.yml"]


@pytest.fixture(scope="module")
def prometheus_service(overlay) -> dict:
    return overlay["services"]["prometheus"]


def test_prometheus_is_a_version_3_image(prometheus_service):
    assert re.fullmatch(r"prom/prometheus:v3\.[0-9]+\.[0-9]+", prometheus_service["image"])


def test_prometheus_runs_as_nobody_with_a_read_only_root_and_no_capabilities(prometheus_service):
    assert (prometheus_service["user"], prometheus_service["read_only"], prometheus_service["cap_drop"],
            prometheus_service["security_opt"]) == ("65534:65534", True, ["ALL"], ["no-new-privileges:true"])


def test_prometheus_is_published_on_loopback_only(prometheus_service):
    assert [port.split(":")[0] for port in prometheus_service["ports"]] == ["127.0.0.1"]


def test_prometheus_reads_its_configuration_read_only_and_keeps_data_in_a_volume(prometheus_service, overlay):
    assert (prometheus_service["volumes"], "prometheus-data" in overlay["volumes"]) == (
        ["./deploy/observability:/etc/prometheus:ro", "prometheus-data:/prometheus"], True)


def test_prometheus_stores_where_its_volume_is(prometheus_service):
    assert "--storage.tsdb.path=/prometheus" in prometheus_service["command"]
