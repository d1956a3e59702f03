"""Prometheus' HTTP API, as the observability tests read it: instant queries, targets, rules and
alerts, and the metric and alert names deploy/observability and the dashboard use."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import yaml

from support import http

OBSERVABILITY = Path(__file__).resolve().parents[2] / "deploy" / "observability"
DASHBOARD = OBSERVABILITY / "dashboards" / "items.json"
RULE_FILES = sorted((OBSERVABILITY / "rules").glob("*.yml"))

# What Grafana puts in place of the dashboard's variables when every replica is chosen.
DASHBOARD_VARIABLES = {"$__rate_interval": "2m", "$instance": ".*"}


class PrometheusError(AssertionError):
    pass


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urlencode(params)}" if params else ""
        response = http.request(f"{self.url}{path}{query}", timeout=30)
        body = response.json_or_none()
        if response.status != 200 or not isinstance(body, dict) or body.get("status") != "success":
            raise PrometheusError(f"GET {path} {params}: {response.status} {response.text[:500]}")
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """An instant query's vector: [{"metric": {...}, "value": [time, "text"]}, ...]."""
        data = self.get("/api/v1/query", query=expr)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def value(self, expr: str, default: float | None = None) -> float | None:
        """The one number an expression gives, or `default` when it gives none."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr} gave {len(result)} series"
        return float(result[0]["value"][1]) if result else default

    def targets(self, job: str) -> list[dict]:
        return [t for t in self.get("/api/v1/targets", state="active")["activeTargets"]
                if t["labels"].get("job") == job]

    def rules(self) -> list[dict]:
        return [rule for group in self.get("/api/v1/rules")["groups"] for rule in group["rules"]]

    def alerts(self, name: str, state: str = "firing") -> list[dict]:
        return [a for a in self.get("/api/v1/alerts")["alerts"]
                if a["labels"].get("alertname") == name and a["state"] == state]


def timestamp(rfc3339: str) -> float:
    """Unix time of one of the API's times ("2026-12-07T10:00:00.123456789Z"; nanoseconds kept)."""
    match = re.fullmatch(r"(.+T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", rfc3339)
    assert match, f"not an RFC 3339 time: {rfc3339!r}"
    whole = datetime.fromisoformat(match.group(1) + match.group(3).replace("Z", "+00:00")).timestamp()
    return whole + float(f"0.{match.group(2) or 0}")


def scraped_since(targets: list[dict], moment: float) -> bool:
    """Every target's last scrape started after `moment` (Unix time)."""
    return bool(targets) and all(timestamp(t["lastScrape"]) > moment for t in targets)


def alert_rules() -> dict[str, dict]:
    """Every alerting rule of deploy/observability/rules, by name."""
    rules = {}
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    rules[rule["alert"]] = rule
    return rules


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of the dashboard, its variables filled in."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in DASHBOARD_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries.append((panel["title"], expr))
    return queries


PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
                   "bool", "offset"}


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads: its series selectors, without functions, label names
    or keywords."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    # by (...), on (...) and the like name labels, not metrics.
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        word = match.group(0)
        if text[match.end():].lstrip().startswith("(") or word in PROMQL_KEYWORDS:
            continue
        names.add(word)
    return names
