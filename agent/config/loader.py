"""Validate a YAML configuration document into ``agent.config.model.Config``.

Owns every rule about what a valid configuration is. Reports all problems at
once, each with file, line and key path; returns a Config only when there are
none (an invalid file never half-applies). Never touches the kernel.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from agent.config import health, quick
from agent.config.include import Included, read_included
from agent.config.model import (
    FAMILIES,
    FORWARDING_METHODS,
    IPVS_SYSCTL_VECTORS,
    IPVS_SYSCTLS,
    PER_REAL_SERVER,
    PROTOCOLS,
    SCHEDULER_FLAGS,
    SCHEDULERS,
    SYNC_GROUP,
    SYNC_PORT,
    SYNC_TTL,
    TUNNEL_CHECKSUMS,
    TUNNEL_TYPES,
    Config,
    IpvsSettings,
    Persistence,
    RealServer,
    SyncSettings,
    SysctlValue,
    Tunnel,
    VirtualServer,
)
from agent.config.reader import (
    BOOL_TAG,
    INT_TAG,
    ConfigError,
    Item,
    Node,
    Problem,
    Problems,
    Section,
    compose,
)
from agent.config.vrrp import read_vrrp
from agent.vrrp.config import VrrpConfig

if TYPE_CHECKING:
    from agent.health.config import Check
    from agent.lock.config import LockConfig

DEFAULT_PATH = "/etc/lvs-agent/config.yaml"
DEFAULT_METRICS = "127.0.0.1:9469"
DEFAULT_STATE_DIR = "/var/lib/lvs-agent"


# Scheduler flags and the schedulers that understand them (ip_vs_sh.c, ip_vs_mh.c).
_FLAG_SCHEDULER = {"sh-fallback": "sh", "sh-port": "sh", "mh-fallback": "mh", "mh-port": "mh"}
_FLAG_BIT = {
    "sh-fallback": 1,
    "sh-port": 2,
    "mh-fallback": 1,
    "mh-port": 2,
    "flag-1": 1,
    "flag-2": 2,
    "flag-3": 3,
}


def load_config(path: str) -> Config:
    """Read and validate ``path`` and the files it includes; raises ConfigError (with
    every problem) or OSError (the main file cannot be read)."""
    return parse_config(decode_config(Path(path).read_bytes(), path), path)


def decode_config(data: bytes, source: str) -> str:
    """The file's text as ``open()`` reads it (UTF-8, universal newlines); bytes that
    are not UTF-8 raise ConfigError naming the line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        bad = data[exc.start : exc.end].hex(" ")
        raise ConfigError(
            [Problem(source, line, "", f"not UTF-8 text: byte(s) {bad} at column {column}")]
        ) from None
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def parse_config(
    text: str,
    source: str = "config.yaml",
    *,
    witness: bool = False,
    included: Mapping[str, bytes] | None = None,
) -> Config:
    """``witness``: the file of ``lvs-agent witness`` (``lock`` and ``witness`` sections).
    ``include`` patterns are resolved against ``source``'s directory; ``included``: bytes
    already read for some of those files (the rest are read from disk)."""
    return _parse_config(text, source, witness, included)


def load_witness_config(path: str) -> Config:
    return parse_config(decode_config(Path(path).read_bytes(), path), path, witness=True)


def _parse_config(
    text: str, source: str, witness: bool = False, included: Mapping[str, bytes] | None = None
) -> Config:
    problems = Problems(source)
    servers = _VirtualServers(problems)
    root_node = compose(text, problems, stream={"virtual_servers": servers.add})
    if root_node is None:  # a syntax error (recorded), or nothing at all
        if not problems.found:
            problems.add(None, "", "the file is empty")
        problems.raise_if_any()
    assert root_node is not None
    root = Item(root_node, "", problems).as_section()
    if root is None:
        problems.raise_if_any()
    assert root is not None
    config = _read_root(root, source, servers, witness, included)
    problems.raise_if_any()
    assert config is not None
    return config


# The director's keys that ``lvs-agent witness`` has no use for (``include`` is refused
# too: it only holds virtual servers).
WITNESS_REFUSES = (
    "reconcile_interval",
    "ipvs",
    "virtual_servers",
    "vrrp_instances",
    "vrrp_sync_groups",
)


def _read_root(
    root: Section,
    source: str,
    servers: _VirtualServers,
    witness: bool = False,
    included: Mapping[str, bytes] | None = None,
) -> Config | None:
    node = root.section("node")
    node_name = socket.gethostname()
    realtime_priority: int | None = None
    if node is not None:
        name = node.get("name", lambda i: _name(i), node_name)
        realtime_priority = node.get("realtime_priority", lambda i: i.as_int(1, 99), None)
        node.finish()
        node_name = name or node_name

    metrics = root.section("metrics")
    host, port = _host_port_default(DEFAULT_METRICS)
    per_real_server = "full"
    if metrics is not None:
        listen = metrics.item("listen")
        if listen is not None:
            parsed = _host_port(listen)
            if parsed is not None:
                host, port = parsed
        per_rs_item = metrics.item("per_real_server")
        if per_rs_item is not None:
            if witness:
                per_rs_item.error("a witness exports no real servers; remove per_real_server")
            else:
                per_real_server = _per_real_server(per_rs_item) or per_real_server
        metrics.finish()

    if witness:
        # A witness is a lock acceptor only: what a director would do with these keys,
        # a witness would silently not do. Refused, so that nothing is ignored.
        for key in WITNESS_REFUSES:
            unused = root.item(key)
            if unused is not None:
                unused.error(f"a witness runs no IPVS or VRRP; remove {key}")
    reconcile_interval = root.get(
        "reconcile_interval", lambda i: i.as_duration(minimum=0.1, maximum=86400), 30.0
    )
    state_dir = root.get("state_dir", Item.as_absolute_path, DEFAULT_STATE_DIR)
    lines = {"state_dir": found.line} if (found := root.item("state_dir")) else {}
    sync_items: dict[str, Item] = {}
    ipvs = _read_ipvs(root.section("ipvs"), sync_items)
    listed = root.item("virtual_servers")
    if listed is not None:
        listed.as_list()  # entries were read as they were composed; this checks the shape
    virtual_servers = servers.result
    includes: tuple[Included, ...] = ()
    include_item = None if witness else root.item("include")
    if include_item is not None:
        includes, virtual_servers = read_included(include_item, source, virtual_servers, included)
    vrrp = read_vrrp(root, quorum_allowed=witness or root.has("lock"), lines=lines)
    if ipvs is not None and ipvs.sync is not None:
        ipvs = _resolve_sync(sync_items["instance"], ipvs, vrrp)
        lines.update({item.path: item.line for item in sync_items.values()})
    lock, served = _read_lock(root, vrrp, state_dir or DEFAULT_STATE_DIR, witness, lines)
    root.finish()

    if root.problems.found:
        return None
    assert reconcile_interval is not None and state_dir is not None and ipvs is not None
    return Config(
        source=source,
        node_name=node_name,
        metrics_host=host,
        metrics_port=port,
        reconcile_interval=reconcile_interval,
        state_dir=state_dir,
        ipvs=ipvs,
        virtual_servers=tuple(virtual_servers),
        vrrp=vrrp,
        lock=lock,
        witness=served,
        lines=lines,
        includes=includes,
        metrics_per_real_server=per_real_server,
        realtime_priority=realtime_priority,
    )


def _read_lock(
    root: Section, vrrp: VrrpConfig, state_dir: str, witness: bool, lines: dict[str, int]
) -> tuple[LockConfig | None, tuple[LockConfig, ...]]:
    if witness:
        from agent.config.lock import read_witness

        served = read_witness(root, state_dir, lines)
        if not served and not root.problems.found:
            root.error("a witness needs a 'lock' section or 'witness: {clusters: [...]}'")
        return None, served
    leases = tuple(dict.fromkeys(i.lease for i in vrrp.vrrp_instances if i.lease))
    section = root.section("lock")
    if section is None:
        return None, ()
    from agent.config.lock import read_lock_section  # the lock package: only when used

    lock = read_lock_section(section, state_dir, leases, lines)
    return lock, ()


# --- small readers -----------------------------------------------------------------


def _name(item: Item) -> str | None:
    value = item.as_str()
    if value is None:
        return None
    if not value or len(value) > 64 or not all(c.isalnum() or c in "-_." for c in value):
        item.error("must be 1..64 characters of letters, digits, '-', '_' or '.'")
        return None
    return value


def _per_real_server(item: Item) -> str | None:
    """full | aggregate | off; YAML reads a bare ``off`` as false, which means off too."""
    if item.scalar_tag == BOOL_TAG:
        if item.as_bool() is False:
            return "off"
        item.error(f"must be one of {', '.join(PER_REAL_SERVER)}, got true")
        return None
    return item.as_choice(PER_REAL_SERVER)


def _host_port_default(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def _host_port(item: Item) -> tuple[str, int] | None:
    """``host:port`` or ``[v6]:port``."""
    text = item.as_str()
    if text is None:
        return None
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    digits = port_text.isascii() and port_text.isdigit()
    if not sep or not digits or not 1 <= int(port_text) <= 65535:
        item.error(f"must be host:port (IPv6 as [addr]:port), got {text!r}")
        return None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        item.error(f"{host!r} is not an IP address; listen takes an address, not a name")
        return None
    return host, int(port_text)


# --- ipvs ------------------------------------------------------------------------


# The kernel keeps both in jiffies (seconds x HZ, HZ up to 1000). It refuses a
# connection timeout over INT_MAX / HZ with EINVAL; a persistence timeout over
# UINT_MAX / HZ wraps around silently (99999999s reads back as 14100653s at HZ
# 250). These are the most every kernel takes; ipvsadm stops at 31 days too.
MAX_CONNECTION_TIMEOUT = (2**31 - 1) // 1000  # 24d20h31m23s
MAX_PERSISTENCE_TIMEOUT = 31 * 86400


def _read_ipvs(section: Section | None, sync_items: dict[str, Item]) -> IpvsSettings | None:
    if section is None:
        return IpvsSettings()
    timeouts = section.section("timeouts")
    tcp = tcp_fin = udp = None
    if timeouts is not None:

        def whole(item: Item) -> float | None:
            return item.as_duration(minimum=1, maximum=MAX_CONNECTION_TIMEOUT, whole_seconds=True)

        tcp = timeouts.get("tcp", whole, None)
        tcp_fin = timeouts.get("tcp_fin", whole, None)
        udp = timeouts.get("udp", whole, None)
        timeouts.finish()
    drain = section.get("drain_timeout", lambda i: i.as_duration(maximum=7 * 86400), 300.0)
    sysctls: dict[str, SysctlValue] = {}
    sysctl_section = section.section("sysctls")
    if sysctl_section is not None:
        for key, (lo, hi) in IPVS_SYSCTLS.items():
            item = sysctl_section.item(key)
            value = _sysctl_value(item, lo, hi) if item is not None else None
            if value is not None:
                sysctls[key] = value
        for key, shape in IPVS_SYSCTL_VECTORS.items():
            item = sysctl_section.item(key)
            vector = _sysctl_vector(item, *shape) if item is not None else None
            if vector is not None:
                sysctls[key] = vector
        sysctl_section.finish()
    sync_section = section.section("sync")
    sync = _read_sync(sync_section, sync_items) if sync_section is not None else None
    section.finish()
    if drain is None or (sync_section is not None and sync is None):
        return None
    return IpvsSettings(tcp, tcp_fin, udp, drain, sysctls, sync)


def _sysctl_vector(item: Item, length: int, lo: int, hi: int) -> tuple[int, ...] | None:
    """``"3 50"`` (as /proc shows it) or ``[3, 50]``; sync_threshold: threshold < period."""
    raw: list[object]
    listed = item.as_list() if not item.scalar_tag else None
    if listed is not None:
        raw = [i.as_int(lo, hi) for i in listed]
        if any(v is None for v in raw):
            return None
    else:
        text = item.as_str()
        if text is None:
            return None
        raw = [int(p) if p.isascii() and p.isdigit() else p for p in str(text).split()]
    if len(raw) != length or not all(isinstance(v, int) and lo <= v <= hi for v in raw):
        item.error(f'must be {length} whole numbers {lo}..{hi}, as "3 50" or [3, 50]')
        return None
    values = tuple(int(str(v)) for v in raw)
    if len(values) == 2 and values[1] and values[0] >= values[1]:
        item.error(f"the threshold ({values[0]}) must be below the period ({values[1]})")
        return None
    return values


def _read_sync(section: Section, items: dict[str, Item]) -> SyncSettings | None:
    """``ipvs.sync``; ``instance`` is checked against the VRRP sections by the caller
    (``items``: the instance and interface keys, for its errors and host checks)."""
    for key in ("instance", "interface"):
        if (item := section.item(key)) is not None:
            items[key] = item
    instance = section.get("instance", lambda i: _name(i), None, required=True)
    interface = section.get("interface", _interface_name, None, required=True)
    sync_id = section.get("sync_id", lambda i: i.as_int(0, 255), None)
    port = section.get("port", lambda i: i.as_int(1, 65535), SYNC_PORT)
    max_len = section.get("max_len", lambda i: i.as_int(1, 65507), 0)
    ttl = section.get("ttl", lambda i: i.as_int(1, 255), SYNC_TTL)
    group = section.get("group", _multicast_group, SYNC_GROUP)
    section.finish()
    if None in (instance, interface, port, max_len, ttl, group):
        return None
    assert instance is not None and interface is not None and group is not None
    assert port is not None and max_len is not None and ttl is not None
    return SyncSettings(
        instance, interface, -1 if sync_id is None else sync_id, port, max_len, ttl, group
    )


def _interface_name(item: Item) -> str | None:
    text = item.as_str()
    if text is None:
        return None
    if not 1 <= len(text) <= 15 or "/" in text or not text.isprintable() or " " in text:
        item.error(f"{text!r} is not an interface name (1..15 characters, no '/' or spaces)")
        return None
    return text


def _multicast_group(item: Item) -> str | None:
    text = item.as_str()
    if text is None:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        item.error(f"{text!r} is not an IP address")
        return None
    if not address.is_multicast:
        item.error(f"{text} is not a multicast address")
        return None
    return str(address)


def _resolve_sync(item: Item, ipvs: IpvsSettings, vrrp: VrrpConfig) -> IpvsSettings:
    """``ipvs.sync.instance`` names a VRRP instance or sync group; the default sync id
    is the instance's VRID (a group's: its first member's), as keepalived does."""
    sync = ipvs.sync
    if sync is None:
        return ipvs
    vrids = {i.name: i.vrid for i in vrrp.vrrp_instances}
    groups = {g.name: g.instances for g in vrrp.vrrp_sync_groups}
    if sync.instance in vrids:
        vrid = vrids[sync.instance]
    elif sync.instance in groups:
        vrid = vrids.get(groups[sync.instance][0], 0)
    else:
        names = sorted([*vrids, *groups])
        item.error(
            f"{sync.instance!r} is neither a VRRP instance nor a sync group"
            + (f" (configured: {', '.join(names)})" if names else " (none is configured)")
        )
        return ipvs
    if sync.sync_id >= 0:
        return ipvs
    return replace(ipvs, sync=replace(sync, sync_id=vrid))


def _sysctl_value(item: Item, lo: int, hi: int) -> int | None:
    if item.scalar_tag == BOOL_TAG:
        value = item.as_bool()
        return None if value is None else int(value)
    return item.as_int(lo, hi)


# --- virtual servers -------------------------------------------------------------------


class _VirtualServers:
    """Reads ``virtual_servers`` entries one by one, as the composer finishes each.

    A large file's node tree is several times the size of the configuration it
    describes; validating each entry as soon as it is composed lets its nodes go
    at once, which halves the peak memory of reading 10,000 services.
    """

    def __init__(self, problems: Problems) -> None:
        self.problems = problems
        self.result: list[VirtualServer] = []
        self.indexes: list[int] = []  # each one's position in the file's list
        self._names: dict[str, int] = {}
        self._keys: dict[tuple[object, ...], int] = {}

    def add(self, node: Node, index: int) -> None:
        vs = quick.virtual_server(node, health.read_quietly)
        if vs is not None:
            identity = _identity(vs)
            if vs.name not in self._names and identity not in self._keys:
                self._names[vs.name] = vs.line
                self._keys[identity] = vs.line
                self.result.append(vs)
                self.indexes.append(index)
                return
        section = Item(node, "virtual_servers", self.problems, index).as_section()
        if section is None:
            return
        vs = _read_virtual_server(section)
        if vs is None:
            return
        if vs.name in self._names:
            section.error(
                f"duplicate virtual server name {vs.name!r} (first at line {self._names[vs.name]})",
                "name",
            )
        else:
            self._names[vs.name] = vs.line
        key = _identity(vs)
        if key in self._keys:
            section.error(
                f"duplicate virtual server: {describe_service(vs)} is already defined "
                f"at line {self._keys[key]}"
            )
        else:
            self._keys[key] = vs.line
        self.result.append(vs)
        self.indexes.append(index)


def describe_service(vs: VirtualServer) -> str:
    """The kernel service in words: ``tcp 192.0.2.1 port 80``, ``fwmark 7 (ipv4)``."""
    return (
        f"fwmark {vs.fwmark} ({vs.family})"
        if vs.fwmark
        else f"{vs.protocol} {vs.address} port {vs.port}"
    )


def _identity(vs: VirtualServer) -> tuple[object, ...]:
    """What makes two virtual servers the same kernel service."""
    return ("fwmark", vs.family, vs.fwmark) if vs.fwmark else (vs.protocol, vs.address, vs.port)


def _read_virtual_server(vs: Section) -> VirtualServer | None:
    before = len(vs.problems.found)
    name = vs.get("name", _name, None, required=True)
    address_item = vs.item("address")
    address = quick.unicast_item(address_item)
    port = vs.get("port", lambda i: i.as_int(1, 65535), None)
    fwmark = vs.get("fwmark", lambda i: i.as_int(1, 2**32 - 1), None)
    family_item = vs.item("family")
    family = family_item.as_choice(FAMILIES) if family_item else None
    protocol_item = vs.item("protocol")
    protocol = protocol_item.as_choice(PROTOCOLS) if protocol_item else None
    scheduler = vs.get("scheduler", lambda i: i.as_choice(SCHEDULERS), "wlc")
    flags_item = vs.item("scheduler_flags")
    flags = _scheduler_flags(flags_item, scheduler) if flags_item else ()
    forwarding = vs.get("forwarding", lambda i: i.as_choice(FORWARDING_METHODS), "nat")
    tunnel = _tunnel(vs)
    one_packet = vs.get("one_packet", lambda i: i.as_bool(), False)
    persistence_section = vs.section("persistence")
    checks_item = vs.item("health_checks")
    checks = (health.read_checks(checks_item) if checks_item else ()) or ()
    policy = health.read_policy(vs, port or 0)
    rs_items = list(vs.items("real_servers"))
    vs.finish()

    # Identity: address+port, or fwmark.
    if fwmark is not None:
        if address_item is not None or vs.has("port"):
            vs.error("use either fwmark or address and port, not both", "fwmark")
        if protocol_item is not None:
            vs.error(
                "a fwmark service matches every protocol its mark selects; remove protocol",
                "protocol",
            )
    else:
        if address_item is None:
            vs.error("missing required key 'address' (or 'fwmark' for a firewall-mark service)")
        if not vs.has("port"):
            vs.error("missing required key 'port'")
        if family_item is not None:
            vs.error("family is implied by the address; it is only for fwmark services", "family")
    if address is not None:
        family = quick.address_family(address)
    if protocol is None and fwmark is None:
        protocol = "tcp"
    if one_packet and protocol not in ("udp", None):
        vs.error(f"one-packet scheduling is for UDP only, not {protocol}", "one_packet")

    # Real servers.
    real_servers: list[RealServer] = []
    seen: dict[tuple[str, int], tuple[int, int]] = {}  # -> (index, line)
    for index, rs_item in enumerate(rs_items):
        rs_section = rs_item.as_section()
        if rs_section is None:
            continue
        rs = _real_server(
            rs_section, port or 0, bool(fwmark), forwarding or "nat", tunnel, family, checks
        )
        if rs is None:
            continue
        if (rs.address, rs.port) in seen:
            first, line = seen[rs.address, rs.port]
            rs_section.error(
                f"duplicate real server {rs.address} port {rs.port} "
                f"(first as real_servers[{first}], line {line})"
            )
            continue
        seen[rs.address, rs.port] = (index, rs.line)
        real_servers.append(rs)

    if fwmark is not None and family is None:
        families = {
            quick.address_family(rs.address) for rs in real_servers if rs.forwarding != "tunnel"
        }
        family = families.pop() if len(families) == 1 else "ipv4"

    if family is not None:
        health.check_sorry_family(vs, policy, family, forwarding)
    health.check_unchecked(vs, policy, bool(checks) or any(rs.checks for rs in real_servers))

    # Read after the family is known: a fwmark service without ``family`` takes its
    # real servers' family, and the persistence netmask depends on it.
    persistence = (
        _persistence(persistence_section, family, protocol) if persistence_section else None
    )

    if (
        tunnel is not None
        and forwarding != "tunnel"
        and not any(rs.forwarding == "tunnel" for rs in real_servers)
    ):
        vs.error(f"tunnel options need forwarding: tunnel (this virtual server uses {forwarding})")

    if len(vs.problems.found) > before:
        return None
    assert name is not None and scheduler is not None and family is not None
    assert policy is not None
    return VirtualServer(
        name=name,
        family=family,
        address=address,
        port=port or 0,
        fwmark=fwmark or 0,
        protocol=protocol,
        scheduler=scheduler,
        scheduler_flags=flags or (),
        persistence=persistence,
        one_packet=bool(one_packet),
        real_servers=tuple(real_servers),
        line=vs.line,
        health=policy,
    )


def _scheduler_flags(item: Item, scheduler: str | None) -> tuple[str, ...] | None:
    values = item.as_list()
    if values is None:
        return None
    flags: list[str] = []
    bits: dict[int, str] = {}
    for v in values:
        flag = v.as_choice(SCHEDULER_FLAGS)
        if flag is None:
            continue
        wanted = _FLAG_SCHEDULER.get(flag)
        if wanted is not None and scheduler is not None and wanted != scheduler:
            v.error(f"{flag} is a flag of the {wanted} scheduler, not {scheduler}")
            continue
        bit = _FLAG_BIT[flag]
        if bit in bits:
            v.error(f"{flag} sets the same scheduler flag bit as {bits[bit]}")
            continue
        bits[bit] = flag
        flags.append(flag)
    return tuple(flags)


def _tunnel(section: Section, base: Tunnel | None = None) -> Tunnel | None:
    """tunnel_type / tunnel_port / tunnel_checksum of a virtual or real server.

    A real server's keys override its virtual server's (``base``) one by one; a
    port or checksum is inherited only where the resulting tunnel type takes it.
    """
    type_item = section.item("tunnel_type")
    port_item = section.item("tunnel_port")
    csum_item = section.item("tunnel_checksum")
    if type_item is None and port_item is None and csum_item is None:
        return base
    tun_type = type_item.as_choice(TUNNEL_TYPES) if type_item else (base.type if base else "ipip")
    port = port_item.as_int(1, 65535) if port_item else None
    if port_item is None and base is not None and base.type == "gue" == tun_type:
        port = base.port
    checksum = csum_item.as_choice(TUNNEL_CHECKSUMS) if csum_item else "nocsum"
    if (
        csum_item is None
        and base is not None
        and (tun_type, base.checksum) in (("gue", "csum"), ("gue", "remcsum"), ("gre", "csum"))
    ):
        checksum = base.checksum
    ok = tun_type is not None and checksum is not None and (port_item is None or port is not None)
    if tun_type == "gue" and port is None and port_item is None:
        section.error(
            "tunnel_type gue needs tunnel_port (the remote GUE UDP port)",
            "tunnel_type" if type_item else None,
        )
        ok = False
    if tun_type in ("ipip", "gre") and port_item is not None:
        section.error(f"tunnel_port is only for tunnel_type gue, not {tun_type}", "tunnel_port")
        ok = False
    if tun_type == "ipip" and csum_item is not None and checksum != "nocsum":
        section.error(
            "ipip tunnels have no checksum option; tunnel_checksum needs gue or gre",
            "tunnel_checksum",
        )
        ok = False
    if tun_type == "gre" and checksum == "remcsum":
        section.error(
            "remcsum is for gue tunnels only; gre takes nocsum or csum", "tunnel_checksum"
        )
        ok = False
    if not ok:
        return Tunnel()  # placeholder: the problem is recorded, nothing is built
    assert tun_type is not None and checksum is not None
    return Tunnel(tun_type, port or 0, checksum)


def _persistence(section: Section, family: str | None, protocol: str | None) -> Persistence | None:
    timeout = section.get(
        "timeout",
        lambda i: i.as_duration(minimum=1, maximum=MAX_PERSISTENCE_TIMEOUT, whole_seconds=True),
        300.0,
    )
    netmask_item = section.item("netmask")
    engine_item = section.item("engine")
    section.finish()
    engine = engine_item.as_choice(("sip",)) if engine_item else None
    if engine == "sip" and protocol != "udp":
        section.error("the sip persistence engine works on UDP services only", "engine")
    if family is None:  # only when the address was refused: that problem is recorded
        return None
    netmask = 0xFFFFFFFF if family == "ipv4" else 128
    if netmask_item is not None:
        parsed = _netmask(netmask_item, family)
        if parsed is None:
            return None
        netmask = parsed
    if timeout is None:
        return None
    return Persistence(timeout=timeout, netmask=netmask, engine=engine)


def _netmask(item: Item, family: str) -> int | None:
    """IPv4: dotted mask or prefix length -> host-order mask. IPv6: prefix length 1..128."""
    if family == "ipv6":
        return item.as_int(1, 128)
    if item.scalar_tag == INT_TAG:
        length = item.as_int(1, 32)
        return None if length is None else (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF
    text = item.as_str()
    if text is None:
        return None
    try:
        net = ipaddress.IPv4Network(f"0.0.0.0/{text}")
    except ValueError:
        item.error(f"{text!r} is not an IPv4 netmask (like 255.255.255.0 or 24)")
        return None
    return int(net.netmask)


def _real_server(
    rs: Section,
    vs_port: int,
    fwmark: bool,
    vs_forwarding: str,
    vs_tunnel: Tunnel | None,
    vs_family: str | None,
    vs_checks: tuple[Check, ...] = (),
) -> RealServer | None:
    before = len(rs.problems.found)
    address = quick.unicast_item(rs.item("address", required=True))
    port_item = rs.item("port")
    port = port_item.as_int(0 if fwmark else 1, 65535) if port_item else None
    weight = rs.get("weight", lambda i: i.as_int(0, 65535), 1)
    upper = rs.get("upper_threshold", lambda i: i.as_int(0, 2**31 - 1), 0)
    lower = rs.get("lower_threshold", lambda i: i.as_int(0, 2**31 - 1), 0)
    forwarding = rs.get("forwarding", lambda i: i.as_choice(FORWARDING_METHODS), vs_forwarding)
    own_keys = any(rs.has(k) for k in ("tunnel_type", "tunnel_port", "tunnel_checksum"))
    tunnel = _tunnel(rs, vs_tunnel)
    checks_item = rs.item("health_checks")
    own = health.read_checks(checks_item) if checks_item else None
    rs.finish()

    if forwarding == "tunnel":
        tunnel = tunnel or Tunnel()
    elif own_keys:
        rs.error(f"tunnel options need forwarding: tunnel (this real server uses {forwarding})")
    else:
        tunnel = None

    if forwarding in ("dr", "tunnel") and not fwmark:
        # DR and tunnelling cannot rewrite the port: the real server sees the VIP's port.
        if port is not None and port != vs_port:
            rs.error(
                f"{forwarding} forwarding cannot change the port: it must be {vs_port} "
                "(the virtual server's) or left out",
                "port",
            )
        port = vs_port
    elif port is None:
        port = 0 if fwmark else vs_port

    if (
        address is not None
        and vs_family is not None
        and quick.address_family(address) != vs_family
        and (forwarding != "tunnel")
    ):
        rs.error(
            f"{quick.address_family(address)} real server in an {vs_family} virtual server: "
            "only tunnel forwarding can cross address families",
            "address",
        )
    if lower and not upper:
        rs.error("lower_threshold needs upper_threshold", "lower_threshold")
    elif upper and lower is not None and lower > upper:
        rs.error(f"lower_threshold {lower} is above upper_threshold {upper}", "lower_threshold")

    if len(rs.problems.found) > before or address is None:
        return None
    checks = health.merge(vs_checks, own)
    health.check_sources(rs, checks, address)
    if len(rs.problems.found) > before:
        return None
    assert weight is not None and upper is not None and lower is not None and forwarding
    return RealServer(
        address=address,
        port=port,
        weight=weight,
        upper_threshold=upper,
        lower_threshold=lower,
        forwarding=forwarding,
        tunnel=tunnel,
        line=rs.line,
        checks=checks,
    )


__all__ = ["DEFAULT_PATH", "ConfigError", "decode_config", "load_config", "parse_config"]
