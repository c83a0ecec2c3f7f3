"""VRRP for the agent: elect one master per virtual router and give it the VIPs.

VRRPv3 (RFC 5798, IPv4 and IPv6) and VRRPv2 (RFC 3768, IPv4), interoperable with
keepalived 2.2 on the wire and in election behaviour.

Public surface
--------------
Configuration (built by the config loader; field names are the YAML keys):
    ``VrrpConfig``, ``VrrpInstanceConfig``, ``GarpConfig``, ``TrackInterfaceConfig``,
    ``TrackScriptConfig``, ``SyncGroupConfig``

Running it (the daemon)::

    from agent.vrrp.service import VrrpService, VrrpStartError   # asyncio et al.: not
    service = VrrpService(config)                                # imported by this package
    await service.start()              # raises VrrpStartError if it cannot run here
    ...                                # service.states(), service.counters(),
    await service.stop()               # service.socket_counters() for metrics

``start()`` removes configured VIPs left by a crashed run, opens one raw socket per
(interface, family), watches tracked links (netlink notifications, and a poll),
runs track scripts, and starts every instance; ``stop()`` removes the VIPs and
sends priority 0. Everything runs on the
caller's asyncio loop; no threads except one netlink worker per interface, and with
``election: quorum`` one fence child process (``fence``) that deletes the VIPs of a
holder that stopped cooperating at its hold end.

Metrics: ``InstanceCounters`` per instance (``state`` uses keepalived's numbers,
``State``: 0 init, 1 backup, 2 master, 3 fault), ``transport.SocketCounters`` per
socket (packets that match no instance, receive errors).

The pure core, for tests and tools: ``machine`` (``VrrpMachine``, events, actions,
the ``TRANSITIONS`` table), ``sync`` (``SyncGroup``), ``trackers``, ``packet``
(codec, ``VrrpDecodeError``). Importing this package is cheap: pyroute2 and psutil
are imported only when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.lazy import lazy_names

if TYPE_CHECKING:
    from agent.vrrp.config import (
        GarpConfig,
        SyncGroupConfig,
        TrackInterfaceConfig,
        TrackScriptConfig,
        VrrpConfig,
        VrrpInstanceConfig,
    )
    from agent.vrrp.counters import InstanceCounters
    from agent.vrrp.machine import State
    from agent.vrrp.packet import VrrpDecodeError

# Imported on first use: every command reads the configuration, which needs only the
# configuration classes, not the state machine and the codec.
__getattr__ = lazy_names(
    __name__,
    {
        "GarpConfig": "config",
        "SyncGroupConfig": "config",
        "TrackInterfaceConfig": "config",
        "TrackScriptConfig": "config",
        "VrrpConfig": "config",
        "VrrpInstanceConfig": "config",
        "InstanceCounters": "counters",
        "State": "machine",
        "VrrpDecodeError": "packet",
    },
)


__all__ = [
    "GarpConfig",
    "InstanceCounters",
    "State",
    "SyncGroupConfig",
    "TrackInterfaceConfig",
    "TrackScriptConfig",
    "VrrpConfig",
    "VrrpDecodeError",
    "VrrpInstanceConfig",
]
