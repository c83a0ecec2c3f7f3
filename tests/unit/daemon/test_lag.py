"""agent.daemon.lag: which wakes are reported, and how often (an injected clock)."""

from __future__ import annotations

import pytest

from agent.config import parse_config
from agent.daemon.lag import DEFAULT_THRESHOLD, LagLog, lag_threshold

LOCK = """\
lock:
  cluster: c
  listen: 10.0.0.11:6741
  peers: {director1: 10.0.0.11:6741, director2: 10.0.0.12:6741, witness1: 10.0.0.13:6741}
  key_file: /etc/lvs-agent/cluster.key
  lease: LEASE
"""


def instance(name: str, vrid: int, advert: str, quorum: bool = False) -> str:
    election = ", election: quorum" if quorum else ""
    return (
        f"  - {{name: {name}, interface: eth0, vrid: {vrid}, virtual_ips: [192.0.2.{vrid}],"
        f" advert_interval: {advert}{election}}}\n"
    )


def test_without_vrrp_the_default_threshold() -> None:
    assert lag_threshold(parse_config("virtual_servers: []\n")) == DEFAULT_THRESHOLD


def test_half_the_shortest_advert_interval() -> None:
    text = "vrrp_instances:\n" + instance("a", 1, "1s") + instance("b", 2, "100ms")
    assert lag_threshold(parse_config(text)) == pytest.approx(0.05)


@pytest.mark.parametrize(("lease", "expected"), [("200ms", 0.025), ("2s", 0.1)])
def test_the_lease_guard_counts_when_a_quorum_instance_runs(lease: str, expected: float) -> None:
    # the lock's guard (agent.lock.timing): 50 ms at 200 ms, 200 ms at 2 s; half is reported
    text = LOCK.replace("LEASE", lease) + "vrrp_instances:\n" + instance("a", 1, "1s", True)
    assert lag_threshold(parse_config(text)) == pytest.approx(expected)


def test_the_lease_guard_does_not_count_without_a_quorum_instance() -> None:
    text = LOCK.replace("LEASE", "200ms") + "vrrp_instances:\n" + instance("a", 1, "1s")
    assert lag_threshold(parse_config(text)) == pytest.approx(0.5)


def test_only_wakes_later_than_the_threshold_are_reported() -> None:
    log = LagLog(threshold=0.05, every=10.0)
    assert log.late(0.05, now=0.0) is None
    line = log.late(0.2, now=1.0)
    assert line is not None and "200 ms late" in line and "50 ms" in line


def test_one_line_per_period_with_what_was_not_reported_meanwhile() -> None:
    log = LagLog(threshold=0.05, every=10.0)
    assert log.late(0.1, now=0.0) is not None
    assert log.late(0.3, now=1.0) is None
    assert log.late(0.2, now=9.9) is None
    line = log.late(0.06, now=10.0)
    assert line is not None and "2 more since the last report, worst 300 ms" in line
    # the count starts over after a report
    assert log.late(0.5, now=10.5) is None
    line = log.late(0.06, now=20.0)
    assert line is not None and "1 more since the last report, worst 500 ms" in line
