"""monitoring/: the alert rules pass promtool's checks and their unit tests
(monitoring/tests/), every alert has a test that makes it fire, and the Grafana
dashboard is valid JSON whose queries name only metrics the README documents.
(tests/netns/vrrp/test_prometheus.py runs the rules in a real Prometheus scraping real
agents, and checks the dashboard against what they export.)"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.check_skips import skip_or_fail

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "monitoring"
RULES = MONITORING / "alerts.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
RULE_TESTS = sorted((MONITORING / "tests").glob("*.yml"))
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        skip_or_fail("needs promtool (Debian prometheus)")
    return found


def test_rules_check(promtool: str) -> None:
    done = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_rule_unit_tests(promtool: str) -> None:
    assert RULE_TESTS
    done = subprocess.run(
        [promtool, "test", "rules", *map(str, RULE_TESTS)],
        capture_output=True,
        text=True,
        check=False,
        cwd=MONITORING / "tests",
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_is_tested_firing_and_quiet() -> None:
    alerts = {
        rule["alert"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
    }
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    assert alerts - fired == set(), "alerts no test makes fire"
    assert alerts - quiet == set(), "alerts no test shows quiet"


def dashboard_queries() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    queries += [a["expr"] for a in doc.get("annotations", {}).get("list", []) if "expr" in a]
    return queries


def metric_names(query: str) -> set[str]:
    """The lvs-agent metrics a PromQL query selects, and ``up``."""
    query = re.sub(r'"[^"]*"', '""', query)  # label values may look like names
    names = set(re.findall(r"\b(lvs_agent_[a-z0-9_]+)", query))
    names.update(re.findall(r"\b(up)\s*\{", query))
    return names


def base_name(name: str) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def readme_metrics() -> set[str]:
    """Every metric name in the tables of the README and docs/metrics.md (the metrics
    reference, checked against the code by tests/unit/metrics/test_docs.py), with
    `{a,b}` alternatives expanded."""
    names: set[str] = set()
    for doc in (REPO / "README.md", REPO / "docs" / "metrics.md"):
        for row in re.findall(r"^\| `([^|]*)` \|", doc.read_text(), re.M):
            for cell in re.findall(r"(lvs_agent_[a-z0-9_{},]+)", row):
                parts = re.split(r"\{([^}]*)\}", cell)
                choices: list[Any] = [p.split(",") if i % 2 else [p] for i, p in enumerate(parts)]
                names.update("".join(c) for c in itertools.product(*choices))
    return names


def alert_queries() -> list[str]:
    return [
        rule["expr"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
    ]


def test_alerts_name_documented_metrics() -> None:
    """An alert on a metric the agent does not export would never fire."""
    used = set().union(*(metric_names(q) for q in alert_queries()))
    assert "lvs_agent_health_pool_quorum_up" in used
    missing = {
        n for n in used if n.startswith("lvs_agent_") and base_name(n) not in readme_metrics()
    }
    assert missing == set()


def test_dashboard_is_json_and_names_documented_metrics() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["title"] and doc["panels"]
    queries = dashboard_queries()
    assert queries
    used = set().union(*(metric_names(q) for q in queries))
    assert {"lvs_agent_vrrp_state", "lvs_agent_event_loop_lag_seconds_bucket", "up"} <= used
    documented = readme_metrics()
    missing = {n for n in used if n.startswith("lvs_agent_") and base_name(n) not in documented}
    assert missing == set()


def test_metric_names_reads_queries() -> None:
    q = (
        "histogram_quantile(0.99, sum by (instance, le) "
        '(rate(lvs_agent_event_loop_lag_seconds_bucket{job="x"}[5m]))) '
        "+ time() - lvs_agent_reconcile_last_success_timestamp_seconds"
    )
    assert metric_names(q) == {
        "lvs_agent_event_loop_lag_seconds_bucket",
        "lvs_agent_reconcile_last_success_timestamp_seconds",
    }
