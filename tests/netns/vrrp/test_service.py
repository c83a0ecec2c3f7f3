"""VrrpService in-process (the test thread enters the node's namespace): bad packets
are counted per reason and change nothing; start-up cleanup; stop releases VIPs."""

from __future__ import annotations

import asyncio
import socket
from ipaddress import IPv4Address, ip_interface

from agent.lab import netns
from agent.vrrp.config import GarpConfig, VrrpConfig, VrrpInstanceConfig
from agent.vrrp.machine import State
from agent.vrrp.packet import MCAST_GROUP_V4, Advert, encode
from agent.vrrp.service import VrrpService
from agent.vrrp.vips import VipManager

from .lab import Lan

VIP = "198.51.100.210/24"
VIP_IP = IPv4Address("198.51.100.210")


def sender(lan: Lan, ttl: int = 255) -> socket.socket:
    with netns.entered(lan.ns["b"]):
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
    return s


def test_bad_packets_are_counted_and_change_nothing(lan: Lan) -> None:
    config = VrrpConfig(
        (
            VrrpInstanceConfig(
                name="web", interface="eth0", vrid=81, priority=100, advert_interval=1.0,
                virtual_ips=(VIP,), garp=GarpConfig(repeat=1, delay=0),
            ),
        )
    )
    src, dst = lan.v4["b"], MCAST_GROUP_V4
    good = encode(Advert(3, socket.AF_INET, 81, 200, 100, (VIP_IP,)), src, dst)
    bad_checksum = good[:-1] + bytes([good[-1] ^ 0xFF])
    other_vips = encode(Advert(3, socket.AF_INET, 81, 200, 100, (IPv4Address("192.0.2.1"),)),
                        src, dst)
    v2 = encode(Advert(2, socket.AF_INET, 81, 200, 100, (VIP_IP,)), src, dst)
    unknown_vrid = encode(Advert(3, socket.AF_INET, 99, 200, 100, (VIP_IP,)), src, dst)
    s255, s64 = sender(lan), sender(lan, ttl=64)

    async def scenario() -> tuple[VrrpService, State, State]:
        service = VrrpService(config)
        await service.start()
        try:
            for payload, sock in [
                (good, s255), (bad_checksum, s255), (good, s64), (other_vips, s255),
                (v2, s255), (unknown_vrid, s255), (b"\x31", s255), (b"", s255),
            ]:
                sock.sendto(payload, (str(dst), 0))
            await asyncio.sleep(0.5)
            during = service.states()["web"]
            for _ in range(5):  # keep the instance in BACKUP with good adverts
                s255.sendto(good, (str(dst), 0))
                await asyncio.sleep(0.8)
            after = service.states()["web"]
        finally:
            await service.stop()
        return service, during, after

    with netns.entered(lan.ns["a"]):
        service, during, after = asyncio.run(scenario())
    s255.close()
    s64.close()
    assert during is State.BACKUP and after is State.BACKUP
    c = service.counters()["web"]
    assert dict(c.invalid) == {"checksum": 1, "ttl": 1, "address_list": 1, "version": 1}
    assert c.adverts_received == 6
    sock_counters = service.socket_counters()["eth0/ipv4"]
    assert dict(sock_counters.invalid) == {"vrid": 1, "truncated": 2}
    assert c.transitions == {"backup": 1, "init": 1}


def test_start_cleans_stale_vips_and_stop_releases_them(lan: Lan) -> None:
    config = VrrpConfig(
        (
            VrrpInstanceConfig(
                name="web", interface="eth0", vrid=82, priority=100, advert_interval=0.5,
                virtual_ips=(VIP, "2001:db8::210/64"), garp=GarpConfig(repeat=1, delay=0),
            ),
        )
    )
    stale = ip_interface(VIP)

    def shown() -> str:
        return netns.ip("-o", "addr", "show", "dev", "eth0", netns=lan.ns["a"])

    async def scenario() -> tuple[str, State, str, State]:
        mgr = VipManager("eth0")
        mgr.add([stale])  # a crashed run left it
        mgr.close()
        service = VrrpService(config)
        await service.start()
        backup = shown()  # BACKUP for Master_Down_Interval (1.8 s): no VIP
        await asyncio.sleep(2.5)
        state, master = service.states()["web"], shown()
        await service.stop()
        return backup, state, master, service.states()["web"]

    with netns.entered(lan.ns["a"]):
        backup, state, during, final = asyncio.run(scenario())
    assert "198.51.100.210" not in backup
    assert state is State.MASTER and "198.51.100.210/24" in during and "2001:db8::210" in during
    assert final is State.INIT
    assert "198.51.100.210" not in shown() and "2001:db8::210" not in shown()
