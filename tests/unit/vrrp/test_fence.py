"""The fence child's deadline table: arm, re-arm, disarm, expire — given ``now``."""

from __future__ import annotations

from ipaddress import ip_interface

from agent.vrrp.fence import FenceTable, key_for

A = (2, "192.0.2.100/24")
B = (2, "2001:db8::100/64")
C = (3, "192.0.2.100/24")  # same address, another interface: another key


def test_empty_table_has_no_deadline_and_expires_nothing() -> None:
    t = FenceTable()
    assert t.next_deadline() is None
    assert t.expire(1e9) == []
    assert t.drain() == []


def test_expire_only_what_is_due_and_only_once() -> None:
    t = FenceTable()
    t.arm(A, 10.0)
    t.arm(B, 12.0)
    assert t.next_deadline() == 10.0
    assert t.expire(9.999) == []
    assert t.expire(10.0) == [A]
    assert t.expire(11.0) == []
    assert t.next_deadline() == 12.0
    assert t.expire(100.0) == [B]
    assert t.next_deadline() is None


def test_rearm_moves_the_deadline_both_ways() -> None:
    t = FenceTable()
    t.arm(A, 10.0)
    t.arm(A, 10.2)  # renewal
    assert t.expire(10.1) == []
    t.arm(A, 10.15)  # the latest message wins, even if earlier
    assert t.expire(10.15) == [A]


def test_disarm_wins_and_unknown_disarm_is_harmless() -> None:
    t = FenceTable()
    t.arm(A, 10.0)
    t.arm(C, 10.0)
    t.disarm(A)
    t.disarm(B)
    assert t.expire(20.0) == [C]
    assert t.drain() == []


def test_drain_returns_everything_armed_and_empties() -> None:
    t = FenceTable()
    t.arm(A, 50.0)
    t.arm(B, 60.0)
    t.arm(C, 70.0)
    t.disarm(B)
    assert t.drain() == [A, C]
    assert t.expire(1e9) == []


def test_protocol_lines() -> None:
    t = FenceTable()
    vip = ip_interface("192.0.2.100/24")
    assert t.apply(f"arm 2 {vip} 10.5")
    assert t.armed == {key_for(2, vip): 10.5}
    assert t.apply("arm 2 2001:db8::100/64 11")
    assert t.apply("disarm 2 2001:db8::100/64")
    for bad in ("", "arm", "arm x 192.0.2.1/24 1", "arm 2 nope 1", "arm 2 192.0.2.1/24 nan",
                "disarm 2", "arm 2 192.0.2.1/24 1 extra", "boom 2 192.0.2.1/24"):
        assert not t.apply(bad), bad
    assert t.armed == {key_for(2, vip): 10.5}
    # the same address spelled differently is the same key
    assert t.apply("disarm 2 192.0.2.100/24")
    assert t.armed == {}
