"""The common virtual-server entry, validated without the general reader.

A generated file repeats one shape thousands of times: name, address, port,
protocol, scheduler, forwarding, the virtual server's health keys (read by the
loader's own rules, given as ``health``) and real servers with address, port,
weight and thresholds. ``virtual_server`` reads exactly that shape straight from the nodes,
with the same rules as ``agent.config.loader``, and returns None for anything
else — another key, a value it would have to reject, a quoted number, a
duplicate — so that the general reader, which words every problem with its line
and key path, reads that entry instead. It never reports a problem itself and
accepts nothing the general reader would refuse; tests/unit/config/test_fast_readers.py
holds the two readers to the same results. The address rules both readers apply
(``unicast_address``, ``address_family``; ``unicast_item`` words a bad one as a
problem on its item for the general readers) live here.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Final

from agent.config.model import (
    FORWARDING_METHODS,
    PROTOCOLS,
    SCHEDULERS,
    RealServer,
    Tunnel,
    VirtualServer,
)
from agent.config.reader import (
    STR_TAG,
    Item,
    MappingNode,
    Node,
    ScalarNode,
    SequenceNode,
    null_or_bool,
    plain_decimal,
)
from agent.health.config import Check, PoolPolicy

_AF_INET: Final = socket.AF_INET
_AF_INET6: Final = socket.AF_INET6
_NAME_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
_FORWARDING: Final = frozenset(FORWARDING_METHODS)
_PROTOCOLS: Final = frozenset(PROTOCOLS)
_SCHEDULERS: Final = frozenset(SCHEDULERS)
_NO_TUNNEL: Final = Tunnel()


#: what the loader passes to read a virtual server's health keys (``agent.config.health``):
#: their (key, value) node pairs in, (policy, checks) out, or None for anything it
#: would report a problem about
HealthReader = Callable[[list[tuple[Node, Node]], int], tuple[PoolPolicy, tuple[Check, ...]] | None]
HEALTH_KEYS: Final = frozenset(
    (
        "health_checks",
        "on_failure",
        "slow_start",
        "min_healthy",
        "quorum",
        "hysteresis",
        "sorry_server",
        "initial",
        "quorum_up",
        "quorum_down",
    )
)


def virtual_server(node: Node, health: HealthReader | None = None) -> VirtualServer | None:
    """The entry as the general reader would build it, or None: read it the general way.

    ``health`` reads the virtual server's health keys (without it, an entry that has
    any is declined); a real server's own ``health_checks`` are always declined.
    """
    if type(node) is not MappingNode:
        return None
    name = address = None
    port = 0
    protocol = "tcp"
    scheduler = "wlc"
    forwarding = "nat"
    servers: list[Node] | None = None
    seen: set[str] = set()
    health_pairs: list[tuple[Node, Node]] = []
    for key_node, value in node.value:
        if type(key_node) is not ScalarNode:
            return None
        key = key_node.value
        if key in seen:
            return None
        seen.add(key)
        if key in HEALTH_KEYS:
            if health is None:
                return None
            health_pairs.append((key_node, value))
            continue
        if key == "real_servers":
            if type(value) is not SequenceNode:
                return None
            servers = value.value
            continue
        text = _text(value)
        if text is None:
            return None
        if key == "name":
            if not text or len(text) > 64 or not _NAME_CHARS.issuperset(text):
                return None
            name = text
        elif key == "address":
            address = _address(text)
            if address is None:
                return None
        elif key == "port":
            port = _int(value, 1, 65535)
            if port < 0:
                return None
        elif key == "protocol":
            if text not in _PROTOCOLS:
                return None
            protocol = text
        elif key == "scheduler":
            if text not in _SCHEDULERS:
                return None
            scheduler = text
        elif key == "forwarding":
            if text not in _FORWARDING:
                return None
            forwarding = text
        else:
            return None
    if name is None or address is None or not port or servers is None:
        return None
    family = address_family(address)
    policy: PoolPolicy | None = None
    checks: tuple[Check, ...] = ()
    if health_pairs:
        assert health is not None
        read = health(health_pairs, port)
        if read is None:
            return None
        policy, checks = read
        sorry = policy.sorry_server
        if sorry is not None and forwarding != "tunnel" and address_family(sorry.address) != family:
            return None
    sources = [c for c in checks if c.source_address is not None]
    real_servers: list[RealServer] = []
    taken: set[tuple[str, int]] = set()
    for entry in servers:
        rs = _real_server(entry, port, forwarding, family, checks)
        if rs is None or (rs.address, rs.port) in taken:
            return None
        for c in sources:
            assert c.source_address is not None
            if address_family(c.source_address) != address_family(c.connect_address or rs.address):
                return None
        taken.add((rs.address, rs.port))
        real_servers.append(rs)
    if policy is not None:
        return VirtualServer(
            name=name,
            family=family,
            address=address,
            port=port,
            fwmark=0,
            protocol=protocol,
            scheduler=scheduler,
            real_servers=tuple(real_servers),
            line=node.line,
            health=policy,
        )
    return VirtualServer(
        name=name,
        family=family,
        address=address,
        port=port,
        fwmark=0,
        protocol=protocol,
        scheduler=scheduler,
        real_servers=tuple(real_servers),
        line=node.line,
    )


def _real_server(
    node: Node, vs_port: int, vs_forwarding: str, family: str, checks: tuple[Check, ...]
) -> RealServer | None:
    if type(node) is not MappingNode:
        return None
    address = None
    port = weight = upper = lower = -1
    forwarding = None
    for key_node, value in node.value:
        if type(key_node) is not ScalarNode:
            return None
        key = key_node.value
        if key == "address" and address is None:
            text = _text(value)
            address = _address(text) if text is not None else None
            if address is None:
                return None
        elif key == "port" and port < 0:
            port = _int(value, 1, 65535)
        elif key == "weight" and weight < 0:
            weight = _int(value, 0, 65535)
        elif key == "upper_threshold" and upper < 0:
            upper = _int(value, 0, 2**31 - 1)
        elif key == "lower_threshold" and lower < 0:
            lower = _int(value, 0, 2**31 - 1)
        elif key == "forwarding" and forwarding is None:
            forwarding = _text(value)
            if forwarding not in _FORWARDING:
                return None
        else:
            return None  # another key, or a key given twice
        if port == -2 or weight == -2 or upper == -2 or lower == -2:
            return None
    if address is None:
        return None
    forwarding = forwarding or vs_forwarding
    if address_family(address) != family and forwarding != "tunnel":
        return None
    if forwarding != "nat":
        if port >= 0 and port != vs_port:
            return None
        port = vs_port
    elif port < 0:
        port = vs_port
    weight = 1 if weight < 0 else weight
    upper = max(upper, 0)
    lower = max(lower, 0)
    if (lower and not upper) or (upper and lower > upper):
        return None
    return RealServer(
        address=address,
        port=port,
        weight=weight,
        upper_threshold=upper,
        lower_threshold=lower,
        forwarding=forwarding,
        tunnel=_NO_TUNNEL if forwarding == "tunnel" else None,
        line=node.line,
        checks=checks,
    )


def _text(node: Node) -> str | None:
    """A string value: quoted, or plain and not a word YAML reads as null or a boolean."""
    if type(node) is not ScalarNode:
        return None
    tag = node._tag
    if tag is None:
        return None if null_or_bool(node.value) else node.value
    return node.value if tag == STR_TAG else None


def _int(node: Node, lo: int, hi: int) -> int:
    """A plain decimal integer in lo..hi; -2 for anything else (the general reader decides)."""
    if type(node) is not ScalarNode or node._tag is not None:
        return -2
    text = node.value
    if not plain_decimal(text):
        return -2
    value = int(text)
    return value if lo <= value <= hi else -2


def _address(text: str) -> str | None:
    """Canonical spelling of a unicast address; None for anything else."""
    try:
        return unicast_address(text)
    except ValueError:
        return None


def address_family(address: str) -> str:
    """``ipv4`` or ``ipv6``, the config's family names, of a valid address."""
    return "ipv6" if ":" in address else "ipv4"


_V4_MAPPED_PREFIX: Final = bytes(10) + b"\xff\xff"


def unicast_address(text: str) -> str:
    """A unicast IPv4 or IPv6 address in canonical (inet_ntop) spelling.

    Both readers use it (the general one words the ValueError as a problem).
    inet_pton rather than ipaddress: this runs for every real server.
    """
    af = _AF_INET6 if ":" in text else _AF_INET
    try:
        packed = socket.inet_pton(af, text)
    except OSError:
        raise ValueError(f"{text!r} is not an IPv4 or IPv6 address") from None
    first = packed[0]
    if af == _AF_INET6:
        if first == 0xFE and packed[1] & 0xC0 == 0x80:
            # The kernel refuses a link-local real server (EINVAL) unless it is
            # one of the director's own: an address without its interface.
            raise ValueError(f"{text} is link-local: IPVS has no interface to scope it to")
        if packed[:12] == _V4_MAPPED_PREFIX:
            # The kernel takes it, but IPv4 packets never match an IPv6 service.
            v4 = socket.inet_ntop(_AF_INET, packed[12:])
            raise ValueError(f"{text} is an IPv4-mapped IPv6 address: write {v4}")
        unusable = first == 0xFF or not any(packed)
    else:
        # The kernel refuses these for a real server (EINVAL): 0.0.0.0/8 and
        # 255.255.255.255 are broadcast to inet_addr_type, 224/4 multicast.
        unusable = first == 0 or 224 <= first <= 239 or packed == b"\xff\xff\xff\xff"
    if unusable:
        raise ValueError(f"{text} cannot be used here (unspecified, multicast or broadcast)")
    return socket.inet_ntop(af, packed)


def unicast_item(item: Item | None) -> str | None:
    """``unicast_address`` for the general readers: the item's text, or a problem on it."""
    if item is None:
        return None
    text = item.as_str()
    if text is None:
        return None
    try:
        return unicast_address(text)
    except ValueError as exc:
        item.error(str(exc))
        return None
