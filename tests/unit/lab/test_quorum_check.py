"""The nemesis checker of agent.lab.quorum, on synthetic address events: it must see a
double holder (a killed holder's leftover VIP included: its fence deletes it at once),
excuse a paused node's leftover VIP (residual overlap), and compute availability over
the time a majority was up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.lab.addrwatch import AddressEvent
from agent.lab.quorum import Fault, QuorumSite

VIP = "192.0.2.100"


class FakeWatch:
    def __init__(self, events: list[AddressEvent]) -> None:
        self.events = events

    def snapshot(self) -> list[AddressEvent]:
        return list(self.events)


class FakeLab:
    directors = 3


def site(events: list[tuple[float, str, bool]], faults: list[Fault]) -> QuorumSite:
    watch: Any = FakeWatch([AddressEvent(t, n, added, VIP, 24, 2) for t, n, added in events])
    lab: Any = FakeLab()
    s = QuorumSite(lab, watch, Path("/nonexistent"))
    s.faults = faults
    return s


def test_two_running_holders_is_a_failure() -> None:
    s = site([(1.0, "d1", True), (5.0, "d2", True), (5.5, "d1", False)], [])
    report = s.check(0.0, 10.0)
    assert [(a, b) for a, b, _ in report.double] == [(5.0, 5.5)]
    assert report.residual == []


def test_killed_holders_leftover_vip_is_a_double_holder() -> None:
    events = [(1.0, "d1", True), (3.1, "d2", True), (3.4, "d1", False)]
    report = site(events, [Fault("kill", "d1", 2.0, 6.0)]).check(0.0, 10.0)
    assert [(a, b) for a, b, _ in report.double] == [(3.1, 3.4)]
    assert report.residual == []


def test_paused_holders_leftover_vip_is_residual_not_double() -> None:
    events = [(1.0, "d1", True), (3.1, "d2", True), (3.4, "d1", False)]  # fence at hold end
    report = site(events, [Fault("pause", "d1", 2.0, 6.0)]).check(0.0, 10.0)
    assert report.double == []
    assert [(a, b) for a, b, _ in report.residual] == [(3.1, 3.4)]
    assert abs(report.residual_max - 0.3) < 1e-9


def test_resumed_node_still_holding_after_grace_is_a_failure() -> None:
    events = [(1.0, "d1", True), (3.0, "d2", True), (6.0, "d1", False)]
    report = site(events, [Fault("pause", "d1", 2.0, 4.0)]).check(0.0, 10.0, grace=0.5)
    assert [(a, b) for a, b, _ in report.double] == [(4.5, 6.0)]
    assert [(a, b) for a, b, _ in report.residual] == [(3.0, 4.5)]


def test_availability_counts_only_time_with_a_majority() -> None:
    events = [(0.0, "d1", True), (4.0, "d1", False), (6.0, "d2", True)]
    faults = [Fault("partition", "d1", 4.0, 8.0), Fault("partition", "d3", 8.0, 10.0)]
    report = site(events, faults).check(0.0, 10.0)
    # majority all the time (one node down at most); holder 0-4 and 6-10
    assert report.majority_time == 10.0 and report.holder_time == 8.0
    assert report.availability == 0.8
    # two down: no majority, not counted
    both = [Fault("partition", "d1", 4.0, 8.0), Fault("partition", "d3", 5.0, 10.0)]
    report = site(events, both).check(0.0, 10.0)
    assert report.majority_time == 7.0 and report.holder_time == 6.0  # 5..8 not counted


def test_paused_nodes_leftover_outliving_its_resume_is_residual_up_to_the_fence() -> None:
    # paused at 2.0, resumed at 2.2 (grace ends 2.7); the VIP goes at 3.2
    events = [(1.0, "d1", True), (2.9, "d2", True), (3.2, "d1", False)]
    report = site(events, [Fault("pause", "d1", 2.0, 2.2)]).check(0.0, 10.0)
    assert report.double == [] and [(a, b) for a, b, _ in report.residual] == [(2.9, 3.2)]
    # ... but not beyond ceil(lease) + 0.5 s after the fault
    events = [(1.0, "d1", True), (2.9, "d2", True), (4.0, "d1", False)]
    report = site(events, [Fault("pause", "d1", 2.0, 2.2)]).check(0.0, 10.0)
    assert [(a, b) for a, b, _ in report.double] == [(3.5, 4.0)]
