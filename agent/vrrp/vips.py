"""VIP ownership on one interface: the addresses themselves and their announcements.

This module owns the privileged kernel boundary of the VRRP component:

- adding and removing VIPs with netlink (never the ``ip`` command). IPv6 VIPs are
  added with ``IFA_F_NODAD`` as keepalived does: a VIP that moves between nodes
  must answer at once, not after DAD;
- announcing them: gratuitous ARP for IPv4 (an RFC 5227 ARP announcement: a
  request with sender and target address both the VIP) and unsolicited neighbour
  advertisements for IPv6 (RFC 4861 7.2.6: to ff02::1, Override set), built here
  with ``struct`` and sent on an AF_PACKET socket;
- reading what the interface has (MAC, link state, addresses) to choose the
  VRRP primary address and to clean up VIPs left behind by a crashed run.

It keeps no VRRP state and decides nothing: the state machine says when. Errors
other than "already there" / "already gone" raise ``VipError``.

Reading the interface uses pyroute2 (imported lazily). pyroute2 0.9's synchronous
``IPRoute`` drives its own asyncio loop and cannot be used from a thread whose loop
is running (the agent's). So each manager owns one worker thread that creates and
uses its ``IPRoute``; callers block on the result (a netlink round trip, well under
a millisecond) or, for the periodic link poll, await it (``link_async``). The
worker is created by the first netlink call and, like any thread, lives in the
network namespace of the thread that created it.

Takeover latency (bench/vrrp_failover) shaped three choices:

- adding and removing VIPs is one hand-built RTM_NEWADDR / RTM_DELADDR request on
  the manager's own rtnetlink socket (``Rtnetlink``), without the worker thread;
- ``announce`` sends from the MAC and link-local address of the last ``link()``
  read (the service re-reads the link on every link notification and poll) instead of asking
  netlink again between adding the VIPs and announcing them;
- one AF_PACKET socket lives as long as the manager: closing a packet socket waits
  for an RCU grace period (``synchronize_net()`` in ``packet_release``), measured at
  10-20 ms here, which would stall the event loop on every takeover.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
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
# The first request also imports pyroute2 and opens its socket in the worker: seconds
# under software emulation (the lab's VM), which must not count as a netlink failure.
FIRST_CALL_TIMEOUT: Final = 120.0

_T = TypeVar("_T")


class VipError(OSError):
    """A netlink or packet operation on VIPs failed."""


RTM_NEWADDR: Final = 20
RTM_DELADDR: Final = 21
NLMSG_ERROR: Final = 2
NLM_F_REQUEST: Final = 0x1
NLM_F_ACK: Final = 0x4
NLM_F_EXCL: Final = 0x200
NLM_F_CREATE: Final = 0x400
NLM_F_REPLACE: Final = 0x100
IFA_ADDRESS: Final = 1
IFA_LOCAL: Final = 2
IFA_CACHEINFO: Final = 6
_NLMSGHDR = struct.Struct("=IHHII")
_IFADDRMSG = struct.Struct("=BBBBI")


def address_request(
    kind: int, seq: int, index: int, vip: VipInterface, lifetime: int | None = None
) -> bytes:
    """An RTM_NEWADDR / RTM_DELADDR request for ``vip`` on interface ``index``.

    ``lifetime`` (whole seconds, RTM_NEWADDR only): valid and preferred lifetime; the
    kernel deletes the address when it runs out unless a later request (made with
    NLM_F_REPLACE, which this then sets) extends it.  None: a permanent address.
    """
    family = socket.AF_INET if vip.version == 4 else socket.AF_INET6
    flags = IFA_F_NODAD if vip.version == 6 else 0
    body = _IFADDRMSG.pack(family, vip.network.prefixlen, flags, 0, index)
    packed = vip.ip.packed
    attrs = [(IFA_ADDRESS, packed)] + ([(IFA_LOCAL, packed)] if vip.version == 4 else [])
    if kind == RTM_NEWADDR and lifetime is not None:
        # struct ifa_cacheinfo {ifa_prefered, ifa_valid, cstamp, tstamp}
        attrs.append((IFA_CACHEINFO, struct.pack("=IIII", lifetime, lifetime, 0, 0)))
    for kind_, value in attrs:
        body += struct.pack("=HH", 4 + len(value), kind_) + value  # 4, 16: aligned
    nl_flags = NLM_F_REQUEST | NLM_F_ACK
    if kind == RTM_NEWADDR:
        nl_flags |= NLM_F_CREATE | (NLM_F_EXCL if lifetime is None else NLM_F_REPLACE)
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, nl_flags, seq, 0) + body


class Rtnetlink:
    """Adds and removes addresses with one request and one ack on a raw rtnetlink socket.

    The takeover path: the kernel handles an rtnetlink request in ``sendmsg`` itself,
    so the ack is waiting when it returns — about 10 us, against about 300 us through
    pyroute2 on the worker thread (a thread hand-off each way, then pyroute2's own
    message building), measured in bench/vrrp_failover's lab. Reading links and
    addresses (rarer, bigger answers) stays with pyroute2.
    """

    def __init__(self) -> None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        try:
            sock.bind((0, 0))
            sock.settimeout(NETLINK_TIMEOUT)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._seq = 0

    def address(self, kind: int, index: int, vip: VipInterface, lifetime: int | None = None) -> int:
        """Send the request and wait for its ack: 0, or the errno the kernel answered."""
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        seq = self._seq
        self._sock.send(address_request(kind, seq, index, vip, lifetime))
        while True:
            data = self._sock.recv(65536)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, msg_type, _flags, msg_seq, _pid = _NLMSGHDR.unpack_from(data, offset)
                if length < _NLMSGHDR.size:
                    break
                if msg_type == NLMSG_ERROR and msg_seq == seq:
                    (error,) = struct.unpack_from("=i", data, offset + _NLMSGHDR.size)
                    return -int(error)
                offset += (length + 3) & ~3

    def close(self) -> None:
        self._sock.close()


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


def _describe(exc: BaseException) -> str:
    """An exception as text, never empty (a timeout's own text is)."""
    return str(exc) or type(exc).__name__


def _netlink_error_code(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)
    return code if isinstance(code, int) else None


class VipManager:
    """Adds, removes and announces VIPs on one interface."""

    def __init__(self, ifname: str) -> None:
        self.ifname = ifname
        self._ipr: Any = None  # used only in the worker thread
        self._index: int | None = None  # the interface's index, cached by the worker
        self._worker: ThreadPoolExecutor | None = None
        self._last: LinkInfo | None = None  # the last link() read, for announce()
        self._packet: socket.socket | None = None  # AF_PACKET, for GARP / NA
        self._rtnl: Rtnetlink | None = None  # adds and removes VIPs
        self._rtnl_index: int | None = None

    def _submit(self, fn: Callable[[Any, int], _T]) -> Future[_T]:
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix=f"netlink-{self.ifname}")
        return self._worker.submit(self._in_worker, fn)

    def _call(self, what: str, fn: Callable[[Any, int], _T]) -> _T:
        """Run ``fn(ipr, ifindex)`` in the netlink worker; exceptions come back here."""
        timeout = NETLINK_TIMEOUT if self._ipr is not None else FIRST_CALL_TIMEOUT
        try:
            return self._submit(fn).result(timeout=timeout)
        except VipError:
            raise
        except Exception as e:
            raise VipError(f"{what} on {self.ifname}: {_describe(e)}") from e

    def _in_worker(self, fn: Callable[[Any, int], _T]) -> _T:
        if self._ipr is None:
            from pyroute2 import IPRoute  # lazy: pyroute2 costs ~0.2 s to import

            self._ipr = IPRoute()
        if self._index is None:
            found = self._ipr.link_lookup(ifname=self.ifname)
            if not found:
                raise VipError(errno.ENODEV, f"no interface {self.ifname}")
            self._index = int(found[0])
        try:
            return fn(self._ipr, self._index)
        except Exception as e:
            if _netlink_error_code(e) == errno.ENODEV:
                self._index = None  # the interface went away (or was re-created): look again
            raise

    def close(self) -> None:
        if self._worker is not None:
            self._worker.submit(self._close_in_worker).result(timeout=NETLINK_TIMEOUT)
            self._worker.shutdown(wait=True)
            self._worker = None
        if self._packet is not None:
            self._packet.close()
            self._packet = None
        if self._rtnl is not None:
            self._rtnl.close()
            self._rtnl = None

    def _close_in_worker(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    # -- reading the interface

    @staticmethod
    def _query(ipr: Any, index: int) -> tuple[int, Any, Any]:
        return index, ipr.get_links(index)[0], list(ipr.get_addr(index=index))

    def _link_info(self, answer: tuple[int, Any, Any]) -> LinkInfo:
        index, link, addrs = answer
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
        self._last = LinkInfo(index, bytes.fromhex(mac_text.replace(":", "")), up, found)
        return self._last

    def link(self) -> LinkInfo:
        return self._link_info(self._call("read", self._query))

    async def link_async(self) -> LinkInfo:
        """``link()`` without blocking the event loop while netlink answers."""
        try:
            answer = await asyncio.wrap_future(self._submit(self._query))
            return self._link_info(answer)
        except VipError:
            raise
        except Exception as e:
            raise VipError(f"read on {self.ifname}: {_describe(e)}") from e

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

    def index(self) -> int:
        """The interface's index (as the last add or remove used it)."""
        if self._rtnl_index is None:
            try:
                self._rtnl_index = socket.if_nametoindex(self.ifname)
            except OSError as e:
                raise VipError(errno.ENODEV, f"no interface {self.ifname}") from e
        return self._rtnl_index

    def _change(self, kind: int, vip: VipInterface, lifetime: int | None = None) -> int:
        """One address request on our own rtnetlink socket; the kernel's errno (0: done)."""
        if self._rtnl is None:
            self._rtnl = Rtnetlink()
        code = self._rtnl.address(kind, self.index(), vip, lifetime)
        if code == errno.ENODEV:  # the interface was re-created: look it up again
            self._rtnl_index = None
            self._rtnl_index = socket.if_nametoindex(self.ifname)
            code = self._rtnl.address(kind, self._rtnl_index, vip, lifetime)
        return code

    def add(self, vips: Iterable[VipInterface], lifetime: int | None = None) -> list[VipInterface]:
        """Add each VIP not already there; returns those added.

        With ``lifetime`` (seconds) the VIPs expire in the kernel unless refreshed by
        another ``add`` (quorum election's fence against a frozen holder); a VIP that
        is already there gets the new lifetime and is reported as added.
        """
        added: list[VipInterface] = []
        for vip in vips:
            try:
                code = self._change(RTM_NEWADDR, vip, lifetime)
            except OSError as e:
                raise VipError(f"add {vip} on {self.ifname}: {e}") from e
            if code == errno.EEXIST:
                continue
            if code:
                raise VipError(code, f"add {vip} on {self.ifname}: {os.strerror(code)}")
            added.append(vip)
        return added

    def remove(self, vips: Iterable[VipInterface]) -> list[VipInterface]:
        """Remove each VIP that is there; returns those removed."""
        removed: list[VipInterface] = []
        for vip in vips:
            try:
                code = self._change(RTM_DELADDR, vip)
            except OSError as e:
                raise VipError(f"remove {vip} on {self.ifname}: {e}") from e
            if code in (errno.EADDRNOTAVAIL, errno.ENOENT):
                continue
            if code:
                raise VipError(code, f"remove {vip} on {self.ifname}: {os.strerror(code)}")
            removed.append(vip)
        return removed

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
        link = self._last if self._last is not None else self.link()
        source6 = next(
            (
                a.address.ip
                for a in link.addresses
                if isinstance(a.address, IPv6Interface) and a.address.ip.is_link_local
            ),
            None,
        )
        router = any(v.version == 6 for v in vips) and self._forwarding_v6()
        frames: list[bytes] = []
        for vip in vips:
            if isinstance(vip, IPv4Interface):
                frames.append(build_garp(link.mac, vip.ip))
            elif source6 is not None:
                frames.append(build_unsolicited_na(link.mac, source6, vip.ip, router=router))
        sent = 0
        try:
            if self._packet is None:
                self._packet = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            for _ in range(repeat):
                for frame in frames:
                    self._packet.sendto(frame, (self.ifname, 0))
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
