"""An in-memory IPVS table with the kernel's semantics, for unit tests only."""

from __future__ import annotations

import errno
from collections.abc import Sequence
from dataclasses import dataclass, replace

from agent.ipvs.model import (
    AddDest,
    AddService,
    DelDest,
    DelService,
    EditDest,
    EditService,
    KernelDest,
    KernelService,
    KernelTable,
    Op,
    SetTimeouts,
    Timeouts,
)


@dataclass
class FakeError:
    errno: int
    what: str

    def __str__(self) -> str:
        return f"{self.what}: {errno.errorcode[self.errno]}"


class FakeKernel:
    def __init__(self, table: KernelTable | None = None, timeouts: Timeouts | None = None) -> None:
        self.table: KernelTable = dict(table or {})
        self.timeouts = timeouts or Timeouts(900, 120, 300)
        self.writes: list[Op] = []
        self.dumps = 0

    def dump(self) -> KernelTable:
        self.dumps += 1
        return {k: KernelService(v.service, dict(v.dests), v.stats) for k, v in self.table.items()}

    def get_timeouts(self) -> Timeouts:
        return self.timeouts

    def apply(self, ops: Sequence[Op]) -> list[FakeError | None]:
        return [self._one(op) for op in ops]

    def _one(self, op: Op) -> FakeError | None:
        self.writes.append(op)
        t = self.table
        if isinstance(op, AddService):
            if op.service.key in t:
                return FakeError(errno.EEXIST, str(op))
            t[op.service.key] = KernelService(op.service, {})
        elif isinstance(op, EditService):
            if op.service.key not in t:
                return FakeError(errno.ESRCH, str(op))
            t[op.service.key] = replace(t[op.service.key], service=op.service)
        elif isinstance(op, DelService):
            if op.key not in t:
                return FakeError(errno.ESRCH, str(op))
            del t[op.key]
        elif isinstance(op, AddDest):
            svc = t.get(op.service)
            if svc is None:
                return FakeError(errno.ESRCH, str(op))
            if op.dest.key in svc.dests:
                return FakeError(errno.EEXIST, str(op))
            svc.dests[op.dest.key] = KernelDest(op.dest)
        elif isinstance(op, EditDest):
            svc = t.get(op.service)
            if svc is None or op.dest.key not in svc.dests:
                return FakeError(errno.ENOENT, str(op))
            svc.dests[op.dest.key] = replace(svc.dests[op.dest.key], dest=op.dest)
        elif isinstance(op, DelDest):
            svc = t.get(op.service)
            if svc is None or op.dest not in svc.dests:
                return FakeError(errno.ENOENT, str(op))
            del svc.dests[op.dest]
        elif isinstance(op, SetTimeouts):
            n = op.timeouts
            self.timeouts = Timeouts(
                n.tcp or self.timeouts.tcp,
                n.tcp_fin or self.timeouts.tcp_fin,
                n.udp or self.timeouts.udp,
            )
        return None
