"""A lock node: several named leases multiplexed over one transport.

``LockCore`` works on ``Message`` objects (the simulator drives it directly);
``LockNode`` wraps it with the wire codec so that the shell only moves bytes:
``receive(datagram, now)`` / ``tick(now)`` / commands in, ``[(peer, datagram)]`` out,
plus ``next_deadline()`` for the one timer the shell keeps.  Messages a node sends to
itself (its own acceptor) are delivered in-process, synchronously, never through the
codec (which refuses anything that claims to come from us: reflection).

Owns: the set of leases, the restart quarantine (one per process start), per-node
counters and liveness of peers (for "quorum reachable").
Must never: open sockets, read clocks, sleep, or persist anything — the incarnation
number is an input, its storage is ``incarnation.py``'s.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from agent.lock.lease import Counters, Flaw, Lease, LeaseEvent, LeaseStatus
from agent.lock.messages import Kind, Message
from agent.lock.timing import Timing
from agent.lock.wire import WireCodec, WireError

MAX_LOCAL_ROUNDS: Final = 16  # bound on in-process self-delivery chains per input
MAX_LEASES: Final = 256  # leases an acceptor learns from authenticated peers, at most
# Messages that may name a lease this node has not declared: an acceptor (a witness
# declares none) learns the name from them.  Replies to proposals are never for those.
_LEARNS_LEASE: Final = frozenset({Kind.PREPARE, Kind.ACCEPT, Kind.RELEASE, Kind.ANNOUNCE})


@dataclass(frozen=True, slots=True)
class LockStatus:
    """Node-level snapshot: one ``LeaseStatus`` per lease plus shared facts."""

    node_id: str
    incarnation: int
    quarantined: bool
    quorum_reachable: bool
    reachable: tuple[str, ...]
    leases: tuple[LeaseStatus, ...]


class LockCore:
    """Message-level node: routes each message to its named ``Lease``.

    ``now`` is this node's monotonic time; ``started_at`` is the ``now`` of process start,
    and nothing is answered or proposed before ``started_at + timing.quarantine`` (R6).
    """

    def __init__(
        self,
        node_id: str,
        members: Iterable[str],
        timing: Timing,
        incarnation: int,
        started_at: float,
        leases: Iterable[str],
        *,
        flaws: frozenset[Flaw] = frozenset(),
        preempt: bool = False,
        poll_interval: float | None = None,
    ) -> None:
        self.node_id = node_id
        self.members: tuple[str, ...] = tuple(sorted(set(members)))
        if node_id not in self.members:
            raise ValueError(f"node {node_id!r} is not a member")
        self.timing = timing
        self.incarnation = incarnation
        quarantine = 0.0 if Flaw.NO_QUARANTINE in flaws else timing.quarantine
        self.quiet_until = started_at + quarantine
        self.counters = Counters()
        self._flaws = flaws
        self._preempt = preempt
        self._poll_interval = poll_interval
        self._leases: dict[str, Lease] = {}
        self._heard: dict[str, float] = {}
        for name in leases:
            self.add_lease(name)

    def add_lease(self, name: str) -> Lease:
        """Declare a lease name (one per VRRP instance / sync group)."""
        if name in self._leases:
            return self._leases[name]
        lease = Lease(
            name,
            self.node_id,
            self.members,
            self.timing,
            self.incarnation,
            self.quiet_until,
            self.counters,
            flaws=self._flaws,
            preempt=self._preempt,
            poll_interval=self._poll_interval,
        )
        self._leases[name] = lease
        return lease

    def lease(self, name: str) -> Lease:
        return self._leases[name]

    @property
    def lease_names(self) -> tuple[str, ...]:
        return tuple(self._leases)

    # ------------------------------------------------------------------ inputs

    def handle(self, msg: Message, now: float) -> list[Message]:
        """One authenticated message addressed to us (may come from ourselves)."""
        self.counters.count_in(msg.kind)
        lease = self._leases.get(msg.lease)
        if lease is None:
            # A fresh lease is safe to answer for: this process never promised or
            # accepted anything under that name, and the restart quarantine (shared by
            # every lease) covers what an earlier incarnation may have.
            if msg.kind not in _LEARNS_LEASE or len(self._leases) >= MAX_LEASES:
                self.counters.drop("unknown-lease")
                return []
            lease = self.add_lease(msg.lease)
        if msg.sender != self.node_id:
            self._heard[msg.sender] = now
        out = lease.handle(msg, now)
        self.counters.count_out(out)
        return out

    def tick(self, now: float) -> list[Message]:
        out: list[Message] = []
        for lease in self._leases.values():
            out += lease.tick(now)
        self.counters.count_out(out)
        return out

    def next_deadline(self) -> float | None:
        best: float | None = None
        for lease in self._leases.values():
            t = lease.next_deadline()
            if t is not None and (best is None or t < best):
                best = t
        return best

    # ------------------------------------------------------------------ commands

    def campaign(self, lease: str, now: float, priority: int | None = None) -> list[Message]:
        return self._counted(self._leases[lease].campaign(now, priority))

    def withdraw(self, lease: str, now: float) -> list[Message]:
        return self._counted(self._leases[lease].withdraw(now))

    def release(self, lease: str, now: float, holdoff: float | None = None) -> list[Message]:
        return self._counted(self._leases[lease].release(now, holdoff))

    def set_priority(self, lease: str, now: float, priority: int) -> list[Message]:
        return self._counted(self._leases[lease].set_priority(now, priority))

    def _counted(self, out: list[Message]) -> list[Message]:
        self.counters.count_out(out)
        return out

    # ------------------------------------------------------------------ queries

    def is_holder(self, lease: str, now: float) -> bool:
        return self._leases[lease].is_holder(now)

    def drain_events(self) -> list[LeaseEvent]:
        events: list[LeaseEvent] = []
        for lease in self._leases.values():
            if lease.events:
                events += lease.events
                lease.events.clear()
        return events

    def status(self, now: float) -> LockStatus:
        horizon = now - 2.0 * self.timing.lease
        reachable = tuple(
            m for m in self.members if m == self.node_id or self._heard.get(m, -1e300) >= horizon
        )
        return LockStatus(
            node_id=self.node_id,
            incarnation=self.incarnation,
            quarantined=now < self.quiet_until,
            quorum_reachable=len(reachable) > len(self.members) // 2,
            reachable=reachable,
            leases=tuple(lease.status(now) for lease in self._leases.values()),
        )


Datagram = tuple[str, bytes]


class LockNode:
    """Bytes-level node for the shell: ``LockCore`` + ``WireCodec`` + self-delivery."""

    def __init__(self, core: LockCore, codec: WireCodec) -> None:
        self.core = core
        self.codec = codec

    @property
    def node_id(self) -> str:
        return self.core.node_id

    def receive(self, data: bytes, now: float) -> list[Datagram]:
        """A datagram from the socket.  Refused ones are counted and never answered."""
        try:
            msg = self.codec.decode(data)
        except WireError as exc:
            self.core.counters.drop(exc.reason)
            return []
        return self._route(self.core.handle(msg, now), now)

    def tick(self, now: float) -> list[Datagram]:
        return self._route(self.core.tick(now), now)

    def next_deadline(self) -> float | None:
        return self.core.next_deadline()

    def campaign(self, lease: str, now: float, priority: int | None = None) -> list[Datagram]:
        return self._route(self.core.campaign(lease, now, priority), now)

    def withdraw(self, lease: str, now: float) -> list[Datagram]:
        return self._route(self.core.withdraw(lease, now), now)

    def release(self, lease: str, now: float, holdoff: float | None = None) -> list[Datagram]:
        return self._route(self.core.release(lease, now, holdoff), now)

    def set_priority(self, lease: str, now: float, priority: int) -> list[Datagram]:
        return self._route(self.core.set_priority(lease, now, priority), now)

    def is_holder(self, lease: str, now: float) -> bool:
        return self.core.is_holder(lease, now)

    def status(self, now: float) -> LockStatus:
        return self.core.status(now)

    def drain_events(self) -> list[LeaseEvent]:
        return self.core.drain_events()

    def _route(self, msgs: list[Message], now: float) -> list[Datagram]:
        out: list[Datagram] = []
        pending = msgs
        # Our own acceptor answers in-process; its answers may be addressed to us again
        # (PROMISE → ACCEPT → ACCEPTED), so loop — bounded, since each round is a protocol
        # step and a chain longer than a few steps would be a bug.
        for _ in range(MAX_LOCAL_ROUNDS):
            local: list[Message] = []
            for m in pending:
                if m.receiver == self.core.node_id:
                    local.append(m)
                else:
                    out.append((m.receiver, self.codec.encode(m)))
            if not local:
                break
            pending = []
            for m in local:
                pending += self.core.handle(m, now)
        else:
            self.core.counters.drop("local-loop-bound")
        return out
