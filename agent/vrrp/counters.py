"""Per-instance VRRP counters, as plain attributes the metrics collector reads.

This module owns the record only. The state machine updates it as it handles
events (so the numbers are exactly what the protocol core saw); the socket shell
adds what only it can know (send errors). Nothing here exports, resets or locks:
everything runs on one event loop thread.

``state`` uses keepalived's numbering (0 init, 1 backup, 2 master, 3 fault) so
dashboards built for keepalived's exporters read the same values.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class InstanceCounters:
    state: int = 0
    effective_priority: int = 0
    # Keyed by target state name in lower case: "init", "backup", "master", "fault".
    transitions: Counter[str] = field(default_factory=Counter)
    adverts_sent: int = 0
    adverts_received: int = 0
    priority_zero_sent: int = 0
    priority_zero_received: int = 0
    # Keyed by ``packet.Reason`` value: "ttl", "checksum", "auth", ...
    invalid: Counter[str] = field(default_factory=Counter)
    # Our own adverts seen again (multicast loop, duplicate address): not counted as invalid.
    own_adverts: int = 0
    send_errors: int = 0  # adverts the socket failed to send
    vip_errors: int = 0  # netlink / AF_PACKET failures adding, removing, announcing VIPs
    # v3 adverts whose address list differed from ours (counted, not dropped), and how
    # many peers send such adverts now (a gauge: 0 once they agree or fall silent).
    address_mismatches: int = 0
    address_mismatch_peers: int = 0
