"""The event loop's CPU priority: ``node.realtime_priority`` (keepalived's ``vrrp_rt_priority``).

VRRP adverts, lease renewals, the fence and health checks all wait for the one event
loop. At normal priority the loop queues for a CPU behind whatever else is runnable:
the configuration worker parsing a reload or reconciling a large table, the worker
thread planning, the other processes of the host. With ``node.realtime_priority: N`` the
loop's thread runs at ``SCHED_RR`` priority N and preempts all of them whenever it
wakes; it sleeps between events, so it takes little. It does not shorten the loop's
waits for the interpreter lock: while the worker thread holds it (planning a
reload, a small table's reconcile), the loop still waits for that thread, which runs at
normal priority.

Only the loop's thread: the policy is set with ``SCHED_RESET_ON_FORK``, so every thread
and process started after it (the worker thread, the configuration worker, the
fence, exec checks, notify and quorum commands) starts at normal priority. Threads
started before it (the metrics listener) keep theirs. The kernel's real-time
throttling (``kernel.sched_rt_runtime_us``, by default 95 % of each second) bounds
what a runaway loop could take, and systemd's watchdog ends a wedged one.

Needs ``CAP_SYS_NICE``, or ``RLIMIT_RTPRIO`` of at least N, and no seccomp filter
against real-time policies (the packaged unit's ``RestrictRealtime=yes``; README,
"Real-time priority", has the drop-in). A refusal is logged with its cause, counted
(``lvs_agent_errors_total{kind="scheduling"}``) and the loop runs at normal priority:
degrade, don't die. A reload applies a changed value; removing the key puts the loop
back to normal priority, but only if the agent raised it (a priority given by
systemd's ``CPUSchedulingPolicy=`` or ``chrt`` is left as it is).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

log = logging.getLogger("lvs-agent")

def describe(policy: int, priority: int) -> str:
    base = policy & ~os.SCHED_RESET_ON_FORK
    names = {os.SCHED_OTHER: "SCHED_OTHER", os.SCHED_FIFO: "SCHED_FIFO", os.SCHED_RR: "SCHED_RR"}
    name = names.get(base, f"policy {base}")
    return name if base == os.SCHED_OTHER else f"{name} {priority}"


class LoopPriority:
    """Sets the calling thread's (the loop's) scheduling for ``node.realtime_priority``.

    ``set_scheduler`` and ``get_scheduler`` are ``os.sched_setscheduler``/``getscheduler``
    for the calling thread (tests pass fakes)."""

    def __init__(
        self,
        on_error: Callable[[], None],
        set_scheduler: Callable[[int, int], None] | None = None,
        get_scheduler: Callable[[], tuple[int, int]] | None = None,
    ) -> None:
        self.on_error = on_error
        self._set = set_scheduler or _set_scheduler
        self._get = get_scheduler or _get_scheduler
        self.raised: int | None = None  # the priority this agent set, None: it set none

    def apply(self, priority: int | None) -> bool:
        """Run the loop at ``priority`` (None: as started). False if it was refused."""
        if priority == self.raised:
            return True
        if priority is None:
            # Back to normal only from what this agent set; what the service manager
            # gave the process is its to change.
            try:
                self._set(os.SCHED_OTHER, 0)
            except OSError as exc:
                log.error(
                    "realtime_priority removed, but the loop stays at %s: %s", self._now(), exc
                )
                self.on_error()
                return False
            self.raised = None
            log.info("event loop back at normal priority (SCHED_OTHER)")
            return True
        try:
            self._set(os.SCHED_RR | os.SCHED_RESET_ON_FORK, priority)
        except OSError as exc:
            log.error(
                "node.realtime_priority %d: the event loop cannot run at SCHED_RR (%s); it runs "
                "at %s. It needs CAP_SYS_NICE or RLIMIT_RTPRIO >= %d, and no RestrictRealtime= "
                "(see README, Real-time priority)",
                priority,
                exc.strerror or exc,
                self._now(),
                priority,
            )
            self.on_error()
            return False
        self.raised = priority
        log.info(
            "event loop at SCHED_RR %d; the threads and processes it starts at normal priority",
            priority,
        )
        return True

    def _now(self) -> str:
        try:
            return describe(*self._get())
        except OSError:
            return "an unknown priority"


def _set_scheduler(policy: int, priority: int) -> None:
    os.sched_setscheduler(0, policy, os.sched_param(priority))


def _get_scheduler() -> tuple[int, int]:
    return os.sched_getscheduler(0), os.sched_getparam(0).sched_priority
