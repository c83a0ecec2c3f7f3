"""Real agents (``python -m agent run -c FILE``, VRRP-only, no IPVS) on the lab's
front LAN: election, tie-break, preemption, crash and graceful failover, trackers,
sync groups, notify commands and the metrics they export.

Times come from netlink address events (agent.lab.addrwatch) on the shared
monotonic clock, so the assertions are about when addresses really moved.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from agent.lab.capture import Capture, tshark_fields

from ..support import metric, wait_until
from .helpers import Site, address, instance

# Master_Down_Interval at 200 ms adverts: 0.6 s + Skew_Time (<= 0.2 s).
MDI = 0.8


def test_three_agents_elect_the_highest_priority_and_export_it(site: Site) -> None:
    vip = "192.0.2.111/32"
    t0 = time.monotonic()
    agents = [
        site.agent(i, [instance(11, vip, priority)])
        for i, priority in ((1, 100), (2, 200), (3, 150))
    ]
    added = site.watch.wait_added(address(vip), 15, node="d2", after=t0)
    assert added is not None, agents[1].text()
    # Several Master_Down_Intervals later, d2 alone holds the VIP.
    time.sleep(3 * MDI)
    assert site.holders(vip) == ["d2"]
    assert [a.states() for a in agents] == [{"web": "BACKUP"}, {"web": "MASTER"}, {"web": "BACKUP"}]
    assert site.lab.ping(site.lab.client, address(vip))
    assert (
        site.lab.neighbour_mac(site.lab.client, address(vip)) == site.lab.director(2).macs["eth0"]
    )

    text = agents[1].metrics()
    assert text is not None
    assert metric(text, "lvs_agent_vrrp_state", instance="web", interface="eth0", vrid="11") == 2
    assert metric(text, "lvs_agent_vrrp_effective_priority", instance="web") == 200
    assert metric(text, "lvs_agent_vrrp_transitions_total", instance="web", state="master") == 1
    assert (metric(text, "lvs_agent_vrrp_adverts_sent_total", instance="web") or 0) >= 3
    backup = agents[0].metrics()
    assert backup is not None
    assert metric(backup, "lvs_agent_vrrp_state", instance="web") == 1
    assert (metric(backup, "lvs_agent_vrrp_adverts_received_total", instance="web") or 0) >= 3
    if shutil.which("promtool"):
        for exposition in (text, backup):
            lint = subprocess.run(
                ["promtool", "check", "metrics"],
                input=exposition,
                text=True,
                capture_output=True,
                check=False,
                timeout=60,
            )
            assert lint.returncode == 0, lint.stdout + lint.stderr


def test_equal_priorities_elect_the_higher_primary_address(site: Site) -> None:
    """Two masters at once (the LAN was split) resolve to the higher primary address."""
    vip = "192.0.2.112/32"
    site.isolate(1)  # d1 cannot hear d3 (its link stays up): both become master
    t0 = time.monotonic()
    low = site.agent(1, [instance(12, vip, 150)])  # 192.0.2.2
    high = site.agent(3, [instance(12, vip, 150)])  # 192.0.2.4
    for node in ("d1", "d3"):
        assert site.watch.wait_added(address(vip), 15, node=node, after=t0), (
            low.text(),
            high.text(),
        )
    healed = time.monotonic()
    site.isolate(1, False)
    gone = site.watch.wait_removed(address(vip), 5, node="d1", after=healed)
    assert gone is not None, low.text()
    time.sleep(3 * MDI)
    assert site.holders(vip) == ["d3"]
    assert "MASTER -> BACKUP (priority 150, higher_priority)" in low.text()
    assert "-> BACKUP" not in high.text().split("INIT -> BACKUP", 1)[1]


def test_a_higher_priority_preempts(site: Site) -> None:
    vip = "192.0.2.113/32"
    t0 = time.monotonic()
    site.agent(1, [instance(13, vip, 100)])
    assert site.watch.wait_added(address(vip), 15, node="d1", after=t0)
    joined = time.monotonic()
    site.agent(2, [instance(13, vip, 200)])
    took = site.watch.wait_added(address(vip), 15, node="d2", after=joined)
    assert took is not None
    gone = site.watch.wait_removed(address(vip), 5, node="d1", after=joined)
    assert gone is not None
    # It preempts after its own Master_Down_Interval (plus the agent's start-up).
    assert took.at - joined < 5
    time.sleep(MDI)
    assert site.holders(vip) == ["d2"]


def test_no_preempt_stays_backup_and_preempt_delay_waits(site: Site) -> None:
    vip = "192.0.2.114/32"
    t0 = time.monotonic()
    site.agent(1, [instance(14, vip, 100)])
    assert site.watch.wait_added(address(vip), 15, node="d1", after=t0)
    joined = time.monotonic()
    patient = site.agent(2, [instance(14, vip, 200, preempt=False)])
    delayed = site.agent(3, [instance(14, vip, 150, preempt_delay="2s")])
    took = site.watch.wait_added(address(vip), 15, after=joined)
    assert took is not None and took.node == "d3", (took, delayed.text())
    # preempt_delay counts from the first lower-priority advert d3 heard, which is at
    # least its start-up after ``joined``; then Master_Down_Timer must still run out.
    assert took.at - joined >= 2.0
    time.sleep(3 * MDI)
    assert site.holders(vip) == ["d3"]
    # d2 (200, preempt false) never took over, from d1 (100) nor from d3 (150).
    assert "-> MASTER" not in patient.text()
    assert patient.states() == {"web": "BACKUP"}


def test_kill_9_backup_takes_over_and_the_client_follows(site: Site, tmp_path: Path) -> None:
    vip = "192.0.2.115/32"
    lab = site.lab
    t0 = time.monotonic()
    master = site.agent(1, [instance(15, vip, 200)])
    assert site.watch.wait_added(address(vip), 15, node="d1", after=t0)
    backup = site.agent(2, [instance(15, vip, 100)])
    assert backup.wait_for("web: INIT -> BACKUP", 15)
    time.sleep(MDI)
    assert lab.ping(lab.client, address(vip))
    assert lab.neighbour_mac(lab.client, address(vip)) == lab.director(1).macs["eth0"]

    capture = Capture(lab, lab.client, tmp_path / "garp.pcap", "arp")
    killed = time.monotonic()
    master.kill()
    took = site.watch.wait_added(address(vip), 10, node="d2", after=killed)
    assert took is not None, backup.text()
    # Master_Down_Interval = 3 * 0.2 + (156 * 20 // 256) cs = 0.72 s at most after the
    # last advert; allow for start of the timer before the kill and a loaded machine.
    assert took.at - killed < 0.72 + 0.6, took.at - killed
    wait_until(
        "the client's neighbour entry to move to d2",
        lambda: lab.neighbour_mac(lab.client, address(vip)) == lab.director(2).macs["eth0"],
        5,
    )
    assert lab.ping(lab.client, address(vip))
    pcap = capture.stop()
    garps = tshark_fields(
        pcap,
        "arp.isgratuitous",
        "arp.src.hw_mac",
        "arp.src.proto_ipv4",
        display_filter=f"arp.src.proto_ipv4 == {address(vip)}",
    )
    assert ["1", lab.director(2).macs["eth0"], address(vip)] in garps, garps

    # SIGKILL left the VIP in d1's kernel; a restarted agent removes it before anything
    # else, then takes the VIP back (priority 200, preempt).
    assert "d1" in site.holders(vip)
    restarted = time.monotonic()
    again = site.agent(1, [instance(15, vip, 200)])
    cleaned = site.watch.wait_removed(address(vip), 10, node="d1", after=restarted)
    assert cleaned is not None, again.text()
    assert again.wait_for("removed VIPs left by an earlier run on eth0: " + vip, 5)
    back = site.watch.wait_added(address(vip), 10, node="d1", after=cleaned.at)
    assert back is not None, again.text()
    time.sleep(MDI)
    assert site.holders(vip) == ["d1"]


def test_sigterm_hands_over_after_skew_time_only(site: Site) -> None:
    vip = "192.0.2.116/32"
    # 500 ms adverts, backup priority 100: Skew_Time = 156 * 50 // 256 cs = 0.30 s,
    # Master_Down_Interval = 1.80 s.
    t0 = time.monotonic()
    master = site.agent(1, [instance(16, vip, 200, "500ms")])
    assert site.watch.wait_added(address(vip), 15, node="d1", after=t0)
    backup = site.agent(2, [instance(16, vip, 100, "500ms")])
    assert backup.wait_for("web: INIT -> BACKUP", 15)
    time.sleep(1.2)
    sent = time.monotonic()
    master.signal(signal.SIGTERM)
    took = site.watch.wait_added(address(vip), 10, node="d2", after=sent)
    gone = site.watch.wait_removed(address(vip), 10, node="d1", after=sent)
    assert took is not None and gone is not None, backup.text()
    assert gone.at <= took.at  # never two holders: the VIP left d1 first
    assert 0.28 <= took.at - sent < 1.2, took.at - sent
    assert master.proc.wait(10) == 0
    assert "web: MASTER -> INIT (priority 200, shutdown)" in master.text()
    text = backup.metrics()
    assert text is not None
    assert metric(text, "lvs_agent_vrrp_priority_zero_received_total", instance="web") == 1


def test_track_interface_down_is_fault_and_releases_the_vip(site: Site) -> None:
    vip = "192.0.2.117/32"
    lab = site.lab
    t0 = time.monotonic()
    master = site.agent(1, [instance(17, vip, 200, track_interfaces=["eth1"])])
    assert site.watch.wait_added(address(vip), 15, node="d1", after=t0)
    backup = site.agent(2, [instance(17, vip, 100)])
    assert backup.wait_for("web: INIT -> BACKUP", 15)
    time.sleep(MDI)
    down = time.monotonic()
    site.link(lab.director(1).ns, "eth1", False)
    gone = site.watch.wait_removed(address(vip), 5, node="d1", after=down)
    assert gone is not None, master.text()
    assert master.wait_state("web", "FAULT", 5)
    # d1 sent priority 0 on leaving MASTER for FAULT: d2 waits Skew_Time only.
    took = site.watch.wait_added(address(vip), 5, node="d2", after=down)
    assert took is not None and took.at - gone.at < MDI
    text = master.metrics()
    assert text is not None
    assert metric(text, "lvs_agent_vrrp_state", instance="web") == 3
    assert metric(text, "lvs_agent_vrrp_transitions_total", instance="web", state="fault") == 1
    assert metric(text, "lvs_agent_vrrp_effective_priority", instance="web") == 200
    up = time.monotonic()
    site.link(lab.director(1).ns, "eth1", True)
    back = site.watch.wait_added(address(vip), 10, node="d1", after=up)
    assert back is not None, master.text()
    assert master.wait_state("web", "MASTER", 5)


def test_sync_group_moves_together_and_notifies(site: Site, tmp_path: Path) -> None:
    """The LVS-NAT pair: VIP in front, the real servers' gateway at the back."""
    lab = site.lab
    notes = {i: tmp_path / f"notify-d{i}.txt" for i in (1, 2)}
    script = tmp_path / "notify.sh"
    script.write_text('out=$1; shift; echo "$@" >> "$out"\n')
    agents = {}
    t0 = time.monotonic()
    for i, priority in ((1, 200), (2, 100)):
        instances, groups = lab.vrrp_instances(
            i, priority=priority, advert_interval="200ms", notify=f"/bin/sh {script} {notes[i]}"
        )
        groups[0]["notify"] = f"/bin/sh {script} {notes[i]}"
        agents[i] = site.agent(i, instances, groups)
        if i == 1:
            for addr in (lab.vip, lab.gateway):
                assert site.watch.wait_added(addr, 15, node="d1", after=t0), agents[1].text()
    assert agents[2].wait_for("sync group director: all BACKUP", 15)
    time.sleep(MDI)
    assert lab.holders(lab.vip) == ["d1"] and lab.holders(lab.gateway) == ["d1"]
    assert lab.ping(lab.real_server(1), lab.gateway)

    # The back link fails: only the gateway instance sees it, the whole group moves.
    down = time.monotonic()
    site.link(lab.director(1).ns, "eth1", False)
    for addr in (lab.vip, lab.gateway):
        assert site.watch.wait_removed(addr, 5, node="d1", after=down), agents[1].text()
        assert site.watch.wait_added(addr, 5, node="d2", after=down), agents[2].text()
    assert agents[1].states() == {"vip": "FAULT", "gateway": "FAULT"}
    assert agents[2].states() == {"vip": "MASTER", "gateway": "MASTER"}
    assert lab.ping(lab.real_server(1), lab.gateway)
    assert lab.ping(lab.client, lab.vip)

    up = time.monotonic()
    site.link(lab.director(1).ns, "eth1", True)
    for addr in (lab.vip, lab.gateway):
        assert site.watch.wait_added(addr, 10, node="d1", after=up), agents[1].text()
    wait_until(
        "d2 to be all BACKUP",
        lambda: agents[2].states() == {"vip": "BACKUP", "gateway": "BACKUP"},
        5,
    )
    agents[2].stop()
    agents[1].stop()
    lines = {i: notes[i].read_text().splitlines() for i in (1, 2)}
    for expected in (
        "INSTANCE vip MASTER 200",
        "INSTANCE gateway MASTER 200",
        "GROUP director MASTER 0",
        "INSTANCE gateway FAULT 200",
        "INSTANCE vip FAULT 200",
        "GROUP director FAULT 0",
        "INSTANCE vip STOP 200",
        "INSTANCE gateway STOP 200",
    ):
        assert expected in lines[1], lines[1]
    for expected in (
        "INSTANCE vip BACKUP 100",
        "INSTANCE vip MASTER 100",
        "INSTANCE gateway MASTER 100",
        "GROUP director MASTER 0",
        "GROUP director BACKUP 0",
    ):
        assert expected in lines[2], lines[2]


@pytest.mark.parametrize("family", ["ipv6"])
def test_ipv6_vip_moves_with_unsolicited_na(site: Site, family: str) -> None:
    vip = "2001:db8::118/64"
    t0 = time.monotonic()
    master = site.agent(1, [instance(18, vip, 200)])
    assert site.watch.wait_added("2001:db8::118", 15, node="d1", after=t0), master.text()
    backup = site.agent(2, [instance(18, vip, 100)])
    assert backup.wait_for("web: INIT -> BACKUP", 15)
    time.sleep(MDI)
    killed = time.monotonic()
    master.kill()
    took = site.watch.wait_added("2001:db8::118", 10, node="d2", after=killed)
    assert took is not None, backup.text()
    assert took.at - killed < 0.72 + 0.6
