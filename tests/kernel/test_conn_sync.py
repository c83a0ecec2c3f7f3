"""Established connections survive a director failover when ``ipvs.sync`` is set.

Two directors with real IPVS (each in its own namespace, so each its own table), a
client and two echo real servers, DR and NAT (agent.lab.connsync). 200 long-lived TCP
connections move data through the master; the backup's table (read with ``ipvsadm
-Lnc``) must hold them before the fault; then the master crashes (SIGKILL of its agent
and its links cut) or is handed over (SIGTERM; ``lvs-agent failover vip`` with the
agent staying up), and the connections must keep carrying data both ways through the
new master, which now runs the master sync daemon. The sync daemons themselves are checked with
``ipvsadm -L --daemon`` and read back through the agent's own GET_DAEMON decoder.
"""

from __future__ import annotations

import errno

import pytest

from agent.ipvs.kernel import IpvsKernel
from agent.ipvs.model import IP_VS_STATE_BACKUP, IP_VS_STATE_MASTER, SyncDaemon
from agent.lab import netns
from agent.lab.connsync import daemons, measure

CONNECTIONS = 200


def test_the_codec_starts_reads_and_stops_sync_daemons(ns: str) -> None:
    # a multicast-capable interface (lo and dummy are not)
    netns.ip("link", "add", "sy0", "type", "veth", "peer", "name", "sy1", netns=ns)
    for ifname in ("sy0", "sy1"):
        netns.ip("link", "set", ifname, "up", netns=ns)
    # the master daemon binds its socket to the interface's address
    netns.ip("addr", "add", "10.99.0.1/24", "dev", "sy0", netns=ns)
    with netns.entered(ns):
        kernel = IpvsKernel()
    with kernel:
        assert kernel.sync_daemons() == {}
        master = SyncDaemon(IP_VS_STATE_MASTER, "sy0", 7, 1400, "239.1.2.3", 8849, 2)
        backup = SyncDaemon(IP_VS_STATE_BACKUP, "sy0", 7)
        assert kernel.control_daemons(start=[master, backup]) == [None, None]
        got = kernel.sync_daemons()
        assert got[IP_VS_STATE_MASTER] == master
        b = got[IP_VS_STATE_BACKUP]
        # the kernel's defaults, filled in: port 8848, TTL 1, group 224.0.0.81
        assert (b.interface, b.sync_id, b.port, b.ttl, b.group) == ("sy0", 7, 8848, 1, "224.0.0.81")
        assert b.max_len > 0
        shown = daemons(ns)
        assert "master sync daemon (mcast=sy0, syncid=7" in shown
        assert "backup sync daemon (mcast=sy0, syncid=7" in shown
        [again] = kernel.control_daemons(start=[master])
        assert again is not None and again.errno == errno.EEXIST
        assert kernel.control_daemons(stop=[IP_VS_STATE_MASTER, IP_VS_STATE_BACKUP]) == [None, None]
        assert kernel.sync_daemons() == {}
        [gone] = kernel.control_daemons(stop=[IP_VS_STATE_MASTER])
        assert gone is not None and gone.errno == errno.ESRCH
        assert daemons(ns).strip() == ""


@pytest.mark.parametrize("fault", ["crash", "planned", "handover"])
@pytest.mark.parametrize("forwarding", ["dr", "nat"])
def test_established_connections_survive_a_failover(forwarding: str, fault: str) -> None:
    r = measure(forwarding, fault, sync=True, connections=CONNECTIONS)
    assert r.opened >= CONNECTIONS * 0.98, r
    assert r.synced >= r.opened, r  # the backup held every one before the fault
    assert r.takeover > 0, r
    assert r.master_moved, r
    want = 0.95 if fault == "crash" else 0.99
    assert r.share >= want, r
