"""The address-event helpers of the lab: netlink parsing and the dual-holder check."""

from __future__ import annotations

import socket
import struct

from agent.lab.addrwatch import RTM_DELADDR, RTM_NEWADDR, AddressEvent, overlaps, parse


def message(kind: int, family: int, address: bytes, prefixlen: int, index: int) -> bytes:
    attr_type = 2 if family == socket.AF_INET else 1  # IFA_LOCAL / IFA_ADDRESS
    attr = struct.pack("=HH", 4 + len(address), attr_type) + address
    body = struct.pack("=BBBBI", family, prefixlen, 0, 0, index) + attr
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body


def test_parse_reads_new_and_deleted_addresses_of_both_families() -> None:
    data = message(RTM_NEWADDR, socket.AF_INET, bytes([192, 0, 2, 100]), 32, 2) + message(
        RTM_DELADDR, socket.AF_INET6, socket.inet_pton(socket.AF_INET6, "2001:db8::1"), 64, 3
    )
    assert parse(data) == [(True, "192.0.2.100", 32, 2), (False, "2001:db8::1", 64, 3)]
    assert parse(data[:10]) == []  # truncated: nothing, no exception


def event(at: float, node: str, added: bool) -> AddressEvent:
    return AddressEvent(at, node, added, "192.0.2.100", 32, 2)


def test_a_clean_handover_has_no_overlap() -> None:
    events = [event(1.0, "d1", False), event(1.6, "d2", True)]
    assert overlaps(events, "192.0.2.100", held_at_start=["d1"]) == []


def test_adding_before_the_other_removes_is_an_overlap() -> None:
    events = [event(1.0, "d2", True), event(1.2, "d1", False)]
    found = overlaps(events, "192.0.2.100", held_at_start=["d1"])
    assert found == [(1.0, 1.2, frozenset({"d1", "d2"}))]


def test_a_killed_node_stops_counting_at_its_death() -> None:
    events = [event(3.6, "d2", True)]  # d1's address stays in its kernel: it was killed
    assert overlaps(events, "192.0.2.100", held_at_start=["d1"], dead={"d1": 0.5}) == []
    assert overlaps(events, "192.0.2.100", held_at_start=["d1"])[0][1] == float("inf")
