"""Every key the loader accepts takes effect: none is read and then dropped.

The keys come from the loader itself: each section's "unknown key ...; allowed
here: ..." message lists the keys that section reads, so a key added to the
loader appears here at once, and this test fails until ``CASES`` says how to set
it. For each key, a file with the key set (to a value other than its default)
must give another configuration object than the file without it, and the
difference must lie in the object that uses the key (the virtual servers, the
VRRP instances, the LockConfig, a witness cluster, ...). A key that changes
nothing is a bug: it either has to take effect or be refused.
"""

from __future__ import annotations

import atexit
import copy
import dataclasses
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config.loader import parse_config
from agent.config.model import Config
from agent.config.reader import ConfigError

PROBE = "zz_probe"
KEEP = object()  # the "other" file keeps the base document's value
ABSENT = object()  # the "other" file has no such key (the default applies)
SUB = object()  # a section (or list of sections) whose keys are walked on their own

# The agent's file: every section present, so every section can be probed. Sections
# are named by their path with "[]" for list entries (the first entry is used).
LOCK = {
    "cluster": "c1",
    "listen": "10.0.0.11:6741",
    "peers": {"d1": "10.0.0.11:6741", "d2": "10.0.0.12:6741", "w": "10.0.0.13:6741"},
    "key_file": "/etc/lvs-agent/c1.key",
}
AGENT: dict[str, Any] = {
    "node": {"name": "base-node"},
    "metrics": {"listen": "127.0.0.1:9469"},
    "ipvs": {"timeouts": {}, "sysctls": {}, "sync": {"instance": "db", "interface": "eth1"}},
    "virtual_servers": [
        {
            "name": "web",
            "address": "192.0.2.10",
            "port": 80,
            "persistence": {},
            "health_checks": [{"type": "tcp"}],
            "sorry_server": {"address": "10.0.9.9", "port": 80},
            "real_servers": [{"address": "10.0.0.1", "health_checks": [{"type": "udp"}]}],
        }
    ],
    "vrrp_instances": [
        {
            "name": "web",
            "interface": "eth0",
            "vrid": 51,
            "virtual_ips": ["192.0.2.100/24"],
            "garp": {},
            "track_interfaces": [{"name": "eth1"}],
            "track_scripts": [{"name": "chk", "script": "/bin/true"}],
        },
        {"name": "db", "interface": "eth0", "vrid": 52, "virtual_ips": ["192.0.2.101/24"]},
    ],
    "vrrp_sync_groups": [{"name": "g", "instances": ["db"]}],
    "lock": copy.deepcopy(LOCK),
}
# The file of ``lvs-agent witness``.
WITNESS: dict[str, Any] = {
    "state_dir": "/var/lib/lvs-witness",
    "lock": copy.deepcopy(LOCK),
    "witness": {"clusters": [{**copy.deepcopy(LOCK), "cluster": "c2"}]},
}

SECTIONS = {
    "agent": (
        "",
        "node",
        "metrics",
        "ipvs",
        "ipvs.timeouts",
        "ipvs.sysctls",
        "ipvs.sync",
        "virtual_servers[]",
        "virtual_servers[].persistence",
        "virtual_servers[].health_checks[]",
        "virtual_servers[].sorry_server",
        "virtual_servers[].real_servers[]",
        "virtual_servers[].real_servers[].health_checks[]",
        "vrrp_instances[]",
        "vrrp_instances[].garp",
        "vrrp_instances[].track_interfaces[]",
        "vrrp_instances[].track_scripts[]",
        "vrrp_sync_groups[]",
        "lock",
    ),
    "witness": ("", "lock", "witness", "witness.clusters[]"),
}


@dataclass(frozen=True)
class Case:
    """How to set one key: ``value`` against ``other`` (default: the key absent).

    ``context``: (section, key, value) set in both files, so that the key is
    allowed at all (a tunnel port needs a GUE tunnel); ``drop``: (section, key)
    removed from both.
    """

    value: Any
    other: Any = ABSENT
    context: tuple[tuple[str, str, Any], ...] = ()
    drop: tuple[tuple[str, str], ...] = ()


# A file for the ``include`` case (it must exist: a missing literal path is an error).
INCLUDED = Path(tempfile.mkdtemp(prefix="lvs-agent-keys-")) / "more.yaml"
INCLUDED.write_text(
    "virtual_servers:\n"
    "  - {name: more, address: 192.0.2.50, port: 80, real_servers: [{address: 10.0.0.9}]}\n"
)
atexit.register(shutil.rmtree, INCLUDED.parent, True)

VS = "virtual_servers[]"
RS = "virtual_servers[].real_servers[]"
VI = "vrrp_instances[]"
TUNNEL_VS = ((VS, "forwarding", "tunnel"),)
TUNNEL_RS = ((RS, "forwarding", "tunnel"),)
FWMARK = (((VS, "fwmark", 7),), ((VS, "address"), (VS, "port")))
HC = f"{VS}.health_checks[]"  # a tcp check
RHC = f"{RS}.health_checks[]"  # a udp check: the real server keeps the virtual server's tcp


def _check_cases(section: str) -> dict[tuple[str, str], Case]:
    """The keys of a health check (of a virtual server or of a real server)."""

    def of(kind: str, *more: tuple[str, str, Any]) -> tuple[tuple[str, str, Any], ...]:
        return ((section, "type", kind), *more)

    exec_ = of("exec", (section, "command", ["/bin/true"]))
    cases = {
        "type": Case("agent" if section == HC else "dns", KEEP),
        "interval": Case("5s"),
        "timeout": Case("2s"),
        "rise": Case(5),
        "fall": Case(5),
        "fast_interval": Case("1s"),
        "down_interval": Case("10s"),
        "connect_address": Case("10.0.0.9"),
        "connect_port": Case(8081),
        "source_address": Case("10.0.0.200"),
        "send": Case("PING\r\n"),
        "expect": Case("^PONG"),
        "method": Case("HEAD", ABSENT, of("http")),
        "path": Case("/healthz", ABSENT, of("http")),
        "host": Case("www.example.org", ABSENT, of("http")),
        "expect_status": Case(["200-204", 301], ABSENT, of("http")),
        "expect_body": Case("ok", ABSENT, of("http")),
        "tls_verify": Case(False, ABSENT, of("https")),
        "tls_ca_file": Case("/etc/ssl/ca.pem", ABSENT, of("https")),
        "tls_server_name": Case("www.example.org", ABSENT, of("https")),
        "query_name": Case("example.org", ABSENT, of("dns")),
        "query_type": Case("AAAA", ABSENT, of("dns")),
        "expect_rcode": Case("NXDOMAIN", ABSENT, of("dns")),
        "command": Case(["/bin/false", "-x"], ["/bin/true"], exec_),
        "dynamic_weight": Case(True, ABSENT, exec_),
    }
    return {(section, key): case for key, case in cases.items()}


def _lock_cases(section: str) -> dict[tuple[str, str], Case]:
    """The keys of a ``lock`` section, or of a cluster a witness serves."""
    cases = {
        "cluster": Case("c9", KEEP),
        "listen": Case("10.0.0.12:6741", KEEP),
        "peers": Case({**LOCK["peers"], "w2": "10.0.0.14:6741"}, KEEP),
        "key_file": Case("/etc/lvs-agent/other.key", KEEP),
        "lease": Case("2s"),
        "node_id": Case("d2"),
        "state_dir": Case("/var/lib/lock-elsewhere"),
        "clock_error_ppm": Case(500),
        "guard": Case("50ms"),
        "acceptor_lease": Case("2s", ABSENT, ((section, "quarantine", "3s"),)),
        "quarantine": Case("3s"),
        "renew_interval": Case("200ms"),
    }
    return {(section, key): case for key, case in cases.items()}


SYSCTL_KEYS = (
    "expire_nodest_conn",
    "expire_quiescent_template",
    "conntrack",
    "conn_reuse_mode",
    "sloppy_tcp",
    "sloppy_sctp",
    "schedule_icmp",
    "ignore_tunneled",
    "snat_reroute",
    "pmtu_disc",
    "sync_persist_mode",
    "sync_version",
    "sync_refresh_period",
    "sync_retries",
)

CASES: dict[tuple[str, str], Case | object] = {
    # top level
    ("", "node"): SUB,
    ("", "metrics"): SUB,
    ("", "ipvs"): SUB,
    ("", "virtual_servers"): SUB,
    ("", "vrrp_instances"): SUB,
    ("", "vrrp_sync_groups"): SUB,
    ("", "lock"): SUB,
    ("", "witness"): SUB,
    ("", "reconcile_interval"): Case("5s"),
    ("", "state_dir"): Case("/var/lib/elsewhere"),
    # an included file's virtual server joins the list
    ("", "include"): Case([str(INCLUDED)]),
    ("node", "name"): Case("other-node"),
    ("node", "realtime_priority"): Case(10, ABSENT),
    ("metrics", "listen"): Case("127.0.0.1:19469"),
    ("metrics", "per_real_server"): Case("aggregate"),
    # ipvs
    ("ipvs", "timeouts"): SUB,
    ("ipvs", "sysctls"): SUB,
    ("ipvs", "drain_timeout"): Case("10m"),
    ("ipvs.timeouts", "tcp"): Case("100s"),
    ("ipvs.timeouts", "tcp_fin"): Case("100s"),
    ("ipvs.timeouts", "udp"): Case("100s"),
    **{("ipvs.sysctls", key): Case(1) for key in SYSCTL_KEYS},
    ("ipvs.sysctls", "sync_threshold"): Case("3 50"),
    ("ipvs", "sync"): SUB,
    ("ipvs.sync", "instance"): Case("web", KEEP),
    ("ipvs.sync", "interface"): Case("eth2", KEEP),
    ("ipvs.sync", "sync_id"): Case(7),
    ("ipvs.sync", "port"): Case(8849),
    ("ipvs.sync", "max_len"): Case(1400),
    ("ipvs.sync", "ttl"): Case(2),
    ("ipvs.sync", "group"): Case("224.0.0.82"),
    # virtual servers
    (VS, "name"): Case("web2", KEEP),
    (VS, "address"): Case("192.0.2.11", KEEP),
    (VS, "port"): Case(81, KEEP),
    (VS, "fwmark"): Case(8, 7, *FWMARK),
    (VS, "family"): Case("ipv6", ABSENT, (*FWMARK[0], *TUNNEL_VS), FWMARK[1]),
    (VS, "protocol"): Case("udp"),
    (VS, "scheduler"): Case("rr"),
    (VS, "scheduler_flags"): Case(["flag-1"]),
    (VS, "forwarding"): Case("dr"),
    (VS, "tunnel_type"): Case("gre", ABSENT, TUNNEL_VS),
    (VS, "tunnel_port"): Case(6081, 6080, (*TUNNEL_VS, (VS, "tunnel_type", "gue"))),
    (VS, "tunnel_checksum"): Case("csum", ABSENT, (*TUNNEL_VS, (VS, "tunnel_type", "gre"))),
    (VS, "one_packet"): Case(True, ABSENT, ((VS, "protocol", "udp"),)),
    (VS, "persistence"): SUB,
    (VS, "real_servers"): SUB,
    (VS, "health_checks"): SUB,
    (VS, "on_failure"): Case("remove"),
    (VS, "slow_start"): Case("30s"),
    (VS, "min_healthy"): Case("50%"),
    (VS, "quorum"): Case(2),
    (VS, "hysteresis"): Case(1),
    (VS, "sorry_server"): SUB,
    (VS, "initial"): Case("down"),
    (VS, "quorum_up"): Case(["/usr/local/bin/up"]),
    (VS, "quorum_down"): Case("/usr/local/bin/down now"),
    (f"{VS}.sorry_server", "address"): Case("10.0.9.8", KEEP),
    (f"{VS}.sorry_server", "port"): Case(8080),
    (f"{VS}.sorry_server", "weight"): Case(5),
    **_check_cases(HC),
    (RS, "health_checks"): SUB,
    **_check_cases(RHC),
    (f"{VS}.persistence", "timeout"): Case("10m"),
    (f"{VS}.persistence", "netmask"): Case("255.255.255.0"),
    (f"{VS}.persistence", "engine"): Case("sip", ABSENT, ((VS, "protocol", "udp"),)),
    (RS, "address"): Case("10.0.0.2", KEEP),
    (RS, "port"): Case(8080),
    (RS, "weight"): Case(5),
    (RS, "upper_threshold"): Case(100),
    (RS, "lower_threshold"): Case(50, ABSENT, ((RS, "upper_threshold", 100),)),
    (RS, "forwarding"): Case("dr"),
    (RS, "tunnel_type"): Case("gre", ABSENT, TUNNEL_RS),
    (RS, "tunnel_port"): Case(6081, 6080, (*TUNNEL_RS, (RS, "tunnel_type", "gue"))),
    (RS, "tunnel_checksum"): Case("csum", ABSENT, (*TUNNEL_RS, (RS, "tunnel_type", "gre"))),
    # VRRP
    (VI, "name"): Case("web3", KEEP),
    (VI, "interface"): Case("eth9", KEEP),
    (VI, "vrid"): Case(60, KEEP),
    (VI, "version"): Case(2),
    (VI, "priority"): Case(150),
    (VI, "advert_interval"): Case("2s"),
    (VI, "preempt"): Case(False),
    (VI, "preempt_delay"): Case("10s"),
    (VI, "unicast_peers"): Case(["10.0.0.2"]),
    (VI, "auth_pass"): Case("secret", ABSENT, ((VI, "version", 2),)),
    (VI, "virtual_ips"): Case(["192.0.2.102/24"], KEEP),
    (VI, "track_interfaces"): Case(["eth3"]),
    (VI, "track_scripts"): SUB,
    (VI, "notify"): Case("/usr/local/bin/notify"),
    (VI, "garp"): SUB,
    (VI, "election"): Case("quorum"),
    (f"{VI}.garp", "repeat"): Case(3),
    (f"{VI}.garp", "delay"): Case("1s"),
    (f"{VI}.garp", "refresh"): Case("30s"),
    (f"{VI}.garp", "lower_prio_repeat"): Case(2),
    (f"{VI}.garp", "lower_prio_delay"): Case("2s"),
    (f"{VI}.track_interfaces[]", "name"): Case("eth2", KEEP),
    (f"{VI}.track_interfaces[]", "weight"): Case(-20),
    (f"{VI}.track_scripts[]", "name"): Case("chk2", KEEP),
    (f"{VI}.track_scripts[]", "script"): Case("/bin/false", KEEP),
    (f"{VI}.track_scripts[]", "interval"): Case("2s"),
    (f"{VI}.track_scripts[]", "timeout"): Case("1s"),
    (f"{VI}.track_scripts[]", "rise"): Case(3),
    (f"{VI}.track_scripts[]", "fall"): Case(2),
    (f"{VI}.track_scripts[]", "weight"): Case(-10),
    (f"{VI}.track_scripts[]", "init_fail"): Case(True),
    ("vrrp_sync_groups[]", "name"): Case("g2", KEEP),
    ("vrrp_sync_groups[]", "instances"): Case(["db", "web"], KEEP),
    ("vrrp_sync_groups[]", "notify"): Case("/usr/local/bin/notify"),
    # the quorum lock, and the clusters a witness serves
    **_lock_cases("lock"),
    ("witness", "clusters"): SUB,
    **_lock_cases("witness.clusters[]"),
}

# Keys tried once more where the object they reach is built differently: a fwmark
# service without 'family' learns its family from its real servers, and its
# persistence must still be read (it was once dropped).
EXTRA = (
    (f"{VS}.persistence", "timeout", Case("10m", ABSENT, *FWMARK)),
    (f"{VS}.persistence", "netmask", Case(24, ABSENT, *FWMARK)),
    (VS, "persistence", Case({}, ABSENT, *FWMARK)),
)


def _target(mode: str, section: str) -> Callable[[Config], object]:
    """The part of the configuration that uses the keys of ``section``."""
    top = section.split(".")[0].removesuffix("[]")
    if mode == "witness" and top in ("lock", "witness"):
        return lambda c: c.witness
    return {
        "": lambda c: c,
        "node": lambda c: (c.node_name, c.realtime_priority),
        "metrics": lambda c: (c.metrics_host, c.metrics_port, c.metrics_per_real_server),
        "ipvs": lambda c: c.ipvs,
        "virtual_servers": lambda c: c.virtual_servers,
        "vrrp_instances": lambda c: c.vrrp,
        "vrrp_sync_groups": lambda c: c.vrrp,
        "lock": lambda c: c.lock,
    }[top]


def _steps(section: str) -> list[str | int]:
    steps: list[str | int] = []
    for part in section.split(".") if section else []:
        if part.endswith("[]"):
            steps += [part[:-2], 0]
        else:
            steps.append(part)
    return steps


def _mapping(doc: dict[str, Any], section: str) -> dict[str, Any]:
    node: Any = doc
    for step in _steps(section):
        node = node[step]
    assert isinstance(node, dict), section
    return node


def _error_path(section: str, key: str) -> str:
    path = "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in _steps(section))
    return f"{path}.{key}".lstrip(".")


def _parse(doc: dict[str, Any], mode: str) -> Config:
    return parse_config(
        yaml.safe_dump(doc, sort_keys=False), "test.yaml", witness=mode == "witness"
    )


def _allowed(mode: str, section: str) -> list[str]:
    """The keys the loader reads in ``section``: from its unknown-key message."""
    doc = copy.deepcopy(AGENT if mode == "agent" else WITNESS)
    _mapping(doc, section)[PROBE] = 1
    with pytest.raises(ConfigError) as caught:
        _parse(doc, mode)
    want = _error_path(section, PROBE)
    found = [p.message for p in caught.value.problems if p.path == want]
    assert len(found) == 1, f"{mode} {section!r}: no unknown-key report:\n{caught.value}"
    match = re.search(r"allowed here: (.*)$", found[0])
    assert match, found[0]
    return match.group(1).split(", ")


def _plain(value: object) -> object:
    """A comparable form: dataclasses as dicts without their source line."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.name != "line"
        }
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _keys() -> list[tuple[str, str, str]]:
    return [
        (mode, section, key)
        for mode, sections in SECTIONS.items()
        for section in sections
        for key in _allowed(mode, section)
    ]


def test_the_base_documents_are_valid() -> None:
    _parse(copy.deepcopy(AGENT), "agent")
    _parse(copy.deepcopy(WITNESS), "witness")


def test_every_key_the_loader_accepts_has_a_case() -> None:
    missing = [
        f"{mode} file: {_error_path(section, key)}"
        for mode, section, key in _keys()
        if (section, key) not in CASES
    ]
    assert not missing, (
        "keys the loader accepts without a case in CASES (add one: a non-default value, "
        "and the context it needs):\n  " + "\n  ".join(missing)
    )


def test_every_section_key_is_walked() -> None:
    walked = {s for sections in SECTIONS.values() for s in sections}
    unwalked = []
    for mode, section, key in _keys():
        if CASES.get((section, key)) is not SUB:
            continue
        child = f"{section}.{key}" if section else key
        if child not in walked and f"{child}[]" not in walked:
            unwalked.append(f"{mode} file: {child}")
    assert not unwalked, "sections whose keys SECTIONS does not walk:\n  " + "\n  ".join(unwalked)


def _cases() -> list[tuple[str, str, str]]:
    """Every (mode, section, key) with a value case. The top-level keys are tried in
    the agent's file only (a witness file has the same ones)."""
    return [
        (mode, section, key)
        for mode, sections in SECTIONS.items()
        for section in sections
        for key in _allowed(mode, section)
        if isinstance(CASES.get((section, key)), Case) and not (mode == "witness" and section == "")
    ]


@pytest.mark.parametrize(
    ("mode", "section", "key", "case"),
    [(m, s, k, CASES[s, k]) for m, s, k in _cases()] + [("agent", *extra) for extra in EXTRA],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_a_key_set_changes_the_object_that_uses_it(
    mode: str, section: str, key: str, case: Case
) -> None:
    base = copy.deepcopy(AGENT if mode == "agent" else WITNESS)
    for where, k in case.drop:
        _mapping(base, where).pop(k, None)
    for where, k, v in case.context:
        _mapping(base, where)[k] = v
    with_key = copy.deepcopy(base)
    _mapping(with_key, section)[key] = case.value
    without = copy.deepcopy(base)
    if case.other is ABSENT:
        _mapping(without, section).pop(key, None)
    elif case.other is not KEEP:
        _mapping(without, section)[key] = case.other
    target = _target(mode, section)
    got, default = _parse(with_key, mode), _parse(without, mode)
    assert _plain(target(got)) != _plain(target(default)), (
        f"{_error_path(section, key)}: {case.value!r} gives the same configuration as "
        f"{'the key absent' if case.other is ABSENT else repr(case.other)}: the key is ignored"
    )
