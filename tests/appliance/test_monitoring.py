"""monitoring/: the alert rules and the Grafana dashboard only use metrics the agent really exports, and promtool
accepts them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from edge.app import Agent
from edge.config import Settings

MONITORING = Path(__file__).parents[2] / "monitoring"
RULES = MONITORING / "edge-agent.rules.yml"
DASHBOARD = MONITORING / "grafana-fleet.json"
_METRIC = re.compile(r"\b(edge_[a-z_]+)")
_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def exported(make_settings: Callable[..., Settings]) -> set[str]:
    """Every series name an agent's /metrics can carry, taken from a fresh agent's registry."""
    from prometheus_client import generate_latest

    agent = Agent(make_settings())
    agent.metrics.latency.labels("kitchen").observe(1)
    agent.metrics.jobs.labels("kitchen", "queued").set(0)
    agent.metrics.queue_depth.labels("kitchen").set(0)
    agent.metrics.printer_up.labels("kitchen").set(1)
    agent.metrics.paper.labels("kitchen", "out").set(0)
    agent.metrics.recoveries.labels("failed").inc()
    agent.metrics.emails.labels("sent", "x").inc()
    agent.metrics.scans.labels("s", "x").inc()
    text = generate_latest(agent.metrics.registry).decode()
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def names_used(text: str) -> set[str]:
    return set(_METRIC.findall(text))


def test_rules_parse_and_name_only_exported_metrics(make_settings: Callable[..., Settings]) -> None:
    """Each rule has an alert name, an expression, a severity and a summary; every edge_* metric it uses is exported by
    the agent."""
    doc = yaml.safe_load(RULES.read_text())
    rules = [rule for group in doc["groups"] for rule in group["rules"]]
    assert len(rules) >= 10
    for rule in rules:
        assert (
            rule["alert"]
            and rule["expr"]
            and rule["labels"]["severity"] in ("critical", "warning", "info")
            and rule["annotations"]["summary"]
        )
    known = exported(make_settings)
    used = names_used(" ".join(rule["expr"] for rule in rules))
    assert used and used <= known, used - known


def test_dashboard_is_valid_json_using_exported_metrics(make_settings: Callable[..., Settings]) -> None:
    """The Grafana fleet dashboard loads as JSON, every panel has a query, and its queries use only exported metrics."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["panels"]
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert all(exprs)
    used = names_used(" ".join(exprs))
    assert used <= exported(make_settings), used - exported(make_settings)


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool missing: apt-get install -y --no-install-recommends prometheus"
)
def test_promtool_checks_and_unit_tests_the_rules() -> None:
    """`promtool check rules` accepts the file and `promtool test rules` fires paper-out, storage and stuck-queue alerts
    as expected."""
    check = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run(
        ["promtool", "test", "rules", str(MONITORING / "edge-agent.rules.test.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert test.returncode == 0, test.stdout + test.stderr
