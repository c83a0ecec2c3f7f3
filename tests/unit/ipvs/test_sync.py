"""Connection sync daemons: the codec (NEW/DEL/GET_DAEMON), the controller, ``ipvs.sync``.

Attribute numbers and types are those of include/uapi/linux/ip_vs.h and
ip_vs_daemon_policy in net/netfilter/ipvs/ip_vs_ctl.c; replies are built here the way
ip_vs_genl_fill_daemon writes them.
"""

from __future__ import annotations

import errno
import socket
import struct
import textwrap
from pathlib import Path

import pytest

from agent.config import ConfigError, parse_config
from agent.config.host import sync_sysctl_findings
from agent.config.model import SyncSettings
from agent.ipvs import netlink as nl
from agent.ipvs.model import IP_VS_STATE_BACKUP, IP_VS_STATE_MASTER, SyncDaemon
from agent.ipvs.reconciler import sysctl_changes, write_sysctls
from agent.ipvs.sync import DaemonPlan, holds, matches, plan, wanted
from tests.unit.ipvs.test_netlink_codec import FAMILY, attr, done, error, genl, messages

MASTER, BACKUP = IP_VS_STATE_MASTER, IP_VS_STATE_BACKUP


def nest(payload: bytes) -> dict[int, bytes]:
    """The IPVS_CMD_ATTR_DAEMON nest of a request's genl payload, by attribute."""
    [(kind, p, e)] = list(nl.iter_attrs(payload, 4, len(payload)))
    assert kind == nl.IPVS_CMD_ATTR_DAEMON
    return {k: payload[q:qe] for k, q, qe in nl.iter_attrs(payload, p, e)}


def test_the_uapi_numbers() -> None:
    assert (nl.IPVS_CMD_NEW_DAEMON, nl.IPVS_CMD_DEL_DAEMON, nl.IPVS_CMD_GET_DAEMON) == (9, 10, 11)
    assert nl.IPVS_CMD_ATTR_DAEMON == 3
    assert list(range(1, 9)) == [
        nl.IPVS_DAEMON_ATTR_STATE,
        nl.IPVS_DAEMON_ATTR_MCAST_IFN,
        nl.IPVS_DAEMON_ATTR_SYNC_ID,
        nl.IPVS_DAEMON_ATTR_SYNC_MAXLEN,
        nl.IPVS_DAEMON_ATTR_MCAST_GROUP,
        nl.IPVS_DAEMON_ATTR_MCAST_GROUP6,
        nl.IPVS_DAEMON_ATTR_MCAST_PORT,
        nl.IPVS_DAEMON_ATTR_MCAST_TTL,
    ]
    assert (MASTER, BACKUP) == (1, 2)


def test_new_daemon_carries_every_setting_with_the_kernel_types() -> None:
    d = SyncDaemon(MASTER, "eth1", 7, max_len=1400, group="239.1.2.3", port=8849, ttl=3)
    [(kind, flags, seq, payload)] = messages(nl.Encoder(FAMILY).new_daemon(d, 42))
    assert (kind, seq, payload[0]) == (FAMILY, 42, nl.IPVS_CMD_NEW_DAEMON)
    assert flags == nl.NLM_F_REQUEST | nl.NLM_F_ACK
    a = nest(payload)
    assert a[nl.IPVS_DAEMON_ATTR_STATE] == struct.pack("=I", MASTER)
    assert a[nl.IPVS_DAEMON_ATTR_MCAST_IFN] == b"eth1\0"  # NLA_NUL_STRING
    assert a[nl.IPVS_DAEMON_ATTR_SYNC_ID] == struct.pack("=I", 7)
    assert a[nl.IPVS_DAEMON_ATTR_SYNC_MAXLEN] == struct.pack("=H", 1400)
    assert a[nl.IPVS_DAEMON_ATTR_MCAST_GROUP] == socket.inet_aton("239.1.2.3")  # network order
    assert a[nl.IPVS_DAEMON_ATTR_MCAST_PORT] == struct.pack("=H", 8849)  # host order
    assert a[nl.IPVS_DAEMON_ATTR_MCAST_TTL] == b"\x03"


def test_kernel_defaults_are_left_out_and_ipv6_groups_use_group6() -> None:
    plain = nest(messages(nl.Encoder(FAMILY).new_daemon(SyncDaemon(BACKUP, "eth0", 0), 1))[0][3])
    assert set(plain) == {1, 2, 3}
    v6 = SyncDaemon(BACKUP, "eth0", 0, group="ff02::8848")
    a = nest(messages(nl.Encoder(FAMILY).new_daemon(v6, 1))[0][3])
    assert a[nl.IPVS_DAEMON_ATTR_MCAST_GROUP6] == socket.inet_pton(socket.AF_INET6, "ff02::8848")
    assert nl.IPVS_DAEMON_ATTR_MCAST_GROUP not in a


def test_del_daemon_names_the_state_only_and_get_is_a_dump() -> None:
    enc = nl.Encoder(FAMILY)
    [(_k, flags, _s, payload)] = messages(enc.del_daemon(MASTER, 5))
    assert payload[0] == nl.IPVS_CMD_DEL_DAEMON and flags & nl.NLM_F_ACK
    assert nest(payload) == {nl.IPVS_DAEMON_ATTR_STATE: struct.pack("=I", MASTER)}
    [(_k, flags, _s, payload)] = messages(enc.dump_daemons(6))
    assert payload[0] == nl.IPVS_CMD_GET_DAEMON and flags & nl.NLM_F_DUMP == nl.NLM_F_DUMP


def fill_daemon(d: SyncDaemon, v6: bool = False) -> bytes:
    """ip_vs_genl_fill_daemon (4.3+): every setting, the group by its family."""
    inner = (
        attr(1, struct.pack("=I", d.state))
        + attr(2, d.interface.encode() + b"\0")
        + attr(3, struct.pack("=I", d.sync_id))
        + attr(4, struct.pack("=H", d.max_len))
        + attr(7, struct.pack("=H", d.port))
        + attr(8, struct.pack("=B", d.ttl))
    )
    if v6:
        inner += attr(6, socket.inet_pton(socket.AF_INET6, d.group))
    else:
        inner += attr(5, socket.inet_aton(d.group))
    return attr(nl.IPVS_CMD_ATTR_DAEMON, inner)


def test_a_get_daemon_dump_is_decoded() -> None:
    m = SyncDaemon(MASTER, "eth1", 51, 1472, "224.0.0.81", 8848, 1)
    b = SyncDaemon(BACKUP, "eth1", 51, 1472, "ff02::1:8", 8848, 1)
    p = nl.DaemonPipeline(nl.Encoder(FAMILY), nl.SeqCounter(9))
    [(_k, _f, seq, _p)] = messages(p.next_batch())
    p.feed(
        genl(nl.IPVS_CMD_NEW_DAEMON, fill_daemon(m), seq, nl.NLM_F_MULTI)
        + genl(nl.IPVS_CMD_NEW_DAEMON, fill_daemon(b, v6=True), seq, nl.NLM_F_MULTI)
    )
    assert not p.done
    p.feed(done(seq))
    assert p.done and p.daemons == {MASTER: m, BACKUP: b}
    # an old kernel's three attributes: the rest reads as "not reported"
    old = attr(3, attr(1, struct.pack("=I", 2)) + attr(2, b"eth0\0") + attr(3, b"\0\0\0\0"))
    assert nl.decode_daemon(old, 0, len(old)) == SyncDaemon(BACKUP, "eth0", 0)
    empty = nl.DaemonPipeline(nl.Encoder(FAMILY), nl.SeqCounter(9))
    [(_k, _f, seq, _p)] = messages(empty.next_batch())
    empty.feed(done(seq))
    assert empty.done and empty.daemons == {}


def test_requests_run_one_by_one_and_each_refusal_is_kept() -> None:
    enc = nl.Encoder(FAMILY)
    d = SyncDaemon(MASTER, "eth1", 1)
    p = nl.DaemonPipeline(
        enc,
        nl.SeqCounter(1),
        requests=[
            ("stop master", lambda seq: enc.del_daemon(MASTER, seq)),
            ("start master", lambda seq: enc.new_daemon(d, seq)),
        ],
    )
    [(_k, _f, seq, payload)] = messages(p.next_batch())
    assert payload[0] == nl.IPVS_CMD_DEL_DAEMON
    assert p.next_batch() == b""  # waits for the ACK
    p.feed(error(seq, errno.ESRCH))
    [(_k, _f, seq, payload)] = messages(p.next_batch())
    assert payload[0] == nl.IPVS_CMD_NEW_DAEMON
    p.feed(error(seq, 0))
    assert p.done
    first, second = p.errors
    assert second is None and first is not None and first.errno == errno.ESRCH
    assert "stop master" in str(first)


# --- the controller ----------------------------------------------------------------

SYNC = SyncSettings("VI_1", "eth1", sync_id=51)


def test_every_director_runs_the_backup_and_the_holder_the_master_too() -> None:
    assert wanted(None, True) == {}
    assert set(wanted(SYNC, False)) == {BACKUP}
    both = wanted(SYNC, True)
    assert set(both) == {MASTER, BACKUP}
    assert both[MASTER] == SyncDaemon(MASTER, "eth1", 51, 0, "224.0.0.81", 8848, 1)


def test_a_transition_starts_or_stops_the_master_only() -> None:
    backup_only = wanted(SYNC, False)
    up = plan(wanted(SYNC, True), backup_only, {MASTER, BACKUP})
    assert up == DaemonPlan((), (wanted(SYNC, True)[MASTER],))
    down = plan(backup_only, wanted(SYNC, True), {MASTER, BACKUP})
    assert down == DaemonPlan((MASTER,), ())


def test_nothing_changed_means_no_request() -> None:
    # as the kernel reports them: max_len filled in from the MTU
    running = {s: SyncDaemon(s, "eth1", 51, 1472, "224.0.0.81", 8848, 1) for s in (1, 2)}
    assert not plan(wanted(SYNC, True), running, {MASTER, BACKUP})
    # a kernel before 4.3 reports no port, ttl, group or length: still the same daemon
    old = {s: SyncDaemon(s, "eth1", 51) for s in (1, 2)}
    assert not plan(wanted(SYNC, True), old, {MASTER, BACKUP})


def test_a_changed_setting_restarts_that_daemon() -> None:
    running = wanted(SYNC, True)
    other = SyncSettings("VI_1", "eth1", sync_id=51, port=9000)
    p = plan(wanted(other, True), running, {MASTER, BACKUP})
    assert p.stop == (MASTER, BACKUP) and [d.port for d in p.start] == [9000, 9000]
    assert not matches(SyncDaemon(MASTER, "eth2", 51), SyncDaemon(MASTER, "eth1", 51))


def test_daemons_the_agent_does_not_own_are_left_alone() -> None:
    theirs = {MASTER: SyncDaemon(MASTER, "eth9", 3)}
    assert not plan({}, theirs, set())
    assert plan({}, theirs, {MASTER}) == DaemonPlan((MASTER,), ())


def test_the_holder_of_an_instance_or_a_sync_group() -> None:
    groups = {"G": {"A", "B"}}
    assert holds("A", {"A": "MASTER"}, groups)
    assert not holds("A", {"A": "BACKUP"}, groups)
    assert holds("G", {"A": "MASTER", "B": "MASTER"}, groups)
    assert not holds("G", {"A": "MASTER", "B": "FAULT"}, groups)


# --- ipvs.sync and the sync sysctls in the file ---------------------------------------

VRRP = """
vrrp_instances:
  - name: VI_1
    interface: eth0
    vrid: 51
    virtual_ips: [192.0.2.100/24]
  - name: VI_2
    interface: eth1
    vrid: 52
    virtual_ips: [10.0.0.254/24]
vrrp_sync_groups:
  - name: G
    instances: [VI_2, VI_1]
"""


def load(ipvs: str) -> SyncSettings | None:
    c = parse_config(textwrap.dedent(ipvs) + VRRP, "config.yaml")
    return c.ipvs.sync


def test_sync_defaults_are_keepalived_s_and_the_kernel_s() -> None:
    s = load("ipvs:\n  sync: {instance: VI_1, interface: eth0}\n")
    assert s == SyncSettings("VI_1", "eth0", 51, 8848, 0, 1, "224.0.0.81")
    g = load("ipvs:\n  sync: {instance: G, interface: eth1, sync_id: 0, group: ff02::8}\n")
    assert g is not None and (g.sync_id, g.group) == (0, "ff02::8")
    assert load("ipvs:\n  sync: {instance: G, interface: eth1}\n").sync_id == 52  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("ipvs", "fragment"),
    [
        ("sync: {instance: VI_9, interface: eth0}", "neither a VRRP instance nor a sync group"),
        ("sync: {instance: VI_1, interface: eth0, group: 10.0.0.1}", "not a multicast"),
        ("sync: {instance: VI_1}", "missing required key 'interface'"),
        ("sync: {instance: VI_1, interface: eth0, sync_id: 256}", "sync_id"),
        ("sysctls: {sync_threshold: '50 3'}", "below the period"),
        ("sysctls: {sync_threshold: [3]}", "2 whole numbers"),
    ],
)
def test_bad_sync_settings_are_refused(ipvs: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(f"ipvs:\n  {ipvs}\n{VRRP}", "config.yaml")
    assert fragment in str(exc.value)


def test_sync_threshold_is_a_vector() -> None:
    for spelled in ("'3 50'", "[3, 50]"):
        c = parse_config(f"ipvs:\n  sysctls: {{sync_threshold: {spelled}}}\n", "config.yaml")
        assert c.ipvs.sysctls["sync_threshold"] == (3, 50)


def test_sysctl_vectors_are_read_compared_and_written_whole(tmp_path: Path) -> None:
    (tmp_path / "sync_threshold").write_text("3\t50\n")
    (tmp_path / "conntrack").write_text("0\n")
    assert sysctl_changes({"sync_threshold": (3, 50)}, tmp_path) == []
    changes = sysctl_changes({"sync_threshold": (2, 10), "conntrack": 1}, tmp_path)
    assert [str(c) for c in changes] == [
        "set sysctl net.ipv4.vs.conntrack 0 -> 1",
        "set sysctl net.ipv4.vs.sync_threshold 3 50 -> 2 10",
    ]
    assert write_sysctls(changes, tmp_path) == []
    assert (tmp_path / "sync_threshold").read_text() == "2 10\n"


def test_check_config_reports_the_sysctls_that_defeat_sync(tmp_path: Path) -> None:
    for key, text in {
        "conntrack": "0",
        "sync_persist_mode": "1",
        "sync_threshold": "3 0",
        "sync_refresh_period": "0",
        "expire_nodest_conn": "0",
    }.items():
        (tmp_path / key).write_text(text + "\n")
    config = parse_config(
        textwrap.dedent(
            """
            ipvs:
              sync: {instance: VI_1, interface: eth0}
            virtual_servers:
              - name: web
                address: 192.0.2.100
                port: 80
                persistence: {}
                real_servers: [{address: 10.0.0.1}]
            """
        )
        + VRRP,
        "config.yaml",
    )
    keys = [key for key, _ in sync_sysctl_findings(config, tmp_path)]
    assert keys == ["conntrack", "sync_persist_mode", "sync_threshold", "expire_nodest_conn"]
    asked = parse_config(
        "ipvs:\n  sync: {instance: VI_1, interface: eth0}\n"
        "  sysctls: {expire_nodest_conn: 1, sync_threshold: [3, 0]}\n" + VRRP,
        "config.yaml",
    )
    assert sync_sysctl_findings(asked, tmp_path) == []
    assert sync_sysctl_findings(asked, tmp_path / "missing")[0][0] == "*"
