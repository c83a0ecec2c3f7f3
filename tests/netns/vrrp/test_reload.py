"""A reload changes only what changed; rolling changes and lower-priority answers.

Two real agents (VRRP-only) on the lab's front and back LANs: a sync group of two
instances (front VIP, back gateway) and a stand-alone instance, d1 master of all.
The master is sent SIGHUP with one change at a time; netlink address events and a
capture of the front LAN (tshark) show that the instances the reload did not
change never moved: no VIP ever left d1, d2 never took one, no priority-0 advert
left d1 except for the one instance whose VRID changed, and adverts kept coming.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from agent.lab import netns
from agent.lab.agents import LabAgent
from agent.lab.capture import Capture, tshark_fields

from ..support import metric, wait_until
from .helpers import Site, address, instance

INTERVAL = 0.2
# Master_Down_Interval of the backup (priority 100) at 200 ms adverts.
MDI = 3 * INTERVAL + (256 - 100) * 20 // 256 / 100
FRONT, BACK, WEB = "192.0.2.140/32", "10.0.1.140/32", "192.0.2.142/32"
ADDED = "192.0.2.143/32"


def _instances(priority: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    instances = [
        instance(40, FRONT, priority, name="front"),
        instance(41, BACK, priority, name="back", interface="eth1"),
        instance(42, WEB, priority, name="web"),
    ]
    return instances, [{"name": "pair", "instances": ["front", "back"]}]


def _rewrite(
    agent: LabAgent, instances: list[dict[str, Any]], groups: list[dict[str, Any]]
) -> None:
    doc = yaml.safe_load(agent.config.read_text())
    doc["vrrp_instances"] = instances
    doc["vrrp_sync_groups"] = groups
    agent.config.write_text(yaml.safe_dump(doc, sort_keys=False))


def _reload(agent: LabAgent, expect: str, occurrence: int) -> None:
    agent.signal(signal.SIGHUP)
    assert agent.wait_for(expect, 15, occurrence), agent.text()


def _mismatch_peers(agent: LabAgent) -> float | None:
    return metric(agent.metrics() or "", "lvs_agent_vrrp_address_mismatch_peers", instance="web")


def _transitions(agent: LabAgent) -> int:
    return agent.text().count(" -> ")


def test_reload_touches_only_what_changed(site: Site, tmp_path: Path) -> None:
    lab = site.lab
    t0 = time.monotonic()
    inst1, groups = _instances(200)
    master = site.agent(1, inst1, groups)
    for vip in (FRONT, BACK, WEB):
        assert site.watch.wait_added(address(vip), 15, node="d1", after=t0), master.text()
    inst2, _ = _instances(100)
    backup = site.agent(2, inst2, groups)
    assert backup.wait_for("sync group pair: all BACKUP", 15), backup.text()
    assert backup.wait_for("web: INIT -> BACKUP", 15), backup.text()
    time.sleep(2 * MDI)
    steady = time.monotonic()
    master_moves, backup_moves = _transitions(master), _transitions(backup)
    capture = Capture(lab, lab.client, tmp_path / "vrrp.pcap", "ip proto 112 or arp")
    reloads = 0

    # (a) nothing changed
    reloads += 1
    _reload(master, "reload: ", reloads)
    # (b) one instance's priority
    inst1[2]["priority"] = 250
    _rewrite(master, inst1, groups)
    _reload(master, "reload: vrrp: unchanged: front, back; updated in place: web", 1)
    # (c) a VIP added to one instance, on the master only (a rolling change)
    inst1[2]["virtual_ips"] = [WEB, ADDED]
    _rewrite(master, inst1, groups)
    _reload(master, "updated in place: web", 2)
    assert site.watch.wait_added(address(ADDED), 5, node="d1", after=steady), master.text()
    wait_until(
        "d2 to count the address-list mismatch",
        lambda: _mismatch_peers(backup) == 1,
        5,
    )
    time.sleep(3 * MDI)  # d2 keeps deferring to d1: still one master
    assert site.holders(ADDED) == ["d1"] and site.holders(WEB) == ["d1"]
    # (d) a track script added to a sync group member
    inst1[0]["track_scripts"] = [{"name": "ok", "script": "/bin/true", "interval": "1s"}]
    _rewrite(master, inst1, groups)
    _reload(master, "updated in place: front", 1)
    # (e) a new, third instance
    inst1.append(instance(43, "192.0.2.144/32", 200, name="extra"))
    _rewrite(master, inst1, groups)
    _reload(master, "added: extra", 1)
    assert site.watch.wait_added("192.0.2.144", 10, node="d1", after=steady), master.text()
    # (f) an invalid file: refused, nothing changes
    good = master.config.read_text()
    master.config.write_text(good.replace("vrid: 40", "vrid: 4000"))
    _reload(master, "is invalid; keeping the running configuration", 1)
    master.config.write_text(good)
    # the backup gets the new VIP too: the mismatch ends
    inst2[2]["virtual_ips"] = [WEB, ADDED]
    _rewrite(backup, inst2, groups)
    _reload(backup, "updated in place: web", 1)
    wait_until(
        "d2's mismatch to end",
        lambda: _mismatch_peers(backup) == 0,
        5,
    )
    # (g) a VRID change restarts that instance alone (both directors at once: the
    # master first, so the higher priority comes back first on the new VRID)
    inst1[2]["vrid"] = 45
    inst2[2]["vrid"] = 45
    _rewrite(master, inst1, groups)
    _rewrite(backup, inst2, groups)
    restarted = time.monotonic()
    master.signal(signal.SIGHUP)
    backup.signal(signal.SIGHUP)
    assert master.wait_for("restarted: web", 15), master.text()
    assert backup.wait_for("restarted: web", 15), backup.text()
    assert master.wait_state("web", "MASTER", 10), master.text()
    time.sleep(2 * MDI)
    ended = time.monotonic()
    pcap = capture.stop()

    # What never moved: the sync group's VIPs stayed on d1 and never reached d2; the
    # restarted instance's VIPs left d1 only after the VRID change.
    events = [e for e in site.watch.snapshot() if e.at >= steady]
    for vip in (FRONT, BACK):
        moved = [e for e in events if e.address == address(vip)]
        assert moved == [], moved
    web_moves = [e for e in events if e.address in (address(WEB), address(ADDED))]
    assert all(e.node == "d1" for e in web_moves), web_moves
    assert all(e.at >= restarted for e in web_moves if not e.added), web_moves
    assert site.holders(FRONT) == ["d1"] and site.holders(BACK) == ["d1"]
    assert site.holders(WEB) == ["d1"] and site.holders(ADDED) == ["d1"]
    # notify and the logs: no state change but the restarted instance's own
    new_master = master.text().count(" -> ") - master_moves
    new_backup = backup.text().count(" -> ") - backup_moves
    # d1: extra INIT -> BACKUP -> MASTER; web MASTER -> INIT -> BACKUP -> MASTER
    assert new_master == 5, master.text()
    assert new_backup == 2, backup.text()  # web: BACKUP -> INIT -> BACKUP
    assert "sync group pair" not in master.text().split("reload: ", 1)[1]

    # On the wire (front LAN): no priority 0 from d1 but web's (old VRID 42), and d1's
    # adverts for the unchanged front instance never paused for a Master_Down_Interval.
    d1 = lab.director(1).addresses["eth0"]
    adverts = tshark_fields(
        pcap,
        "frame.time_relative",
        "ip.src",
        "vrrp.virt_rtr_id",
        "vrrp.prio",
        display_filter="vrrp",
    )
    mine = [(float(t), int(vrid), int(prio)) for t, src, vrid, prio in adverts if src == d1]
    assert mine, adverts[:5]
    zero = {vrid for _, vrid, prio in mine if prio == 0}
    assert zero <= {42}, zero
    front = [t for t, vrid, prio in mine if vrid == 40]
    gaps = [b - a for a, b in itertools.pairwise(front)]
    assert front and max(gaps) < MDI, max(gaps)
    assert ended - steady > 5 * INTERVAL


def test_answers_to_a_lower_priority_are_bounded(site: Site, tmp_path: Path) -> None:
    """A one-way partition at 10 ms adverts: d2 cannot hear d1, becomes master too and
    advertises a lower priority 100 times a second; d1 answers each advert, but sends
    at most one GARP burst per lower_prio_delay."""
    lab = site.lab
    vip = "192.0.2.150/32"
    garp = {"repeat": 1, "delay": "0s", "lower_prio_repeat": 2, "lower_prio_delay": "1s"}
    t0 = time.monotonic()
    master = site.agent(1, [instance(50, vip, 200, "10ms", garp=garp)])
    assert site.watch.wait_added(address(vip), 15, node="d1", after=t0), master.text()
    d1 = lab.director(1).addresses["eth0"]
    d2 = lab.director(2)
    table = "lvs_agent_test_oneway"
    rules = (
        f"table inet {table} {{\n chain input {{\n"
        f"  type filter hook input priority 0;\n  ip saddr {d1} ip protocol 112 drop\n }}\n}}\n"
    )
    subprocess.run(
        netns.exec_argv(d2.ns, ["nft", "-f", "-"]), input=rules, text=True, check=True, timeout=30
    )
    try:
        backup = site.agent(2, [instance(50, vip, 100, "10ms", garp=garp)])
        assert site.watch.wait_added(address(vip), 15, node="d2", after=t0), backup.text()
        time.sleep(0.5)
        capture = Capture(lab, lab.client, tmp_path / "garp.pcap", "arp")
        start = time.monotonic()
        time.sleep(5.0)
        seconds = time.monotonic() - start
        pcap = capture.stop()
    finally:
        subprocess.run(
            netns.exec_argv(d2.ns, ["nft", "delete", "table", "inet", table]),
            check=False,
            timeout=30,
        )
    garps = tshark_fields(
        pcap,
        "arp.src.hw_mac",
        display_filter=f"arp.isgratuitous == 1 && arp.src.proto_ipv4 == {address(vip)}",
    )
    from_d1 = [g for g in garps if g[0] == lab.director(1).macs["eth0"]]
    # one burst of 2 per second: 5 s give at most (5 + 2) bursts (+2 for edges); without
    # the bound it would be 2 per advert heard, about 1,000
    assert 2 <= len(from_d1) <= 2 * (seconds + 2), len(from_d1)
    assert master.states() == {"web": "MASTER"}, master.text()
    text = master.metrics()
    assert text is not None
    answered = metric(text, "lvs_agent_vrrp_adverts_received_total", instance="web") or 0
    assert answered > 100  # it heard d2's adverts all along
