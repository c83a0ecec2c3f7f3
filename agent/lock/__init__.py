"""Quorum lease lock (PaxosLease, with the corrections of "PaxosLease Revisited").

Only a node holding a lease granted by a majority of ``peers`` may own the VIPs of that
lease.  Design, rules and why they hold: docs/lock.md; where each rule lives: lease.py.

Public surface (for the daemon, the config loader and the CLI)
---------------------------------------------------------------
* ``LockConfig`` (config.py) — the ``lock:`` YAML section as a validated value;
  ``LockConfig.from_mapping(dict)``, ``.timing()``, ``.node_id``.
* ``start_lock(config, on_event=cb) -> LockTransport`` (transport.py) — loads the key
  file (must be chmod 600), bumps the persisted incarnation in ``config.state_dir``,
  binds ``listen``; the node is quarantined for ``Timing.quarantine`` seconds.
* ``LockTransport`` — ``campaign(lease, priority)``, ``withdraw(lease)``,
  ``release(lease, holdoff=None)``, ``set_priority(lease, p)``, ``is_holder(lease)``,
  ``status() -> LockStatus``, ``close()``.  It owns the one timer and the socket.
* Sans-I/O layers, for tests and tools: ``LockNode`` (datagrams in/out), ``LockCore``
  (``Message`` objects in/out, used by the simulator), ``Lease`` (one name).

How the daemon drives it
------------------------
1. At start: clear VIPs (a previous process may have died holding them), then
   ``tr = await start_lock(cfg, on_event=...)``; declare one lease per VRRP instance or
   sync group (``cfg.leases`` or ``tr.node.core.add_lease(name)``).
2. For each instance that wants MASTER: ``tr.campaign(name, vrrp_priority)``; when the
   instance becomes unhealthy: ``tr.withdraw(name)``; on SIGTERM or ``lvs-agent
   failover``: ``tr.release(name)`` (hold-off ``2·D_A`` so another node takes over).
3. ``on_event(LeaseEvent)``: ``acquired`` → may add VIPs (tag them with ``event.term``,
   the fencing number); ``lost`` / ``released`` → remove VIPs now.
4. Before any VIP-affecting action, ask ``tr.is_holder(name)`` (reads the clock once).
   Events are delivered by the single timer; ``is_holder`` is the authority.  Optionally
   add VIPs with a kernel valid lifetime ending at ``LeaseStatus.hold_until`` and refresh
   it on each renewal (backstop for a frozen machine), plus systemd ``WatchdogSec``;
   the VRRP service also arms a fence child process with ``tr.hold_until(name)`` that
   deletes the VIPs at the hold end (a frozen process) or at once (a dead one).
5. Metrics/status: ``tr.status()`` (per lease: holder, term, hold_until, known_holder,
   phase, acquisitions/losses/releases; per node: quorum_reachable, reachable peers,
   quarantined) and ``tr.node.core.counters`` (messages_in/out by type, dropped and
   refused by reason).

Nothing in this package except ``transport.py`` and ``incarnation.py`` performs I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.lock.config import Endpoint, LockConfig, LockConfigError, parse_endpoint
from agent.lock.incarnation import IncarnationError, bump_incarnation
from agent.lock.lease import Counters, Flaw, Lease, LeaseEvent, LeaseStatus
from agent.lock.messages import Ballot, Kind
from agent.lock.node import LockCore, LockNode, LockStatus
from agent.lock.timing import Timing, TimingError
from agent.lock.wire import KeyFileError, KeyRing, WireCodec, WireError

if TYPE_CHECKING:
    from agent.lock.transport import LockTransport, build_node, load_keyring, start_lock

# The asyncio transport is imported on first use: the configuration loader needs only
# LockConfig, and every command reads the configuration.
_TRANSPORT = frozenset({"LockTransport", "build_node", "load_keyring", "start_lock"})


def __getattr__(name: str) -> object:
    if name in _TRANSPORT:
        from agent.lock import transport

        return getattr(transport, name)
    raise AttributeError(f"module 'agent.lock' has no attribute {name!r}")


__all__ = [
    "Ballot",
    "Counters",
    "Endpoint",
    "Flaw",
    "IncarnationError",
    "KeyFileError",
    "KeyRing",
    "Kind",
    "Lease",
    "LeaseEvent",
    "LeaseStatus",
    "LockConfig",
    "LockConfigError",
    "LockCore",
    "LockNode",
    "LockStatus",
    "LockTransport",
    "Timing",
    "TimingError",
    "WireCodec",
    "WireError",
    "build_node",
    "bump_incarnation",
    "load_keyring",
    "parse_endpoint",
    "start_lock",
]
