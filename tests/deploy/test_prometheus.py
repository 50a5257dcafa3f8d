"""The shipped Prometheus configuration, alert rules and Grafana dashboards, checked by
Prometheus's own promtool (Debian package `prometheus`; `make tools` installs it) and by reading
the files: valid, wired to the provisioned datasource, and using only metrics polku exports."""

from __future__ import annotations

import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from streams import CollectorMetrics, WorkerMetrics
from streams.senders import SenderMetrics
from tests.deploy.grafana import (
    DATASOURCE_UID,
    PROMETHEUS_DIR,
    RULE_TESTS_DIR,
    RULES_DIR,
    alert_rules,
    dashboard_files,
    exported_names,
    load_dashboard,
    metric_names,
    panel_queries,
    panels,
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is missing: run `make tools` (Debian package prometheus)")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, check=False)


def _assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_config_and_the_rule_files_it_loads() -> None:
    result = promtool("check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    _assert_ok(result)
    assert "rules/polku.yml" in result.stdout  # the rule_files glob found the rules


def test_promtool_accepts_the_rules() -> None:
    _assert_ok(promtool("check", "rules", *map(str, sorted(RULES_DIR.glob("*.yml")))))


def test_promtool_rule_unit_tests_pass() -> None:
    _assert_ok(promtool("test", "rules", *map(str, sorted(RULE_TESTS_DIR.glob("*.yml")))))


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    cases: dict[str, set[bool]] = defaultdict(set)
    for path in sorted(RULE_TESTS_DIR.glob("*.yml")):
        for test in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            for case in test.get("alert_rule_test", []):
                cases[case["alertname"]].add(bool(case.get("exp_alerts")))
    alerts = {rule["alert"] for rule in alert_rules()}
    assert alerts >= {
        "PolkuWorkerDown",
        "PolkuConsumerLagGrowing",
        "PolkuTimerFiringLagHigh",
        "PolkuDeadLetterRate",
        "PolkuSendFailureRate",
        "PolkuJourneyStoppedSending",
    }
    for alert in sorted(alerts):
        assert cases[alert] == {True, False}, f"{alert}: needs a firing and a quiet test case"


def test_every_alert_says_what_is_wrong() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]


def test_the_dashboards_are_the_five_of_the_issue_with_unique_uids() -> None:
    dashboards = [load_dashboard(path) for path in dashboard_files()]
    titles = {dashboard["title"] for dashboard in dashboards}
    assert titles == {
        "polku / Overview",
        "polku / Journey funnel",
        "polku / Channels and sends",
        "polku / Timers and lag",
        "polku / Senders",
    }
    uids = [dashboard["uid"] for dashboard in dashboards]
    assert len(set(uids)) == len(uids)
    for dashboard in dashboards:
        ids = [panel["id"] for panel in panels(dashboard)]
        assert len(set(ids)) == len(ids), dashboard["title"]


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda path: Path(path).stem)
def test_every_panel_and_variable_queries_the_provisioned_datasource(path: Path) -> None:
    dashboard = load_dashboard(path)
    queried = 0
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, panel
        assert panel["targets"], f"{panel['title']}: a panel without a query"
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"]) == panel["datasource"]
            queried += 1
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == DATASOURCE_UID, variable["name"]
    assert queried


def test_the_provisioned_datasource_has_the_uid_the_dashboards_use() -> None:
    provisioning = PROMETHEUS_DIR.parent / "grafana" / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert [ds["uid"] for ds in datasources["datasources"]] == [DATASOURCE_UID]
    providers = yaml.safe_load((provisioning / "dashboards" / "polku.yml").read_text())
    [provider] = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/etc/grafana/dashboards"


def test_dashboards_and_alerts_use_only_metrics_that_polku_exports() -> None:
    exported = (
        exported_names(WorkerMetrics().registry)
        | exported_names(SenderMetrics().registry)
        | exported_names(CollectorMetrics().registry)
    )
    used: dict[str, str] = {}
    for query in panel_queries():
        used |= dict.fromkeys(metric_names(query.expr), f"{query.dashboard}: {query.panel}")
    for rule in alert_rules():
        used |= dict.fromkeys(metric_names(rule["expr"]), f"alert {rule['alert']}")
    unknown = {name: where for name, where in used.items() if name not in exported}
    assert not unknown, f"not exported by any polku process: {unknown}"
    # and every worker metric is shown or alerted on somewhere
    families = {family.name for family in WorkerMetrics().registry.collect()}
    unseen = {family for family in families if not any(n.startswith(family) for n in used)}
    assert not unseen, f"worker metrics on no dashboard: {sorted(unseen)}"
