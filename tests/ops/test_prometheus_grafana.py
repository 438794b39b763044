"""Alert rules, recording rules and the Grafana dashboard: valid, and every PromQL name they
use is a metric ``actors.metrics`` defines (or a rule recorded here). promtool runs where it
is installed (Debian: ``apt-get install prometheus``), including the alert unit tests."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from actors import metrics

REPO = Path(__file__).resolve().parents[2]
PROM = REPO / "ops" / "prometheus"
DASHBOARD = REPO / "ops" / "grafana" / "sapphire-dashboard.json"
RULE_FILES = [PROM / "recording_rules.yml", PROM / "alerts.yml"]
NAME = re.compile(r"\b(ray_[a-z0-9_]+|sapphire:[a-z0-9_:]+)")
GRAFANA_VARS = re.compile(r"\$__[a-z_]+")


def _rules() -> list[dict[str, Any]]:
    rules = []
    for path in RULE_FILES:
        doc = yaml.safe_load(path.read_text())
        assert set(doc) == {"groups"}, path
        for group in doc["groups"]:
            assert group["name"] and group["rules"], path
            rules.extend(group["rules"])
    return rules


def _exported() -> set[str]:
    names = set()
    for name, (kind, *_rest) in metrics.DEFINITIONS.items():
        full = metrics.exported_name(name)
        names |= (
            {full + s for s in ("_bucket", "_sum", "_count")} if kind == "histogram" else {full}
        )
    return names


def _dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_rules_are_well_formed_and_reference_only_defined_series() -> None:
    rules = _rules()
    recorded = {r["record"] for r in rules if "record" in r}
    alerts = {r["alert"]: r for r in rules if "alert" in r}
    known = _exported() | recorded
    for rule in rules:
        assert ("record" in rule) != ("alert" in rule)
        assert set(rule) <= {"record", "alert", "expr", "for", "labels", "annotations"}
        unknown = set(NAME.findall(rule["expr"])) - known
        assert not unknown, f"{rule.get('record') or rule.get('alert')}: {unknown}"
        assert rule["expr"].count("(") == rule["expr"].count(")")
    for alert in alerts.values():
        assert alert["labels"]["severity"] in {"critical", "warning"}
        assert alert["annotations"]["summary"]
    # the alerts the operations issue asks for
    for needed in (
        "SapphireKillSwitchTripped",
        "SapphireLossLimitNear",
        "SapphireSinkLagging",
        "SapphireLLMTimeouts",
        "SapphireStepLatencyAnomaly",
        "SapphireFillRateAnomaly",
    ):
        assert needed in alerts
    assert "zscore" in alerts["SapphireStepLatencyAnomaly"]["expr"]


def test_dashboard_is_grafana_json_over_defined_metrics() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    recorded = {r["record"] for r in _rules() if "record" in r}
    known = _exported() | recorded
    exprs = _dashboard_exprs()
    assert exprs
    for panel in dash["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"
    for expr in exprs:
        unknown = set(NAME.findall(GRAFANA_VARS.sub("5m", expr))) - known
        assert not unknown, f"{expr}: {unknown}"
    # every metric shows up somewhere: on the dashboard or through a rule it plots
    used = " ".join(exprs + [r["expr"] for r in _rules()])
    for name in metrics.DEFINITIONS:
        assert metrics.exported_name(name) in used, name


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_checks_and_alert_unit_tests() -> None:
    for args in (
        ["check", "rules", *map(str, RULE_FILES)],
        ["check", "config", str(PROM / "prometheus.yml")],
        ["test", "rules", str(PROM / "alerts_test.yml")],
    ):
        run = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
