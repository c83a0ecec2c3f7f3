"""A real Prometheus (the Debian package) scraping real agents with monitoring/alerts.yml:
targets up, the key series present, the split-brain alert firing when a partition makes
two directors MASTER of one instance (election: vrrp), and every metric the Grafana
dashboard queries present in what the agents export (or, for what needs a kernel with
IPVS or a held lease, in the README's metrics tables).

Prometheus runs in the real server's namespace and scrapes the directors over the back
LAN, which the partition of the front LAN (``Site.isolate``) leaves alone."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.lab import netns
from agent.lab.agents import METRICS_PORT, LabAgent, agent_config
from agent.lab.topology import Lab
from tests.check_skips import skip_or_fail
from tests.netns.support import wait_until
from tests.unit.test_monitoring import (
    RULES,
    base_name,
    dashboard_queries,
    metric_names,
    readme_metrics,
)

from .helpers import Site, instance

VIP = "192.0.2.100/24"
PROMETHEUS_PORT = 9090
KEY = "1 " + "5a" * 32 + "\n"
# Exported only with a kernel that has IPVS (tests/kernel) or while a lease is held.
NEEDS_IPVS_OR_LEASE = ("lvs_agent_ipvs_", "lvs_agent_reconcile_", "lvs_agent_lock_is_holder")


class Prometheus:
    def __init__(self, lab: Lab, work: Path, targets: list[str]) -> None:
        self.lab = lab
        self.host = lab.real_server(1)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": "lvs-agent", "static_configs": [{"targets": targets}]},
            ],
        }
        path = work / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        self.proc = lab.spawn(
            self.host,
            [
                "prometheus",
                f"--config.file={path}",
                f"--storage.tsdb.path={work / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}",
            ],
            work / "prometheus.log",
        )

    def api(self, path: str) -> Any:
        """GET /api/v1/PATH from inside the real server's namespace (None: no answer)."""
        code = (
            "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen("
            f"'http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/{path}', timeout=5).read().decode())"
        )
        done = subprocess.run(
            netns.exec_argv(self.host.ns, [sys.executable, "-c", code]),
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        if done.returncode != 0:
            return None
        return json.loads(done.stdout)["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        from urllib.parse import quote

        data = self.api(f"query?query={quote(promql)}")
        return [] if data is None else list(data["result"])

    def alerts(self, name: str, state: str) -> list[dict[str, Any]]:
        data = self.api("alerts")
        found = [] if data is None else data["alerts"]
        return [a for a in found if a["labels"]["alertname"] == name and a["state"] == state]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@pytest.fixture
def prometheus_site(site: Site) -> Iterator[tuple[Site, list[LabAgent]]]:
    if shutil.which("prometheus") is None:
        skip_or_fail("needs prometheus (Debian prometheus)")
    lab = site.lab
    key = site.work / "cluster.key"
    key.write_text(KEY)
    key.chmod(0o600)
    # A lock section (election stays vrrp) so that the lock's metrics are exported too.
    peers = {f"d{i}": f"{lab.director_back_address(i)}:6741" for i in (1, 2, 3)}
    agents = []
    for i, priority in ((1, 150), (2, 100)):
        host = lab.director(i)
        site.vips.add(VIP)
        config = agent_config(
            host,
            site.work / f"state-{host.name}",
            [instance(61, VIP, priority, "200ms")],
            metrics={"listen": f"0.0.0.0:{METRICS_PORT}"},
            lock={
                "cluster": "lb-test",
                "listen": f"{lab.director_back_address(i)}:6741",
                "peers": peers,
                "key_file": str(key),
            },
        )
        agent = LabAgent(lab, host, config, site.work, tag="-prom")
        site.agents.append(agent)
        agents.append(agent)
    yield site, agents


def test_prometheus_scrapes_agents_and_fires_split_brain(
    prometheus_site: tuple[Site, list[LabAgent]],
) -> None:
    site, agents = prometheus_site
    lab = site.lab
    targets = [f"{lab.director_back_address(i)}:{METRICS_PORT}" for i in (1, 2)]
    assert agents[0].wait_state("web", "MASTER", 15), agents[0].text()[-2000:]
    assert agents[1].wait_state("web", "BACKUP", 5), agents[1].text()[-2000:]
    prom = Prometheus(lab, site.work, targets)
    try:
        wait_until(
            "both targets up",
            lambda: (
                sorted(
                    (r["metric"]["instance"], r["value"][1])
                    for r in prom.query('up{job="lvs-agent"}')
                )
                == sorted((t, "1") for t in targets)
            ),
            60,
        )
        for name in (
            "lvs_agent_vrrp_state",
            "lvs_agent_event_loop_lag_seconds_bucket",
            "lvs_agent_build_info",
            "lvs_agent_lock_quorum_reachable",
        ):
            wait_until(f"{name} from both", lambda n=name: len(_instances(prom, n)) == 2, 15)
        masters = prom.query("count by (exported_instance) (lvs_agent_vrrp_state == 2)")
        assert [(m["metric"]["exported_instance"], m["value"][1]) for m in masters] == [
            ("web", "1")
        ]
        assert prom.alerts("LvsVrrpSplitBrain", "firing") == []

        # An invalid file and a good one reloaded: the reload and error counters appear.
        good = agents[1].config.read_text()
        agents[1].config.write_text("vrrp_instances: [\n")
        agents[1].signal(signal.SIGHUP)
        assert agents[1].wait_for("is invalid; keeping the running configuration", 10)
        agents[1].config.write_text(good)
        agents[1].signal(signal.SIGHUP)
        assert agents[1].wait_for(" loaded (", 10)

        # Every metric the dashboard queries is exported by these agents, or needs IPVS
        # or a held lease and is documented.
        wait_until(
            "the reload counters scraped",
            lambda: (
                {"lvs_agent_config_reloads_total", "lvs_agent_errors_total"}
                <= set(prom.api("label/__name__/values") or [])
            ),
            15,
        )
        exported = set(prom.api("label/__name__/values") or [])
        documented = readme_metrics()
        used = set().union(*(metric_names(q) for q in dashboard_queries()))
        absent = sorted(
            n
            for n in used - exported
            if not (n.startswith(NEEDS_IPVS_OR_LEASE) and base_name(n) in documented)
        )
        assert absent == [], f"dashboard metrics neither exported nor documented: {absent}"

        site.isolate(1)  # d1 hears nothing, d2 hears no d1: both MASTER
        assert agents[1].wait_state("web", "MASTER", 10)
        wait_until(
            "LvsVrrpSplitBrain firing",
            lambda: len(prom.alerts("LvsVrrpSplitBrain", "firing")) == 1,
            60,
        )
        alert = prom.alerts("LvsVrrpSplitBrain", "firing")[0]
        assert alert["labels"]["exported_instance"] == "web"
        assert alert["labels"]["vrid"] == "61"
        assert float(alert["value"]) == 2.0

        site.isolate(1, False)
        wait_until(
            "the split to end",
            lambda: (
                [m["value"][1] for m in prom.query("count(lvs_agent_vrrp_state == 2)")] == ["1"]
            ),
            30,
        )
        wait_until(
            "LvsVrrpSplitBrain resolved",
            lambda: prom.alerts("LvsVrrpSplitBrain", "firing") == [],
            30,
        )
    finally:
        prom.stop()


def _instances(prom: Prometheus, name: str) -> set[str]:
    return {r["metric"]["instance"] for r in prom.query(f"count by (instance) ({name})")}
