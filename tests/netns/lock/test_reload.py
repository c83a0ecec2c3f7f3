"""A reload never costs a quorum instance its lease when the lease did not change.

Three directors (election: quorum); the holder is sent SIGHUP with its instance's
priority raised and a VIP added, then with a second quorum instance (its own
lease) added, then removed. The web lease is never released or lost and keeps
its term, its VIP never leaves the holder, and the dual-holder check stays clean.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import yaml

from agent.lab import netns
from agent.lab.addrwatch import AddressWatch
from agent.lab.agents import LabAgent, metric_values
from agent.lab.quorum import VIP, QuorumSite
from agent.lab.topology import Lab

from ..support import metric, wait_until
from .helpers import holder
from .test_quorum import site_for

ADDED = "192.0.2.171/32"
EXTRA = "192.0.2.172/32"


def _edit(agent: LabAgent, edit: Any) -> None:
    doc = yaml.safe_load(agent.config.read_text())
    edit(doc["vrrp_instances"])
    agent.config.write_text(yaml.safe_dump(doc, sort_keys=False))


def _lease_facts(agent: LabAgent) -> tuple[float, float, float, str]:
    text = agent.metrics()
    assert text is not None
    terms = [
        dict(k)["term"]
        for k in metric_values(text, "lvs_agent_lock_holder_info")
        if dict(k)["lease"] == "web"
    ]
    return (
        metric(text, "lvs_agent_lock_is_holder", lease="web") or 0,
        metric(text, "lvs_agent_lock_releases_total", lease="web") or 0,
        metric(text, "lvs_agent_lock_losses_total", lease="web") or 0,
        ",".join(sorted(terms)),
    )


def test_reload_keeps_an_unchanged_lease(
    lab: Lab, watch: AddressWatch, tmp_path: Path, sites: list[QuorumSite]
) -> None:
    start = time.monotonic()
    site = site_for(lab, watch, tmp_path, sites)
    first = holder(site)
    agent = site.agents[first]
    before = _lease_facts(agent)
    assert before[0] == 1
    steady = time.monotonic()
    try:
        # priority and one more VIP: updated in place, the lease untouched
        def raise_and_add(instances: list[dict[str, Any]]) -> None:
            instances[0]["priority"] += 10
            instances[0]["virtual_ips"].append(ADDED)

        _edit(agent, raise_and_add)
        agent.signal(signal.SIGHUP)
        assert agent.wait_for("reload: vrrp: updated in place: web", 15), agent.text()
        assert watch.wait_added(ADDED.split("/")[0], 5, node=first, after=steady)

        # a second quorum instance with its own lease comes, then goes
        def add_extra(instances: list[dict[str, Any]]) -> None:
            instances.append(
                dict(instances[0], name="extra", vrid=72, virtual_ips=[EXTRA], notify=None)
            )

        _edit(agent, add_extra)
        agent.signal(signal.SIGHUP)
        assert agent.wait_for("unchanged: web; added: extra", 15), agent.text()
        assert watch.wait_added(EXTRA.split("/")[0], 10, node=first, after=steady), agent.text()
        wait_until(
            "the extra lease to be held",
            lambda: metric(agent.metrics() or "", "lvs_agent_lock_is_holder", lease="extra") == 1,
            10,
        )

        _edit(agent, lambda instances: instances.pop())
        agent.signal(signal.SIGHUP)
        assert agent.wait_for("unchanged: web; removed: extra", 15), agent.text()
        assert watch.wait_removed(EXTRA.split("/")[0], 5, node=first, after=steady)
        time.sleep(2.0)  # several renewals of a 1 s lease
        end = time.monotonic()

        after = _lease_facts(agent)
        assert after == before, (before, after)
        vip = VIP.split("/")[0]
        # (RTM_NEWADDR events keep coming: each renewal extends the VIP's lifetime)
        gone = [e for e in watch.snapshot() if e.at >= steady and e.address == vip and not e.added]
        assert gone == [], gone
        assert site.holders() == [first]
        report = site.check(start, end)
        assert not report.double, report.summary()
    finally:
        for d in lab.director_list():
            for address in (ADDED, EXTRA):
                netns.ip("addr", "del", address, "dev", "eth0", netns=d.ns, check=False)
