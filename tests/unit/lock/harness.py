"""A hand-driven network of ``LockCore``s for scripted scenarios (no randomness).

Messages to self are delivered synchronously (as ``LockNode`` does); everything else
waits in ``net.queue`` until a test delivers, drops, or holds it back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from agent.lock.lease import Flaw
from agent.lock.messages import Kind, Message
from agent.lock.node import LockCore
from agent.lock.timing import Timing

TIMING = Timing.from_lease(1.0)
Pred = Callable[[Message], bool]


class Net:
    def __init__(
        self,
        members: Iterable[str] = ("n1", "n2", "n3"),
        flaws: Iterable[Flaw] = (),
        leases: Iterable[str] = ("vip",),
        started_at: float = -10.0,
    ) -> None:
        self.members = tuple(members)
        self.flaws = frozenset(flaws)
        self.leases = tuple(leases)
        self.nodes = {
            n: LockCore(n, self.members, TIMING, 1, started_at, self.leases, flaws=self.flaws)
            for n in self.members
        }
        self.queue: list[Message] = []

    def restart(self, name: str, now: float, incarnation: int = 2) -> LockCore:
        core = LockCore(name, self.members, TIMING, incarnation, now, self.leases, flaws=self.flaws)
        self.nodes[name] = core
        return core

    def emit(self, node: str, msgs: list[Message], now: float) -> None:
        pending = list(msgs)
        for _ in range(64):
            if not pending:
                return
            local = [m for m in pending if m.receiver == node]
            self.queue += [m for m in pending if m.receiver != node]
            pending = []
            for m in local:
                pending += self.nodes[node].handle(m, now)
        raise AssertionError("self-delivery did not converge")

    def take(self, pred: Pred) -> list[Message]:
        got = [m for m in self.queue if pred(m)]
        self.queue = [m for m in self.queue if not pred(m)]
        return got

    def deliver(self, pred: Pred, now: float) -> int:
        msgs = self.take(pred)
        for m in msgs:
            self.emit(m.receiver, self.nodes[m.receiver].handle(m, now), now)
        return len(msgs)

    def settle(self, now: float, pred: Pred = lambda m: True, rounds: int = 10) -> None:
        for _ in range(rounds):
            if not self.deliver(pred, now):
                return

    def tick(self, node: str, now: float) -> None:
        self.emit(node, self.nodes[node].tick(now), now)

    def campaign(self, node: str, now: float, priority: int | None = None) -> None:
        self.emit(node, self.nodes[node].campaign("vip", now, priority), now)

    def holders(self, now: float, lease: str = "vip") -> list[str]:
        return [n for n, c in self.nodes.items() if c.is_holder(lease, now)]

    def drop_announces(self) -> None:
        self.take(lambda m: m.kind is Kind.ANNOUNCE)


def kind(k: Kind, *, to: str | None = None, frm: str | None = None) -> Pred:
    return lambda m: (
        m.kind is k and (to is None or m.receiver == to) and (frm is None or m.sender == frm)
    )


def acquire(net: Net, node: str, now: float) -> float:
    """Make ``node`` the holder on a healthy network; returns the time it happened."""
    net.campaign(node, now, priority=255)
    t = now
    for _ in range(40):
        t += 0.05
        net.tick(node, t)
        net.settle(t)
        if net.nodes[node].is_holder("vip", t):
            return t
    raise AssertionError(f"{node} did not acquire")
