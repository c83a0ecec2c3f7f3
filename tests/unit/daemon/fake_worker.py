"""``python -m tests.unit.daemon.fake_worker``: the configuration worker process with an
in-memory IPVS table (tests.unit.ipvs.fake_kernel) instead of the kernel's.

With ``FAKE_WORKER_SLOW`` naming a file, each dump sleeps while that file exists (at
most 30 s): a reconcile that a test can stop half-way."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from agent.daemon.worker import main
from agent.ipvs.model import KernelTable
from tests.unit.ipvs.fake_kernel import FakeKernel


class SlowKernel(FakeKernel):
    def dump(self) -> KernelTable:
        slow = os.environ.get("FAKE_WORKER_SLOW")
        deadline = time.monotonic() + 30
        while slow and Path(slow).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return super().dump()


_table: KernelTable = {}  # the process's one table: a reopened kernel keeps it


def kernel() -> SlowKernel:
    k = SlowKernel()
    k.table = _table
    return k


if __name__ == "__main__":
    sys.exit(main(kernel))
