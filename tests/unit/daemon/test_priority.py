"""``node.realtime_priority``: the loop's thread at SCHED_RR with reset-on-fork, a
refusal logged and counted (the loop runs on), removal undoing only what the agent set."""

from __future__ import annotations

import errno
import logging
import os

import pytest

from agent.config import ConfigError, parse_config
from agent.daemon.priority import LoopPriority


class FakeScheduler:
    def __init__(self, refuse: bool = False) -> None:
        self.policy, self.priority = os.SCHED_OTHER, 0
        self.refuse = refuse
        self.calls: list[tuple[int, int]] = []

    def set(self, policy: int, priority: int) -> None:
        self.calls.append((policy, priority))
        if self.refuse and policy != os.SCHED_OTHER:
            raise PermissionError(errno.EPERM, "Operation not permitted")
        self.policy, self.priority = policy, priority

    def get(self) -> tuple[int, int]:
        return self.policy, self.priority


def make(sched: FakeScheduler) -> tuple[LoopPriority, list[int]]:
    errors: list[int] = []
    return LoopPriority(lambda: errors.append(1), sched.set, sched.get), errors


def test_nothing_configured_touches_nothing() -> None:
    sched = FakeScheduler()
    priority, errors = make(sched)
    assert priority.apply(None)
    assert sched.calls == [] and errors == []


def test_sets_round_robin_with_reset_on_fork_and_logs_it(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="lvs-agent")
    sched = FakeScheduler()
    priority, errors = make(sched)
    assert priority.apply(10)
    assert sched.calls == [(os.SCHED_RR | os.SCHED_RESET_ON_FORK, 10)]
    assert "event loop at SCHED_RR 10" in caplog.text
    assert priority.apply(10) and len(sched.calls) == 1  # unchanged: no call
    assert priority.apply(20)  # a reload with another value
    assert sched.calls[-1] == (os.SCHED_RR | os.SCHED_RESET_ON_FORK, 20)
    assert priority.apply(None)  # the key removed: back to normal
    assert sched.calls[-1] == (os.SCHED_OTHER, 0)
    assert errors == []


def test_a_refusal_is_logged_counted_and_the_loop_runs_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sched = FakeScheduler(refuse=True)
    priority, errors = make(sched)
    assert not priority.apply(10)
    assert errors == [1]
    assert priority.raised is None
    line = caplog.records[-1].getMessage()
    assert "node.realtime_priority 10" in line and "Operation not permitted" in line
    assert "runs at SCHED_OTHER" in line and "CAP_SYS_NICE" in line
    # removing the key then changes nothing: the agent raised nothing
    assert priority.apply(None)
    assert sched.calls == [(os.SCHED_RR | os.SCHED_RESET_ON_FORK, 10)]


def test_a_priority_given_from_outside_is_left_alone() -> None:
    sched = FakeScheduler()
    sched.policy, sched.priority = os.SCHED_RR, 30  # chrt or systemd CPUSchedulingPolicy=
    priority, _ = make(sched)
    assert priority.apply(None)
    assert sched.calls == []


def test_the_real_call_on_this_thread_round_trips() -> None:
    # Lowering to SCHED_OTHER needs no privilege: the real system calls, on this thread.
    priority = LoopPriority(lambda: None)
    priority.raised = 1  # as if it had been raised: removal must call the kernel
    assert priority.apply(None)
    assert os.sched_getscheduler(0) == os.SCHED_OTHER


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("0", "must be 1..99, got 0"), ("100", "must be 1..99, got 100"), ("high", "integer")],
)
def test_config_range(value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(f"node: {{name: d1, realtime_priority: {value}}}\n", "c.yaml")
    problems = [str(p) for p in info.value.problems]
    assert any("node.realtime_priority" in p and fragment in p for p in problems), problems


def test_config_value() -> None:
    assert parse_config("node: {realtime_priority: 10}\n").realtime_priority == 10
    assert parse_config("node: {name: d1}\n").realtime_priority is None
