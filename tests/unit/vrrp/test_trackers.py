"""keepalived tracking semantics: rise/fall, weights, FAULT, priority clamping."""

from __future__ import annotations

import pytest

from agent.vrrp.config import TrackInterfaceConfig, TrackScriptConfig
from agent.vrrp.machine import TrackingChanged
from agent.vrrp.trackers import InstanceTracking, ScriptTracker, effective_priority


def test_rise_and_fall_need_consecutive_results() -> None:
    t = ScriptTracker(TrackScriptConfig("chk", "true", rise=2, fall=3))
    assert t.ok
    assert [t.record(r) for r in (False, False, True, False, False)] == [False] * 5
    assert t.ok  # the success in the middle reset the count
    assert t.record(False) and not t.ok
    assert [t.record(r) for r in (True, False, True)] == [False, False, False]
    assert t.record(True) and t.ok


def test_init_fail_starts_failing() -> None:
    t = ScriptTracker(TrackScriptConfig("chk", "true", rise=2, init_fail=True))
    assert not t.ok
    assert not t.record(True)
    assert t.record(True) and t.ok


def test_timeout_defaults_to_interval() -> None:
    assert ScriptTracker(TrackScriptConfig("c", "true", interval=3.0)).timeout == 3.0
    assert ScriptTracker(TrackScriptConfig("c", "true", interval=3.0, timeout=1.0)).timeout == 1.0


@pytest.mark.parametrize(
    ("base", "delta", "expected"),
    [(100, 0, 100), (100, 200, 254), (100, -150, 1), (255, 0, 255), (255, 10, 255),
     (255, -1, 254), (254, 5, 254), (1, -1, 1)],
)
def test_effective_priority_is_clamped(base: int, delta: int, expected: int) -> None:
    assert effective_priority(base, delta) == expected


def test_weights_follow_keepalived() -> None:
    tracking = InstanceTracking(
        100,
        interfaces=[TrackInterfaceConfig("eth2", weight=10), TrackInterfaceConfig("eth3", -20)],
        scripts=[
            TrackScriptConfig("plus", "x", weight=5),
            TrackScriptConfig("minus", "x", weight=-30),
        ],
    )
    assert tracking.event() == TrackingChanged(115, False)  # positive weights while OK
    assert tracking.set_link("eth2", False)
    assert tracking.priority == 105
    assert tracking.set_link("eth3", False)
    assert tracking.priority == 85  # negative weight while failing
    assert tracking.record_script("minus", False)
    assert tracking.priority == 55
    assert not tracking.set_link("eth9", False)  # not tracked
    assert not tracking.fault


def test_weight_zero_means_fault() -> None:
    tracking = InstanceTracking(
        100,
        interfaces=[TrackInterfaceConfig("eth1")],
        scripts=[TrackScriptConfig("chk", "x", fall=2)],
    )
    assert not tracking.record_script("chk", False)
    assert not tracking.fault
    assert tracking.record_script("chk", False)
    assert tracking.event() == TrackingChanged(100, True)
    assert tracking.record_script("chk", True)
    assert not tracking.fault
    tracking.set_link("eth1", False)
    assert tracking.fault
