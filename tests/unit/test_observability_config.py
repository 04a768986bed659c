"""The SRE pack agrees with the code: every metric a dashboard or an alert reads is one the
services export; every alert has a runbook and promtool tests; compose provisions it all."""

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import handoff_matching.metrics
import handoff_notify.metrics
import handoff_platform.metrics
import handoff_referral.metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "deploy/grafana/dashboards").glob("*.json"))
ALERTS: list[dict[str, Any]] = [
    rule
    for group in yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())["groups"]
    for rule in group["rules"]
]
METRIC = re.compile(r"\bhandoff_[a-z0-9_]+\b|\bup(?=\{)")
PROMETHEUS_OWN = {"up"}
MODULES = (handoff_platform.metrics, handoff_referral.metrics, handoff_matching.metrics,
           handoff_notify.metrics)  # fmt: skip


def exported_series() -> set[str]:
    """The series names the services' metrics produce, whether or not they have values yet."""
    assert MODULES  # imported for their registrations
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    names = set()
    for family in REGISTRY.collect():
        for suffix in suffixes.get(family.type, [""]):
            names.add(family.name + suffix)
    return names


def dashboard_queries() -> list[tuple[str, str]]:
    return [
        (f"{path.name}: {panel['title']}", target["expr"])
        for path in DASHBOARDS
        for panel in json.loads(path.read_text())["panels"]
        for target in panel["targets"]
    ]


def test_there_are_three_dashboards_with_queries() -> None:
    assert [p.stem for p in DASHBOARDS] == [
        "handoff-overview",
        "handoff-paging",
        "handoff-pipeline",
    ]
    assert len(dashboard_queries()) >= 30


@pytest.mark.parametrize(
    ("where", "expr"),
    [*dashboard_queries(), *((f"alert {r['alert']}", r["expr"]) for r in ALERTS)],
)
def test_every_query_names_metrics_the_services_export(where: str, expr: str) -> None:
    named = set(METRIC.findall(expr))
    assert named, f"{where} reads no Handoff metric"
    unknown = named - exported_series() - PROMETHEUS_OWN
    assert not unknown, f"{where} reads {sorted(unknown)}, which no service exports"


def test_every_alert_has_severity_a_patient_facing_description_a_runbook_and_tests() -> None:
    tests = "".join(p.read_text() for p in (ROOT / "deploy/prometheus/tests").glob("*.yml"))
    for rule in ALERTS:
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"page", "ticket"}, name
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), name
        runbook = ROOT / rule["annotations"]["runbook_url"]
        assert runbook.is_file(), f"{name}: no runbook at {runbook}"
        assert f"## {name}" in runbook.read_text() or name in runbook.read_text(), name
        assert tests.count(f"alertname: {name}") >= 2, f"{name} needs a firing and a quiet case"


def test_compose_provisions_prometheus_rules_and_grafana_dashboards() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    prometheus_mounts = " ".join(services["prometheus"]["volumes"])
    assert "alerts.yml" in prometheus_mounts
    grafana_mounts = " ".join(services["grafana"]["volumes"])
    assert "deploy/grafana/dashboards" in grafana_mounts
    assert "deploy/grafana/provisioning" in grafana_mounts
