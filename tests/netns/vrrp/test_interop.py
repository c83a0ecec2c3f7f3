"""The real agent and keepalived 2.2 (Debian package, ``-P``: VRRP only) on one LAN.

Each case runs both directions: keepalived master / agent backup, keepalived dies
and the agent takes over; then agent master / keepalived backup, the agent dies and
keepalived takes over. "Dies" is SIGKILL (Master_Down_Interval) or SIGTERM (priority
0, Skew_Time) depending on the case. tshark, captured on keepalived's node,
dissects every advert the agent sent: no malformed packet, no bad checksum.
"""

from __future__ import annotations

import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.lab import netns
from agent.lab.capture import Capture, tshark_fields, tshark_problems
from agent.lab.keepalived import keepalived_conf

from ..support import metric
from .helpers import Site, address, instance

AGENT, KA = 1, 2  # director numbers


@dataclass(frozen=True)
class Case:
    version: int
    interval: float  # seconds
    vip: str
    death: signal.Signals
    auth: str | None = None
    unicast: bool = False

    def mdi(self, priority: int) -> float:
        skew = (256 - priority) / 256 * self.interval
        return 3 * self.interval + skew


CASES = {
    "v3-multicast-kill": Case(3, 0.2, "192.0.2.121/32", signal.SIGKILL),
    "v3-unicast-term": Case(3, 0.2, "192.0.2.122/32", signal.SIGTERM, unicast=True),
    "v3-ipv6-kill": Case(3, 0.2, "2001:db8::123/64", signal.SIGKILL),
    "v2-multicast-kill": Case(2, 1.0, "192.0.2.124/32", signal.SIGKILL),
    "v2-pass-multicast-term": Case(2, 1.0, "192.0.2.125/32", signal.SIGTERM, auth="s3cret"),
    "v2-pass-unicast-kill": Case(2, 1.0, "192.0.2.126/32", signal.SIGKILL, auth="pw", unicast=True),
}
COMPLAINTS = re.compile(r"invalid|bad |checksum|mismatch|error|discard|unknown", re.I)


def agent_instance(site: Site, case: Case, vrid: int, priority: int) -> dict[str, object]:
    extra: dict[str, object] = {}
    if case.auth:
        extra["auth_pass"] = case.auth
    if case.unicast:
        extra["unicast_peers"] = [site.lab.director_address(KA)]
    interval = f"{round(case.interval * 1000)}ms"
    return instance(vrid, case.vip, priority, interval, version=case.version, **extra)


def ka_conf(site: Site, case: Case, vrid: int, priority: int) -> str:
    lab = site.lab
    return keepalived_conf(
        version=case.version,
        vrid=vrid,
        priority=priority,
        interval=case.interval,
        vips=[case.vip],
        auth_pass=case.auth,
        unicast_src=lab.director_address(KA) if case.unicast else None,
        unicast_peers=[lab.director_address(AGENT)] if case.unicast else (),
    )


@pytest.mark.parametrize("name", list(CASES))
def test_agent_and_keepalived_elect_and_take_over_both_ways(
    site: Site, tmp_path: Path, name: str
) -> None:
    case = CASES[name]
    vrid = 130 + list(CASES).index(name)
    vip = address(case.vip)
    lab = site.lab

    # -- keepalived master (200), agent backup (100); keepalived dies.
    t0 = time.monotonic()
    ka = site.keepalived(KA, ka_conf(site, case, vrid, 200), [case.vip])
    assert site.watch.wait_added(vip, 10 + case.mdi(200), node="d2", after=t0), ka.text()
    agent = site.agent(AGENT, [agent_instance(site, case, vrid, 100)])
    assert agent.wait_for("web: INIT -> BACKUP", 15), agent.text()
    time.sleep(case.mdi(100) + 2 * case.interval)  # longer than our Master_Down_Interval
    assert "-> MASTER" not in agent.text(), agent.text()
    assert site.holders(case.vip) == ["d2"]
    text = agent.metrics()
    assert text is not None
    assert (metric(text, "lvs_agent_vrrp_adverts_received_total", instance="web") or 0) >= 2
    assert "lvs_agent_vrrp_invalid_packets_total{" not in text, text
    died = time.monotonic()
    if case.death == signal.SIGKILL:
        ka.kill()
    else:
        ka.signal_terminate()
    took = site.watch.wait_added(vip, 10 + case.mdi(100), node="d1", after=died)
    assert took is not None, agent.text()
    limit = case.mdi(100) if case.death == signal.SIGKILL else case.interval  # skew < interval
    assert took.at - died < limit + 0.5, took.at - died
    ka.close()
    # keepalived killed with SIGKILL leaves its VIP behind (docs/vrrp.md).
    dev = "eth0"
    netns.ip("addr", "del", case.vip, "dev", dev, netns=lab.director(KA).ns, check=False)

    # -- agent master (still, priority 100), keepalived backup (50); the agent dies.
    capture = Capture(
        lab, lab.director(KA), tmp_path / "agent-adverts.pcap", "ip proto 112 or ip6 proto 112"
    )
    restarted = time.monotonic()
    ka = site.keepalived(KA, ka_conf(site, case, vrid, 50), [case.vip])
    assert ka.wait_for("Entering BACKUP STATE", 15), ka.text()
    time.sleep(case.mdi(50) + 2 * case.interval)
    assert "Entering MASTER STATE" not in ka.text(), ka.text()
    assert site.holders(case.vip) == ["d1"]
    complaints = [line for line in ka.text().splitlines() if COMPLAINTS.search(line)]
    assert not complaints, complaints
    died = time.monotonic()
    if case.death == signal.SIGKILL:
        agent.kill()
    else:
        agent.signal(signal.SIGTERM)
    took = site.watch.wait_added(vip, 10 + case.mdi(50), node="d2", after=died)
    assert took is not None, ka.text()
    limit = case.mdi(50) if case.death == signal.SIGKILL else case.interval
    assert took.at - died < limit + 0.5, took.at - died
    assert ka.wait_for("Entering MASTER STATE", 5)
    pcap = capture.stop()
    assert restarted < took.at

    # -- tshark on every advert the agent sent while master.
    src = str(lab.director(AGENT).link_local["eth0"]) if ":" in vip else lab.director_address(AGENT)
    ours = f"vrrp && {'ipv6' if ':' in vip else 'ip'}.src == {src}"
    assert tshark_problems(pcap, ours) == []
    rows = tshark_fields(
        pcap,
        "vrrp.version",
        "vrrp.virt_rtr_id",
        "vrrp.prio",
        "vrrp.auth_type",
        "vrrp.auth_string",
        "ip.ttl",
        "ipv6.hlim",
        "ip.dst",
        "ipv6.dst",
        display_filter=ours,
    )
    assert len(rows) >= 2, rows
    for version, vr, prio, auth_type, auth_string, ttl, hlim, dst4, dst6 in (
        r + [""] * (9 - len(r)) for r in rows
    ):
        assert version == str(case.version) and vr == str(vrid)
        assert prio in ("100", "0")
        assert (ttl or hlim) == "255"
        if case.unicast:
            assert dst4 == lab.director_address(KA)
        else:
            assert (dst4 or dst6) in ("224.0.0.18", "ff02::12")
        if case.version == 2:
            assert auth_type == ("1" if case.auth else "0")
            if case.auth:
                assert auth_string == case.auth
