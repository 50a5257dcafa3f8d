"""Reading the shipped Grafana dashboards and Prometheus rules: their queries and metric names.

Shared by the static checks (tests/deploy) and the integration test that evaluates every
dashboard query against a real Prometheus scraping a real worker.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
PROMETHEUS_DIR = DEPLOY / "prometheus"
RULES_DIR = PROMETHEUS_DIR / "rules"
RULE_TESTS_DIR = PROMETHEUS_DIR / "tests"
DATASOURCE_UID = "prometheus"

# What Grafana puts in for its built-in variables when a query runs, in the integration test:
# a Prometheus that has scraped for seconds still has two samples in a 1m window.
BUILTIN_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
_METRIC_NAME = re.compile(r"\bpolku_[a-z0-9_]+\b")


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    expr: str

    def runnable(self) -> str:
        """The expression as Grafana sends it: built-ins filled in, `$journey` meaning all."""
        expr = self.expr
        for name, value in BUILTIN_VARIABLES.items():
            expr = expr.replace(name, value)
        return re.sub(r"\$\{?[a-z_]+\}?", ".*", expr)


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def load_dashboard(path: Path) -> dict[str, Any]:
    document = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict), path
    return document


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, also those nested in rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_queries() -> list[PanelQuery]:
    queries = []
    for path in dashboard_files():
        dashboard = load_dashboard(path)
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                queries.append(PanelQuery(dashboard["title"], panel["title"], target["expr"]))
    return queries


def alert_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        for group in document["groups"]:
            rules.extend(rule for rule in group["rules"] if "alert" in rule)
    return rules


def metric_names(expr: str) -> set[str]:
    return set(_METRIC_NAME.findall(expr))


def exported_names(registry: CollectorRegistry) -> set[str]:
    """The sample names a registry can export, also for labelled metrics with no child yet."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "gauge": ("",),
        "summary": ("_sum", "_count", ""),
    }
    return {
        family.name + suffix
        for family in registry.collect()
        for suffix in suffixes.get(family.type, ("",))
    }
