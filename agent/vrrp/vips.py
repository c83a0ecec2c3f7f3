"""VIP ownership on one interface: the addresses themselves and their announcements.

This module owns the privileged kernel boundary of the VRRP component:

- adding and removing VIPs with netlink (pyroute2, imported lazily; never the
  ``ip`` command). IPv6 VIPs are added with ``IFA_F_NODAD`` as keepalived does: a
  VIP that moves between nodes must answer at once, not after DAD;
- announcing them: gratuitous ARP for IPv4 (an RFC 5227 ARP announcement: a
  request with sender and target address both the VIP) and unsolicited neighbour
  advertisements for IPv6 (RFC 4861 7.2.6: to ff02::1, Override set), built here
  with ``struct`` and sent on an AF_PACKET socket;
- reading what the interface has (MAC, link state, addresses) to choose the
  VRRP primary address and to clean up VIPs left behind by a crashed run.

It keeps no VRRP state and decides nothing: the state machine says when. Errors
other than "already there" / "already gone" raise ``VipError``.

pyroute2 0.9's synchronous ``IPRoute`` drives its own asyncio loop and cannot be
used from a thread whose loop is running (the agent's). So each manager owns one
worker thread that creates and uses its ``IPRoute``; callers block on the result
(a netlink round trip, well under a millisecond). The worker is created by the
first netlink call and, like any thread, lives in the network namespace of the
thread that created it.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface, ip_interface
from typing import Any, Final, TypeVar

from agent.vrrp.packet import IPAddress, VipInterface, internet_checksum

ETH_P_ARP: Final = 0x0806
ETH_P_IPV6: Final = 0x86DD
BROADCAST_MAC: Final = b"\xff" * 6
ALL_NODES_MAC: Final = bytes.fromhex("333300000001")
ALL_NODES: Final = IPv6Address("ff02::1")
IFA_F_SECONDARY: Final = 0x01
IFA_F_NODAD: Final = 0x02
RT_SCOPE_LINK: Final = 253
ICMPV6_NA: Final = 136
NA_ROUTER: Final = 0x80000000
NA_OVERRIDE: Final = 0x20000000


NETLINK_TIMEOUT: Final = 5.0  # seconds: a netlink request that takes longer is an error

_T = TypeVar("_T")


class VipError(OSError):
    """A netlink or packet operation on VIPs failed."""


def build_garp(mac: bytes, vip: IPv4Address) -> bytes:
    """An Ethernet frame carrying a gratuitous ARP (announcement) for ``vip``."""
    eth = BROADCAST_MAC + mac + struct.pack("!H", ETH_P_ARP)
    # htype Ethernet, ptype IPv4, hlen 6, plen 4, op request (RFC 5227 2.3).
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + vip.packed + bytes(6) + vip.packed
    return eth + arp


def build_unsolicited_na(
    mac: bytes, source: IPv6Address, target: IPv6Address, *, router: bool
) -> bytes:
    """An Ethernet frame carrying an unsolicited neighbour advertisement for ``target``."""
    flags = NA_OVERRIDE | (NA_ROUTER if router else 0)
    option = struct.pack("!BB", 2, 1) + mac  # target link-layer address, 8 bytes
    body = struct.pack("!BBHI", ICMPV6_NA, 0, 0, flags) + target.packed + option
    pseudo = source.packed + ALL_NODES.packed + struct.pack("!I3xB", len(body), 58)
    checksum = internet_checksum(pseudo + body)
    icmp = body[:2] + struct.pack("!H", checksum) + body[4:]
    ipv6 = struct.pack("!IHBB", 6 << 28, len(icmp), 58, 255) + source.packed + ALL_NODES.packed
    return ALL_NODES_MAC + mac + struct.pack("!H", ETH_P_IPV6) + ipv6 + icmp


@dataclass(frozen=True, slots=True)
class InterfaceAddress:
    address: VipInterface
    flags: int
    scope: int


@dataclass(frozen=True, slots=True)
class LinkInfo:
    index: int
    mac: bytes
    up: bool  # IFF_UP and IFF_RUNNING (carrier)
    addresses: tuple[InterfaceAddress, ...]


IFF_UP: Final = 0x1
IFF_RUNNING: Final = 0x40


def _netlink_error_code(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)
    return code if isinstance(code, int) else None


class VipManager:
    """Adds, removes and announces VIPs on one interface."""

    def __init__(self, ifname: str) -> None:
        self.ifname = ifname
        self._ipr: Any = None  # used only in the worker thread
        self._worker: ThreadPoolExecutor | None = None

    def _call(self, what: str, fn: Callable[[Any, int], _T]) -> _T:
        """Run ``fn(ipr, ifindex)`` in the netlink worker; exceptions come back here."""
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix=f"netlink-{self.ifname}")
        try:
            return self._worker.submit(self._in_worker, fn).result(timeout=NETLINK_TIMEOUT)
        except VipError:
            raise
        except Exception as e:
            raise VipError(f"{what} on {self.ifname}: {e}") from e

    def _in_worker(self, fn: Callable[[Any, int], _T]) -> _T:
        if self._ipr is None:
            from pyroute2 import IPRoute  # lazy: pyroute2 costs ~0.2 s to import

            self._ipr = IPRoute()
        found = self._ipr.link_lookup(ifname=self.ifname)
        if not found:
            raise VipError(errno.ENODEV, f"no interface {self.ifname}")
        return fn(self._ipr, int(found[0]))

    def close(self) -> None:
        if self._worker is not None:
            self._worker.submit(self._close_in_worker).result(timeout=NETLINK_TIMEOUT)
            self._worker.shutdown(wait=True)
            self._worker = None

    def _close_in_worker(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    # -- reading the interface

    def link(self) -> LinkInfo:
        def query(ipr: Any, index: int) -> tuple[int, Any, Any]:
            return index, ipr.get_links(index)[0], list(ipr.get_addr(index=index))

        index, link, addrs = self._call("read", query)
        mac_text = link.get("IFLA_ADDRESS") or "00:00:00:00:00:00"
        flags = int(link["flags"])
        found = tuple(
            InterfaceAddress(
                ip_interface(f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}"),
                int(a.get("IFA_FLAGS") or a["flags"]),
                int(a["scope"]),
            )
            for a in addrs
            if a.get("IFA_ADDRESS")
        )
        up = bool(flags & IFF_UP) and bool(flags & IFF_RUNNING)
        return LinkInfo(index, bytes.fromhex(mac_text.replace(":", "")), up, found)

    def primary_address(
        self, family: int, exclude: Iterable[VipInterface] = ()
    ) -> IPAddress | None:
        """The VRRP primary address: IPv4's first primary address, IPv6's link-local.

        VIPs (``exclude``) never count: a VIP left behind must not become the source.
        """
        skip = {v.ip for v in exclude}
        version = 4 if family == socket.AF_INET else 6
        for a in self.link().addresses:
            ip = a.address.ip
            if ip.version != version or ip in skip:
                continue
            if version == 4 and not a.flags & IFA_F_SECONDARY:
                return ip
            if version == 6 and ip.is_link_local:
                return ip
        return None

    def present(self, vips: Iterable[VipInterface]) -> list[VipInterface]:
        have = {a.address.ip for a in self.link().addresses}
        return [v for v in vips if v.ip in have]

    # -- changing addresses

    def add(self, vips: Iterable[VipInterface]) -> list[VipInterface]:
        """Add each VIP not already there; returns those added."""
        vips = list(vips)

        def change(ipr: Any, index: int) -> list[VipInterface]:
            added: list[VipInterface] = []
            for vip in vips:
                extra = {"flags": IFA_F_NODAD} if vip.version == 6 else {}
                try:
                    ipr.addr(
                        "add",
                        index=index,
                        address=str(vip.ip),
                        prefixlen=vip.network.prefixlen,
                        **extra,
                    )
                except Exception as e:
                    if _netlink_error_code(e) == errno.EEXIST:
                        continue
                    raise VipError(f"add {vip} on {self.ifname}: {e}") from e
                added.append(vip)
            return added

        return self._call("add", change)

    def remove(self, vips: Iterable[VipInterface]) -> list[VipInterface]:
        """Remove each VIP that is there; returns those removed."""
        vips = list(vips)

        def change(ipr: Any, index: int) -> list[VipInterface]:
            removed: list[VipInterface] = []
            for vip in vips:
                try:
                    ipr.addr(
                        "del", index=index, address=str(vip.ip), prefixlen=vip.network.prefixlen
                    )
                except Exception as e:
                    if _netlink_error_code(e) in (errno.EADDRNOTAVAIL, errno.ENOENT):
                        continue
                    raise VipError(f"remove {vip} on {self.ifname}: {e}") from e
                removed.append(vip)
            return removed

        return self._call("remove", change)

    def cleanup(self, vips: Iterable[VipInterface]) -> list[VipInterface]:
        """Start-up: remove configured VIPs a crashed run left on the interface.

        Run before any instance starts; a VIP is only ours while we are MASTER, and
        at start-up we are not (keepalived leaves them behind on kill -9).
        """
        return self.remove(self.present(vips))

    # -- announcing

    def announce(self, vips: Iterable[VipInterface], repeat: int) -> int:
        """Send ``repeat`` GARP / unsolicited NA frames per VIP; returns frames sent."""
        vips = list(vips)
        if repeat <= 0 or not vips:
            return 0
        link = self.link()
        source6 = next(
            (
                a.address.ip
                for a in link.addresses
                if isinstance(a.address, IPv6Interface) and a.address.ip.is_link_local
            ),
            None,
        )
        router = self._forwarding_v6()
        frames: list[bytes] = []
        for vip in vips:
            if isinstance(vip, IPv4Interface):
                frames.append(build_garp(link.mac, vip.ip))
            elif source6 is not None:
                frames.append(build_unsolicited_na(link.mac, source6, vip.ip, router=router))
        sent = 0
        try:
            with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as sock:
                for _ in range(repeat):
                    for frame in frames:
                        sock.sendto(frame, (self.ifname, 0))
                        sent += 1
        except OSError as e:
            raise VipError(f"announce on {self.ifname}: {e}") from e
        return sent

    def _forwarding_v6(self) -> bool:
        # The NA Router flag must say whether we forward (RFC 4861 7.2.6); keepalived
        # reads the same sysctl. A director forwarding traffic for NAT is a router.
        try:
            with open(f"/proc/sys/net/ipv6/conf/{self.ifname}/forwarding") as f:
                return f.read().strip() == "1"
        except OSError:
            return False
