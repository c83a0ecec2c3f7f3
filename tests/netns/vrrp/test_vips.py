"""VIP ownership on a real kernel: netlink add/remove/cleanup, GARP and NA on the wire."""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, ip_interface
from pathlib import Path

from agent.lab import netns
from agent.lab.capture import Capture, tshark_fields
from agent.lab.topology import Lab
from agent.vrrp.vips import VipManager

VIP4 = ip_interface("192.0.2.200/24")
VIP6 = ip_interface("2001:db8::200/64")


def addresses(lab: Lab, node: int) -> str:
    return netns.ip("-o", "addr", "show", "dev", "eth0", netns=lab.director(node).ns)


def test_add_remove_are_idempotent_and_ipv6_skips_dad(lab: Lab) -> None:
    with netns.entered(lab.director(1).ns):
        mgr = VipManager("eth0")
        try:
            assert mgr.add([VIP4, VIP6]) == [VIP4, VIP6]
            assert mgr.add([VIP4, VIP6]) == []
            shown = addresses(lab, 1)
            assert "192.0.2.200/24" in shown and "2001:db8::200/64" in shown
            line6 = next(x for x in shown.splitlines() if "2001:db8::200" in x)
            assert "tentative" not in line6 and "nodad" in line6
            assert mgr.present([VIP4, VIP6]) == [VIP4, VIP6]
            assert mgr.remove([VIP4, VIP6]) == [VIP4, VIP6]
            assert mgr.remove([VIP4, VIP6]) == []
            assert "192.0.2.200" not in addresses(lab, 1)
        finally:
            mgr.remove([VIP4, VIP6])
            mgr.close()


def test_primary_address_ignores_vips(lab: Lab) -> None:
    d1 = lab.director(1)
    with netns.entered(d1.ns):
        mgr = VipManager("eth0")
        try:
            # A VIP in the same subnet becomes a secondary; one in another subnet is a
            # second primary: excluded either way.
            other = ip_interface("198.51.100.77/24")
            mgr.add([other, VIP4])

            assert mgr.primary_address(socket.AF_INET, [other, VIP4]) == IPv4Address(
                lab.director_address(1)
            )
            assert mgr.primary_address(socket.AF_INET6) == d1.link_local["eth0"]
            link = mgr.link()
            assert link.up and link.mac.hex(":") == d1.macs["eth0"]
        finally:
            mgr.remove([other, VIP4])
            mgr.close()


def test_cleanup_removes_vips_left_by_a_crashed_run(lab: Lab) -> None:
    with netns.entered(lab.director(1).ns):
        crashed = VipManager("eth0")
        crashed.add([VIP4, VIP6])
        crashed.close()  # the process "dies" without removing them
        fresh = VipManager("eth0")
        try:
            assert fresh.cleanup([VIP4, VIP6, ip_interface("203.0.113.1/32")]) == [VIP4, VIP6]
            assert "192.0.2.200" not in addresses(lab, 1)
            assert "2001:db8::200" not in addresses(lab, 1)
        finally:
            fresh.close()


def test_gratuitous_arp_and_unsolicited_na_reach_a_client(lab: Lab, tmp_path: Path) -> None:
    client = lab.client.ns
    d1 = lab.director(1)
    netns.sysctl(client, "net.ipv4.conf.eth0.arp_accept", "1")
    netns.ip("neigh", "flush", "dev", "eth0", netns=client)
    cap = Capture(lab, lab.client, tmp_path / "garp.pcap", "arp or icmp6")
    with netns.entered(d1.ns):
        mgr = VipManager("eth0")
        try:
            mgr.add([VIP4, VIP6])
            assert mgr.announce([VIP4, VIP6], repeat=3) == 6
        finally:
            mgr.remove([VIP4, VIP6])
            mgr.close()
    pcap = cap.stop()

    arp = tshark_fields(
        pcap,
        "arp.isgratuitous",
        "arp.src.hw_mac",
        "arp.src.proto_ipv4",
        "arp.dst.proto_ipv4",
        "eth.dst",
        "_ws.malformed",
        display_filter="arp",
    )
    assert len(arp) == 3
    for grat, mac, spa, tpa, eth_dst, malformed in arp:
        assert grat == "1" and mac == d1.macs["eth0"] and spa == tpa == "192.0.2.200"
        assert eth_dst == "ff:ff:ff:ff:ff:ff" and not malformed
    na = tshark_fields(
        pcap,
        "icmpv6.checksum.status",
        "icmpv6.nd.na.target_address",
        "icmpv6.nd.na.flag.o",
        "icmpv6.nd.na.flag.s",
        "icmpv6.opt.linkaddr",
        "ipv6.src",
        "ipv6.dst",
        "ipv6.hlim",
        "_ws.malformed",
        display_filter="icmpv6.type == 136",
    )
    assert len(na) == 3
    for status, target, override, solicited, lladdr, src, dst, hlim, malformed in na:
        assert status == "1" and target == "2001:db8::200"
        assert (override, solicited) == ("1", "0") or (override, solicited) == ("True", "False")
        assert lladdr == d1.macs["eth0"] and src == str(d1.link_local["eth0"])
        assert dst == "ff02::1"
        assert hlim == "255" and not malformed
    # The client's ARP cache learned the VIP from the announcement alone.
    assert lab.neighbour_mac(lab.client, str(VIP4.ip)) == d1.macs["eth0"]
    netns.sysctl(client, "net.ipv4.conf.eth0.arp_accept", "0")
