"""Validate the ``vrrp_instances`` and ``vrrp_sync_groups`` sections.

Builds ``agent.vrrp.config`` objects; every rule that can be checked without
looking at the host is checked here, so ``check-config`` catches it. Whether
interfaces and the programs of scripts exist is for ``agent.config.host`` (from
the lines kept here) and for the instances when they start.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import replace

from agent.config.duration import format_duration
from agent.config.reader import Item, Section
from agent.vrrp.config import (
    GarpConfig,
    SyncGroupConfig,
    TrackInterfaceConfig,
    TrackScriptConfig,
    VrrpConfig,
    VrrpInstanceConfig,
)

V3_MIN_INTERVAL = 0.01
V3_MAX_INTERVAL = 40.95  # 12 bits of centiseconds (RFC 5798 5.2.7)
TRACK_WEIGHT = 253  # keepalived's bound: a weight can take 254 to 1 and back
IFNAMSIZ = 15
ELECTIONS = ("vrrp", "quorum")


def read_vrrp(
    root: Section, quorum_allowed: bool = True, lines: dict[str, int] | None = None
) -> VrrpConfig:
    """``quorum_allowed``: the document has a ``lock:`` section for election: quorum.
    ``lines`` receives the line of each interface, script and notify command."""
    lines = {} if lines is None else lines
    instances: list[VrrpInstanceConfig] = []
    names: dict[str, int] = {}
    vrids: dict[tuple[str, int, int], int] = {}
    vips: dict[str, int] = {}
    for item in root.items("vrrp_instances"):
        section = item.as_section()
        if section is None:
            continue
        instance = _instance(section, lines)
        if instance is None:
            continue
        if instance.election == "quorum" and not quorum_allowed:
            section.error(
                "election: quorum needs a 'lock' section (cluster, listen, peers, key_file)",
                "election",
            )
        if instance.name in names:
            section.error(
                f"duplicate instance name {instance.name!r} (first at line {names[instance.name]})",
                "name",
            )
        names.setdefault(instance.name, section.line)
        family = _advert_family(instance)
        key = (instance.interface, instance.vrid, family)
        if key in vrids:
            section.error(
                f"VRID {instance.vrid} is already used on {instance.interface} for IPv{family} "
                f"(line {vrids[key]}); each virtual router needs its own VRID",
                "vrid",
            )
        vrids.setdefault(key, section.line)
        for vip in instance.virtual_ips:
            address = vip.split("/")[0]
            if address in vips:
                section.error(
                    f"{address} is a VIP of another instance too (line {vips[address]}); "
                    "two virtual routers would fight over it",
                    "virtual_ips",
                )
            vips.setdefault(address, section.line)
        instances.append(instance)
    groups = _sync_groups(root, {i.name: i for i in instances}, lines)
    instances = _group_leases(instances, groups)
    return VrrpConfig(tuple(instances), tuple(groups))


def _group_leases(
    instances: list[VrrpInstanceConfig], groups: list[SyncGroupConfig]
) -> list[VrrpInstanceConfig]:
    """A sync group under quorum election is one lease, named after the group."""
    by_name = {i.name: i for i in instances}
    lease_of: dict[str, str] = {}
    for group in groups:
        if all(by_name[m].election == "quorum" for m in group.instances):
            lease_of.update(dict.fromkeys(group.instances, group.name))
    return [replace(i, lease=lease_of[i.name]) if i.name in lease_of else i for i in instances]


def _advert_family(instance: VrrpInstanceConfig) -> int:
    first = instance.unicast_peers[0] if instance.unicast_peers else instance.virtual_ips[0]
    return 6 if ":" in first else 4


def _name(item: Item) -> str | None:
    value = item.as_str()
    if value is not None and (
        not value or len(value) > 64 or not all(c.isalnum() or c in "-_." for c in value)
    ):
        item.error("must be 1..64 characters of letters, digits, '-', '_' or '.'")
        return None
    return value


def _interface(item: Item) -> str | None:
    value = item.as_str()
    if value is not None and (
        not value or len(value) > IFNAMSIZ or "/" in value or any(c.isspace() for c in value)
    ):
        item.error(f"{value!r} is not an interface name (1..{IFNAMSIZ} characters, no '/')")
        return None
    return value


def _command(item: Item) -> str | None:
    value = item.as_str()
    if value is not None and not value.strip():
        item.error("must be a command line, not empty")
        return None
    if value is not None:
        try:
            shlex.split(value)  # as the VRRP service splits it to run it (no shell)
        except ValueError as exc:
            item.error(f"cannot be split into words like a shell would: {exc}")
            return None
    return value


def _note(s: Section, key: str, lines: dict[str, int]) -> None:
    """Remember the line of ``key`` (for the host checks of check-config)."""
    item = s.item(key)
    if item is not None:
        lines[item.path] = item.line


def _instance(s: Section, lines: dict[str, int]) -> VrrpInstanceConfig | None:
    before = len(s.problems.found)
    name = s.get("name", _name, None, required=True)
    interface = s.get("interface", _interface, None, required=True)
    vrid = s.get("vrid", lambda i: i.as_int(1, 255), None, required=True)
    version = s.get("version", lambda i: i.as_int(2, 3), 3)
    priority = s.get("priority", lambda i: i.as_int(1, 255), 100)
    interval_item = s.item("advert_interval")
    interval = interval_item.as_duration(V3_MIN_INTERVAL, V3_MAX_INTERVAL) if interval_item else 1.0
    preempt = s.get("preempt", lambda i: i.as_bool(), True)
    preempt_delay = s.get("preempt_delay", lambda i: i.as_duration(maximum=3600), 0.0)
    peers = [(i, _peer(i)) for i in s.items("unicast_peers")]
    auth_item = s.item("auth_pass")
    auth = auth_item.as_str() if auth_item else None
    vip_items = [(i, _vip(i)) for i in s.items("virtual_ips")]
    track_interfaces = [_track_interface(i, lines) for i in s.items("track_interfaces")]
    track_scripts = [_track_script(i, lines) for i in s.items("track_scripts")]
    notify = s.get("notify", _command, None)
    _note(s, "interface", lines)
    _note(s, "notify", lines)
    garp = _garp(s.section("garp"))
    election = s.get("election", lambda i: i.as_choice(ELECTIONS), "vrrp")
    s.finish()

    if not vip_items:
        s.error("needs at least one entry in virtual_ips")
    if interval_item is not None and interval is not None:
        if version == 2 and (interval != int(interval) or interval > 255):
            interval_item.error(
                f"VRRPv2 adverts are whole seconds 1s..255s, got {format_duration(interval)}"
            )
        elif abs(interval * 100 - round(interval * 100)) > 1e-9:
            interval_item.error(
                f"VRRPv3 adverts are in steps of 10ms, got {format_duration(interval)}"
            )
    if auth_item is not None and auth is not None:
        if version == 3:
            auth_item.error(
                "VRRPv3 has no authentication (RFC 5798 removed it); use version: 2 or remove it"
            )
        elif not 1 <= len(auth.encode()) <= 8:
            auth_item.error("must be 1..8 bytes (VRRPv2 simple password)")
    addresses = [v for _, v in vip_items if v is not None]
    peer_addrs = [p for _, p in peers if p is not None]
    family = None
    if peer_addrs:
        family = peer_addrs[0].version
    elif addresses:
        family = addresses[0].ip.version
    for item, peer in peers:
        if peer is not None and family is not None and peer.version != family:
            item.error(f"unicast peers must all be IPv{family}")
    if version == 2 and family == 6:
        s.error("VRRPv2 is IPv4 only (RFC 3768); use version: 3 for IPv6")
    seen: set[str] = set()
    for item, vip in vip_items:
        if vip is not None and str(vip.ip) in seen:
            item.error(f"{vip.ip} is listed twice")
        if vip is not None:
            seen.add(str(vip.ip))
    if priority == 255 and not addresses:
        s.error("priority 255 means the address owner, which needs virtual_ips", "priority")

    if len(s.problems.found) > before or garp is None or election is None:
        return None
    assert name and interface and vrid and version and priority and interval is not None
    assert preempt is not None and preempt_delay is not None
    return VrrpInstanceConfig(
        name=name,
        interface=interface,
        vrid=vrid,
        version=version,
        priority=priority,
        advert_interval=round(interval, 2),
        preempt=preempt,
        preempt_delay=preempt_delay,
        unicast_peers=tuple(str(p) for p in peer_addrs),
        auth_pass=auth,
        virtual_ips=tuple(str(v) for v in addresses),
        track_interfaces=tuple(t for t in track_interfaces if t is not None),
        track_scripts=tuple(t for t in track_scripts if t is not None),
        notify=notify,
        garp=garp,
        election=election,
        lease=name if election == "quorum" else "",
    )


def _peer(item: Item) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = item.as_str()
    if text is None:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        item.error(f"{text!r} is not an IP address")
        return None
    if address.is_multicast or address.is_unspecified:
        item.error(f"{text} cannot be a unicast peer")
        return None
    return address


def _vip(item: Item) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface | None:
    text = item.as_str()
    if text is None:
        return None
    try:
        vip = ipaddress.ip_interface(text)
    except ValueError:
        item.error(f"{text!r} is not an address with an optional /prefix (like 192.0.2.1/24)")
        return None
    if vip.ip.is_multicast or vip.ip.is_unspecified or vip.ip.is_loopback:
        item.error(f"{vip.ip} cannot be a virtual IP")
        return None
    return vip


def _weight(item: Item) -> int | None:
    return item.as_int(-TRACK_WEIGHT, TRACK_WEIGHT)


def _track_interface(item: Item, lines: dict[str, int]) -> TrackInterfaceConfig | None:
    if item.scalar_tag:
        name = _interface(item)
        lines[item.path] = item.line
        return TrackInterfaceConfig(name) if name else None
    s = item.as_section()
    if s is None:
        return None
    name = s.get("name", _interface, None, required=True)
    _note(s, "name", lines)
    weight = s.get("weight", _weight, 0)
    s.finish()
    if name is None or weight is None:
        return None
    return TrackInterfaceConfig(name, weight)


def _track_script(item: Item, lines: dict[str, int]) -> TrackScriptConfig | None:
    s = item.as_section()
    if s is None:
        return None
    before = len(s.problems.found)
    name = s.get("name", _name, None, required=True)
    script = s.get("script", _command, None, required=True)
    _note(s, "script", lines)
    interval = s.get("interval", lambda i: i.as_duration(0.1, 3600), 1.0)
    timeout = s.get("timeout", lambda i: i.as_duration(0.1, 3600), None)
    rise = s.get("rise", lambda i: i.as_int(1, 100), 1)
    fall = s.get("fall", lambda i: i.as_int(1, 100), 1)
    weight = s.get("weight", _weight, 0)
    init_fail = s.get("init_fail", lambda i: i.as_bool(), False)
    s.finish()
    if len(s.problems.found) > before:
        return None
    assert name and script and interval and rise and fall and weight is not None
    return TrackScriptConfig(name, script, interval, timeout, rise, fall, weight, bool(init_fail))


def _garp(s: Section | None) -> GarpConfig | None:
    if s is None:
        return GarpConfig()
    repeat = s.get("repeat", lambda i: i.as_int(0, 100), 5)
    delay = s.get("delay", lambda i: i.as_duration(maximum=3600), 5.0)
    refresh = s.get("refresh", lambda i: i.as_duration(maximum=86400), 0.0)
    # keepalived: garp_lower_prio_repeat / _delay default to the master burst's values
    lower_item, lower_delay_item = s.item("lower_prio_repeat"), s.item("lower_prio_delay")
    lower_repeat = lower_item.as_int(0, 100) if lower_item else None
    lower_delay = lower_delay_item.as_duration(maximum=3600) if lower_delay_item else None
    s.finish()
    if repeat is None or delay is None or refresh is None:
        return None
    if (lower_item and lower_repeat is None) or (lower_delay_item and lower_delay is None):
        return None
    return GarpConfig(repeat, delay, refresh, lower_repeat, lower_delay)


def _sync_groups(
    root: Section, instances: dict[str, VrrpInstanceConfig], lines: dict[str, int]
) -> list[SyncGroupConfig]:
    groups: list[SyncGroupConfig] = []
    member_of: dict[str, str] = {}
    names: set[str] = set()
    for item in root.items("vrrp_sync_groups"):
        s = item.as_section()
        if s is None:
            continue
        name = s.get("name", _name, None, required=True)
        members: list[str] = []
        for member_item in s.items("instances"):
            member = member_item.as_str()
            if member is None:
                continue
            if member not in instances:
                member_item.error(f"no vrrp_instances entry named {member!r}")
            elif member in member_of:
                member_item.error(f"{member!r} is already in sync group {member_of[member]!r}")
            else:
                member_of[member] = name or "?"
                members.append(member)
        notify = s.get("notify", _command, None)
        _note(s, "notify", lines)
        s.finish()
        if len({instances[m].election for m in members}) > 1:
            s.error(
                "mixes election: vrrp and election: quorum members; a group is MASTER "
                "together, so its members must elect the same way",
                "instances",
            )
        if not s.has("instances") or not members:
            s.error("a sync group needs instances")
        if name in names:
            s.error(f"duplicate sync group name {name!r}", "name")
        if name:
            names.add(name)
            groups.append(SyncGroupConfig(name, tuple(members), notify))
    return groups
