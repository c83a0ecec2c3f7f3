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


def test_where_names_the_innermost_frames_first() -> None:
    import sys

    from agent.daemon.lag import where

    def inner() -> str:
        return where(sys._getframe(), depth=2)

    line = inner()
    assert line.startswith("daemon/test_lag.py:")
    assert " inner < " in line and line.endswith("test_where_names_the_innermost_frames_first")


def test_every_collection_is_timed_by_generation() -> None:
    import gc

    from agent.daemon.lag import StallWatch

    seen: list[tuple[int, float]] = []
    watch = StallWatch(lambda: 10.0, lambda gen, took: seen.append((gen, took)))
    watch.start()
    try:
        gc.collect()
        assert seen == [] or [gen for gen, _ in seen] == [2]  # the watch thread's own pace
    finally:
        watch.stop()  # observes what is left
    gc.collect()  # after stop: no longer recorded
    watch.drain()
    assert [gen for gen, _ in seen] == [2]
    assert seen[0][1] >= 0.0


def test_a_collection_inside_a_metrics_lock_does_not_deadlock() -> None:
    """A collection can start inside prometheus_client's labels() (which allocates
    the child under the metric's own non-reentrant lock): the callback only records."""
    import gc
    import threading

    from prometheus_client import CollectorRegistry, Histogram

    from agent.daemon.lag import StallWatch

    h = Histogram("t_gc_seconds", "t", ["generation"], registry=CollectorRegistry())
    watch = StallWatch(lambda: 10.0, lambda gen, took: h.labels(str(gen)).observe(took))
    done = threading.Event()

    def work() -> None:
        old = gc.get_threshold()
        gc.set_threshold(1)  # a collection at (nearly) every allocation
        try:
            for i in range(200):
                h.labels(generation=str(i % 3))
        finally:
            gc.set_threshold(*old)
            done.set()

    watch.start()
    try:
        t = threading.Thread(target=work, daemon=True)
        t.start()
        assert done.wait(30.0), "deadlocked"
    finally:
        watch.stop()


def test_a_silent_loop_is_logged_with_where_the_main_thread_is(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from agent.daemon import lag
    from agent.daemon.lag import StallWatch

    # On a loaded machine the watch's own wake can be late too, and it then reports
    # the interpreter lock first: with no rate limit the silent loop is still reported.
    monkeypatch.setattr(lag, "LOG_EVERY", 0.0)
    watch = StallWatch(lambda: 0.05, lambda gen, took: None, period=0.01)
    watch.beat(time.monotonic())
    watch.start()
    try:
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and "has not woken" not in caplog.text:
            time.sleep(0.02)  # no beat: the loop looks stalled here
    finally:
        watch.stop()
    assert "the loop has not woken for" in caplog.text
    assert "test_lag.py" in caplog.text  # this test's own frame: where it was held up


def test_dismantle_frees_a_table_only_its_box_held() -> None:
    from agent.daemon.offload import dismantle

    table = {i: [i] for i in range(100)}
    box = [table]
    kept = table
    del table
    dismantle(box)
    assert box == [] and len(kept) == 100  # somebody else holds it: left whole
    box = [{i: [i] for i in range(100)}]
    inner = box[0]
    dismantle(box)
    assert box == [] and len(inner) == 100  # `inner` holds it too
    del inner
    box = [{i: [i] for i in range(100)}]
    dismantle(box)
    assert box == []
