"""Sans-I/O codec and request pipelines for the IPVS generic-netlink family.

This module owns the bytes: how every ``model.Op`` becomes a netlink message, how
the kernel's replies (service and destination dumps, GET_CONFIG, errors with
extended ACK, NLMSG_DONE) become model values, and the bookkeeping that turns a
list of requests into windows of messages and their replies back into results
(sequence numbers, where to ask for an ACK, EBUSY re-issue of dumps, DUMP_INTR).

It never touches a socket, a clock, a thread, a logger or pyroute2: the drivers
in ``kernel.py`` (one blocking, one asyncio) call ``next_batch()`` for bytes to
send and ``feed()`` with each datagram received, and share everything else.

Hot path rules: precompiled ``struct.Struct``s, ``unpack_from`` on the received
buffer, no per-attribute objects. Numbers below are the uapi values of
include/uapi/linux/ip_vs.h, linux/netlink.h and linux/genetlink.h.

Kernel behaviour this relies on (net/netfilter/ipvs/ip_vs_ctl.c and
net/netlink/af_netlink.c of 6.1):

- ``ip_vs_genl_parse_service`` computes ``flags = (old & ~mask) | (new & mask)``:
  we send ``mask = ~0`` so that SET_SERVICE clears bits as well as sets them, and
  never send IP_VS_SVC_F_HASHED (``ip_vs_svc_hash`` refuses an already-"hashed"
  service, which would leave an ADDed service unreachable).
- ``ip_vs_genl_fill_service`` reports flags with HASHED set and addresses as the
  full 16-byte ``union nf_inet_addr``; NETMASK is read and written as raw 32 bits:
  the IPv4 mask in network order, the IPv6 prefix length in host order.
- ``netlink_rcv_skb`` processes the messages of one ``sendmsg`` in order, always
  answers a failed one with NLMSG_ERROR, and a successful one only when it
  carries NLM_F_ACK: one ACK on the last message of a window proves every
  earlier message of that window has been processed.
- ``netlink_dump_start`` returns EBUSY while another dump runs on the same socket,
  and a dump advances only inside ``recvmsg`` (``netlink_recvmsg`` calls
  ``netlink_dump``): a dump request that meets a running dump is re-issued.
- ``ip_vs_genl_dump_dests`` answers a dump for a service that does not exist
  with an empty dump, not an error.
"""

from __future__ import annotations

import errno as errno_mod
import os
import socket
import struct
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Final

from agent.ipvs.model import (
    AF_INET,
    AF_INET6,
    IP_VS_SVC_F_HASHED,
    ZERO_STATS,
    AddDest,
    AddService,
    DelDest,
    DelService,
    Dest,
    DestKey,
    EditDest,
    EditService,
    KernelDest,
    KernelService,
    KernelTable,
    Op,
    Service,
    ServiceKey,
    SetTimeouts,
    Stats,
    SyncDaemon,
    Timeouts,
)

# --- netlink / generic netlink constants --------------------------------------------

NLMSG_NOOP: Final = 1
NLMSG_ERROR: Final = 2
NLMSG_DONE: Final = 3
NLMSG_OVERRUN: Final = 4

NLM_F_REQUEST: Final = 0x01
NLM_F_MULTI: Final = 0x02
NLM_F_ACK: Final = 0x04
NLM_F_DUMP_INTR: Final = 0x10
NLM_F_DUMP: Final = 0x300
# Flags of an NLMSG_ERROR message (NETLINK_CAP_ACK / NETLINK_EXT_ACK).
NLM_F_CAPPED: Final = 0x100
NLM_F_ACK_TLVS: Final = 0x200

NLMSGERR_ATTR_MSG: Final = 1

SOL_NETLINK: Final = 270
NETLINK_CAP_ACK: Final = 10
NETLINK_EXT_ACK: Final = 11

GENL_ID_CTRL: Final = 0x10
CTRL_CMD_GETFAMILY: Final = 3
CTRL_ATTR_FAMILY_ID: Final = 1
CTRL_ATTR_FAMILY_NAME: Final = 2

NLA_TYPE_MASK: Final = 0x3FFF

# --- IPVS (include/uapi/linux/ip_vs.h) ------------------------------------------------

IPVS_GENL_NAME: Final = "IPVS"
IPVS_GENL_VERSION: Final = 1

IPVS_CMD_NEW_SERVICE: Final = 1
IPVS_CMD_SET_SERVICE: Final = 2
IPVS_CMD_DEL_SERVICE: Final = 3
IPVS_CMD_GET_SERVICE: Final = 4
IPVS_CMD_NEW_DEST: Final = 5
IPVS_CMD_SET_DEST: Final = 6
IPVS_CMD_DEL_DEST: Final = 7
IPVS_CMD_GET_DEST: Final = 8
IPVS_CMD_NEW_DAEMON: Final = 9
IPVS_CMD_DEL_DAEMON: Final = 10
IPVS_CMD_GET_DAEMON: Final = 11
IPVS_CMD_SET_CONFIG: Final = 12
IPVS_CMD_GET_CONFIG: Final = 13

IPVS_CMD_ATTR_SERVICE: Final = 1
IPVS_CMD_ATTR_DEST: Final = 2
IPVS_CMD_ATTR_DAEMON: Final = 3
IPVS_CMD_ATTR_TIMEOUT_TCP: Final = 4
IPVS_CMD_ATTR_TIMEOUT_TCP_FIN: Final = 5
IPVS_CMD_ATTR_TIMEOUT_UDP: Final = 6

IPVS_SVC_ATTR_AF: Final = 1
IPVS_SVC_ATTR_PROTOCOL: Final = 2
IPVS_SVC_ATTR_ADDR: Final = 3
IPVS_SVC_ATTR_PORT: Final = 4
IPVS_SVC_ATTR_FWMARK: Final = 5
IPVS_SVC_ATTR_SCHED_NAME: Final = 6
IPVS_SVC_ATTR_FLAGS: Final = 7
IPVS_SVC_ATTR_TIMEOUT: Final = 8
IPVS_SVC_ATTR_NETMASK: Final = 9
IPVS_SVC_ATTR_STATS: Final = 10
IPVS_SVC_ATTR_PE_NAME: Final = 11
IPVS_SVC_ATTR_STATS64: Final = 12

IPVS_DEST_ATTR_ADDR: Final = 1
IPVS_DEST_ATTR_PORT: Final = 2
IPVS_DEST_ATTR_FWD_METHOD: Final = 3
IPVS_DEST_ATTR_WEIGHT: Final = 4
IPVS_DEST_ATTR_U_THRESH: Final = 5
IPVS_DEST_ATTR_L_THRESH: Final = 6
IPVS_DEST_ATTR_ACTIVE_CONNS: Final = 7
IPVS_DEST_ATTR_INACT_CONNS: Final = 8
IPVS_DEST_ATTR_PERSIST_CONNS: Final = 9
IPVS_DEST_ATTR_STATS: Final = 10
IPVS_DEST_ATTR_ADDR_FAMILY: Final = 11
IPVS_DEST_ATTR_STATS64: Final = 12
IPVS_DEST_ATTR_TUN_TYPE: Final = 13
IPVS_DEST_ATTR_TUN_PORT: Final = 14
IPVS_DEST_ATTR_TUN_FLAGS: Final = 15

# Inside IPVS_CMD_ATTR_DAEMON (ip_vs_daemon_policy: STATE, SYNC_ID u32; MCAST_IFN
# NUL-terminated string; SYNC_MAXLEN, MCAST_PORT u16 in host order; MCAST_GROUP an
# IPv4 address in network order; MCAST_GROUP6 16 bytes; MCAST_TTL u8).
IPVS_DAEMON_ATTR_STATE: Final = 1
IPVS_DAEMON_ATTR_MCAST_IFN: Final = 2
IPVS_DAEMON_ATTR_SYNC_ID: Final = 3
IPVS_DAEMON_ATTR_SYNC_MAXLEN: Final = 4
IPVS_DAEMON_ATTR_MCAST_GROUP: Final = 5
IPVS_DAEMON_ATTR_MCAST_GROUP6: Final = 6
IPVS_DAEMON_ATTR_MCAST_PORT: Final = 7
IPVS_DAEMON_ATTR_MCAST_TTL: Final = 8

IPVS_STATS_ATTR_CONNS: Final = 1
IPVS_STATS_ATTR_INPKTS: Final = 2
IPVS_STATS_ATTR_OUTPKTS: Final = 3
IPVS_STATS_ATTR_INBYTES: Final = 4
IPVS_STATS_ATTR_OUTBYTES: Final = 5

IP_VS_CONN_F_FWD_MASK: Final = 0x0007
FLAGS_MASK_ALL: Final = 0xFFFFFFFF

# --- precompiled layouts (native byte order, as netlink is) ---------------------------

_NLMSGHDR = struct.Struct("=IHHII")
_HDR = struct.Struct("=IHHIIBBH")  # nlmsghdr + genlmsghdr: every message we send
_HDR_SIZE: Final = _HDR.size
_NLA = struct.Struct("=HH")
_U8 = struct.Struct("=B")
_U16 = struct.Struct("=H")
_U32 = struct.Struct("=I")
_BE16 = struct.Struct("!H")
_BE32 = struct.Struct("!I")
_I32 = struct.Struct("=i")
_U64 = struct.Struct("=Q")
_FLAGS = struct.Struct("=II")

_ATTR_U16 = struct.Struct("=HHH2x")
_ATTR_U32 = struct.Struct("=HHI")
_ATTR_FLAGS = struct.Struct("=HHII")

# Service key attributes (without the enclosing IPVS_CMD_ATTR_SERVICE nest).
_SVC_KEY4 = struct.Struct("=HHH2xHHH2xHH4sHHH2x")
_SVC_KEY6 = struct.Struct("=HHH2xHHH2xHH16sHHH2x")
_SVC_KEYFW = struct.Struct("=HHH2xHHI")
# Full destination nest: ADDR, PORT, ADDR_FAMILY, FWD, WEIGHT, U/L_THRESH, TUN_*.
_DEST_TAIL = "HHH2xHHH2xHHIHHIHHIHHIHHB3xHHH2xHHH2x"
_DEST4 = struct.Struct("=HHHH4s" + _DEST_TAIL)
_DEST6 = struct.Struct("=HHHH16s" + _DEST_TAIL)
# (struct, nest length, address attribute length) by address family
_DEST_LAYOUT = {AF_INET: (_DEST4, 84, 8), AF_INET6: (_DEST6, 96, 20)}
_DEST_KEY4 = struct.Struct("=HHHH4sHHH2xHHH2x")
_DEST_KEY6 = struct.Struct("=HHHH16sHHH2xHHH2x")

# The kernel writes the first five stats64 counters as consecutive u64 attributes
# (ip_vs_genl_fill_stats64, no pad on 64-bit arches): one unpack when they are.
_STATS64_HEAD = struct.Struct("=" + "HHQ" * 5)
_STATS64_SHAPE: Final = ((12, 12, 12, 12, 12), (1, 2, 3, 4, 5))

_htons = socket.htons
_inet_pton = socket.inet_pton
_inet_ntop = socket.inet_ntop


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attr(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return _NLA.pack(n, kind) + payload + b"\0" * (_align(n) - n)


def _asciiz(kind: int, text: str) -> bytes:
    # NLA_NUL_STRING in ip_vs_svc_policy: the NUL must be inside the attribute.
    return _attr(kind, text.encode("ascii") + b"\0")


# --- results ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpError:
    """Why the kernel refused one operation of an ``apply``; later operations still ran."""

    op: Op
    errno: int
    name: str  # errno.errorcode name, e.g. "ESRCH"
    extack: str  # the kernel's extended-ACK message, "" when it sent none
    description: str  # one line for logs and events

    def __str__(self) -> str:
        return self.description


class NetlinkError(OSError):
    """The kernel refused a request that is not an operation (a dump, GET_CONFIG)."""

    def __init__(self, err: int, what: str, extack: str = "") -> None:
        name = errno_mod.errorcode.get(err, str(err))
        text = f"{what}: {name} ({os.strerror(err)})" + (f": {extack}" if extack else "")
        super().__init__(err, text)
        self.extack = extack


@dataclass(slots=True)
class Counters:
    """Plain counters a driver accumulates; the metrics layer reads them."""

    sendmsg_calls: int = 0  # batches handed to the kernel
    messages_sent: int = 0  # netlink messages in those batches (incl. re-issues)
    datagrams_received: int = 0
    recv_calls: int = 0  # receive system calls (one may return several datagrams)
    netlink_errors: int = 0  # NLMSG_ERROR replies carrying an error (EBUSY excluded)
    ebusy_reissues: int = 0  # dump requests re-issued after EBUSY
    dumps_interrupted: int = 0  # dumps discarded for NLM_F_DUMP_INTR


# --- descriptions ---------------------------------------------------------------------

_OP_NAMES: Final[dict[type, str]] = {
    AddService: "add-service",
    EditService: "edit-service",
    DelService: "del-service",
    AddDest: "add-dest",
    EditDest: "edit-dest",
    DelDest: "del-dest",
    SetTimeouts: "set-timeouts",
}


def describe_op(op: Op) -> str:
    """``add-dest tcp 192.0.2.10:80 -> 10.0.0.1:8080``: the op and the object it names."""
    name = _OP_NAMES[type(op)]
    if isinstance(op, AddService | EditService):
        return f"{name} {op.service.key}"
    if isinstance(op, DelService):
        return f"{name} {op.key}"
    if isinstance(op, AddDest | EditDest):
        return f"{name} {op.service} -> {op.dest.key}"
    if isinstance(op, DelDest):
        return f"{name} {op.service} -> {op.dest}"
    t = op.timeouts
    return f"{name} tcp={t.tcp} tcpfin={t.tcp_fin} udp={t.udp}"


def op_error(op: Op, err: int, extack: str = "") -> OpError:
    """Build the OpError for ``op`` failing with ``err`` (positive errno)."""
    name = errno_mod.errorcode.get(err, f"errno {err}")
    what = describe_op(op)
    if err == errno_mod.ENOENT and isinstance(op, AddService | EditService):
        # ip_vs_add_service / ip_vs_edit_service: ENOENT means the scheduler (or
        # persistence engine) module could not be found or loaded.
        svc = op.service
        text = (
            f"{what}: scheduler '{svc.scheduler}' is not available in this kernel "
            f"(module ip_vs_{svc.scheduler})"
        )
        if svc.pe_name:
            text += (
                f", or persistence engine '{svc.pe_name}' is not (module ip_vs_pe_{svc.pe_name})"
            )
        text += f" [{name}]"
    else:
        text = f"{what}: {name} ({os.strerror(err)})"
    if extack:
        text += f": {extack}"
    return OpError(op, err, name, extack, text)


# --- encoding ---------------------------------------------------------------------


def _addr(af: int, text: str) -> bytes:
    return _inet_pton(af, text)


def genl_header(
    length: int, family: int, flags: int, seq: int, cmd: int, version: int = IPVS_GENL_VERSION
) -> bytes:
    return _HDR.pack(length, family, flags, seq, 0, cmd, version, 0)


def encode_getfamily(name: str, seq: int) -> bytes:
    """CTRL_CMD_GETFAMILY for ``name`` (a doit: one reply or one error)."""
    body = _asciiz(CTRL_ATTR_FAMILY_NAME, name)
    return (
        genl_header(_HDR_SIZE + len(body), GENL_ID_CTRL, NLM_F_REQUEST, seq, CTRL_CMD_GETFAMILY, 1)
        + body
    )


class Encoder:
    """Encodes model operations for one IPVS family id.

    The service-key attribute block is built once per service and reused for
    every message that names that service (its dests, its dest dump).
    """

    __slots__ = ("_keys", "family")

    def __init__(self, family: int) -> None:
        self.family = family
        self._keys: dict[ServiceKey, bytes] = {}

    # ---- attribute blocks

    def _key_attrs(self, key: ServiceKey) -> bytes:
        if key.fwmark:
            return _SVC_KEYFW.pack(6, IPVS_SVC_ATTR_AF, key.af, 8, IPVS_SVC_ATTR_FWMARK, key.fwmark)
        if key.af == AF_INET:
            return _SVC_KEY4.pack(
                6,
                IPVS_SVC_ATTR_AF,
                key.af,
                6,
                IPVS_SVC_ATTR_PROTOCOL,
                key.protocol,
                8,
                IPVS_SVC_ATTR_ADDR,
                _inet_pton(AF_INET, key.address),
                6,
                IPVS_SVC_ATTR_PORT,
                _htons(key.port),
            )
        if key.af == AF_INET6:
            return _SVC_KEY6.pack(
                6,
                IPVS_SVC_ATTR_AF,
                key.af,
                6,
                IPVS_SVC_ATTR_PROTOCOL,
                key.protocol,
                20,
                IPVS_SVC_ATTR_ADDR,
                _inet_pton(AF_INET6, key.address),
                6,
                IPVS_SVC_ATTR_PORT,
                _htons(key.port),
            )
        raise ValueError(f"unsupported address family {key.af}")

    def service_key(self, key: ServiceKey) -> bytes:
        """IPVS_CMD_ATTR_SERVICE nest holding only the key (dest ops, DEL, dumps)."""
        block = self._keys.get(key)
        if block is None:
            attrs = self._key_attrs(key)
            block = _NLA.pack(4 + len(attrs), IPVS_CMD_ATTR_SERVICE) + attrs
            if len(self._keys) > 65536:  # bound the cache for long-lived encoders
                self._keys.clear()
            self._keys[key] = block
        return block

    def service_full(self, svc: Service) -> bytes:
        """IPVS_CMD_ATTR_SERVICE nest with every editable attribute (NEW/SET)."""
        key = svc.key
        attrs = self._key_attrs(key)
        netmask = _BE32.pack(svc.netmask) if key.af == AF_INET else _U32.pack(svc.netmask)
        rest = (
            _asciiz(IPVS_SVC_ATTR_SCHED_NAME, svc.scheduler)
            + _ATTR_FLAGS.pack(
                12, IPVS_SVC_ATTR_FLAGS, svc.flags & ~IP_VS_SVC_F_HASHED, FLAGS_MASK_ALL
            )
            + _ATTR_U32.pack(8, IPVS_SVC_ATTR_TIMEOUT, svc.timeout)
            + _NLA.pack(8, IPVS_SVC_ATTR_NETMASK)
            + netmask
        )
        if svc.pe_name:
            # Absent PE_NAME on SET clears the engine (ip_vs_edit_service).
            rest += _asciiz(IPVS_SVC_ATTR_PE_NAME, svc.pe_name)
        n = 4 + len(attrs) + len(rest)
        return _NLA.pack(n, IPVS_CMD_ATTR_SERVICE) + attrs + rest

    @staticmethod
    def dest_full(d: Dest) -> bytes:
        """IPVS_CMD_ATTR_DEST nest with every editable attribute (NEW/SET).

        Tunnel attributes are always sent so that SET_DEST can reset them to 0.
        """
        k = d.key
        layout = _DEST_LAYOUT.get(k.af)
        if layout is None:
            raise ValueError(f"unsupported address family {k.af}")
        packer, nest_len, addr_len = layout
        return packer.pack(
            nest_len,
            IPVS_CMD_ATTR_DEST,
            addr_len,
            IPVS_DEST_ATTR_ADDR,
            _inet_pton(k.af, k.address),
            6,
            IPVS_DEST_ATTR_PORT,
            _htons(k.port),
            6,
            IPVS_DEST_ATTR_ADDR_FAMILY,
            k.af,
            8,
            IPVS_DEST_ATTR_FWD_METHOD,
            d.fwd,
            8,
            IPVS_DEST_ATTR_WEIGHT,
            d.weight,
            8,
            IPVS_DEST_ATTR_U_THRESH,
            d.u_threshold,
            8,
            IPVS_DEST_ATTR_L_THRESH,
            d.l_threshold,
            5,
            IPVS_DEST_ATTR_TUN_TYPE,
            d.tun_type,
            6,
            IPVS_DEST_ATTR_TUN_PORT,
            _htons(d.tun_port),
            6,
            IPVS_DEST_ATTR_TUN_FLAGS,
            d.tun_flags,
        )

    @staticmethod
    def dest_key(k: DestKey) -> bytes:
        """IPVS_CMD_ATTR_DEST nest naming a dest (DEL_DEST).

        ADDR_FAMILY is sent so that a mixed-family (tunnel) dest is found.
        """
        if k.af == AF_INET:
            return _DEST_KEY4.pack(
                28,
                IPVS_CMD_ATTR_DEST,
                8,
                IPVS_DEST_ATTR_ADDR,
                _inet_pton(AF_INET, k.address),
                6,
                IPVS_DEST_ATTR_PORT,
                _htons(k.port),
                6,
                IPVS_DEST_ATTR_ADDR_FAMILY,
                AF_INET,
            )
        if k.af == AF_INET6:
            return _DEST_KEY6.pack(
                40,
                IPVS_CMD_ATTR_DEST,
                20,
                IPVS_DEST_ATTR_ADDR,
                _inet_pton(AF_INET6, k.address),
                6,
                IPVS_DEST_ATTR_PORT,
                _htons(k.port),
                6,
                IPVS_DEST_ATTR_ADDR_FAMILY,
                AF_INET6,
            )
        raise ValueError(f"unsupported address family {k.af}")

    @staticmethod
    def timeouts(t: Timeouts) -> bytes:
        # ip_vs_set_timeout leaves a 0 value unchanged; send only what is set.
        out = b""
        if t.tcp:
            out += _ATTR_U32.pack(8, IPVS_CMD_ATTR_TIMEOUT_TCP, t.tcp)
        if t.tcp_fin:
            out += _ATTR_U32.pack(8, IPVS_CMD_ATTR_TIMEOUT_TCP_FIN, t.tcp_fin)
        if t.udp:
            out += _ATTR_U32.pack(8, IPVS_CMD_ATTR_TIMEOUT_UDP, t.udp)
        return out

    # ---- whole messages

    def op_body(self, op: Op) -> tuple[int, bytes]:
        """(IPVS command, attributes) for ``op``; raises ValueError/struct.error/OSError
        when a field cannot be encoded."""
        t = type(op)
        if t is AddDest:
            assert isinstance(op, AddDest)
            return IPVS_CMD_NEW_DEST, self.service_key(op.service) + self.dest_full(op.dest)
        if t is EditDest:
            assert isinstance(op, EditDest)
            return IPVS_CMD_SET_DEST, self.service_key(op.service) + self.dest_full(op.dest)
        if t is DelDest:
            assert isinstance(op, DelDest)
            return IPVS_CMD_DEL_DEST, self.service_key(op.service) + self.dest_key(op.dest)
        if t is AddService:
            assert isinstance(op, AddService)
            return IPVS_CMD_NEW_SERVICE, self.service_full(op.service)
        if t is EditService:
            assert isinstance(op, EditService)
            return IPVS_CMD_SET_SERVICE, self.service_full(op.service)
        if t is DelService:
            assert isinstance(op, DelService)
            return IPVS_CMD_DEL_SERVICE, self.service_key(op.key)
        if t is SetTimeouts:
            assert isinstance(op, SetTimeouts)
            return IPVS_CMD_SET_CONFIG, self.timeouts(op.timeouts)
        raise TypeError(f"not an IPVS operation: {op!r}")

    def message(self, cmd: int, body: bytes, seq: int, flags: int = NLM_F_REQUEST) -> bytes:
        return (
            _HDR.pack(_HDR_SIZE + len(body), self.family, flags, seq, 0, cmd, IPVS_GENL_VERSION, 0)
            + body
        )

    def encode(self, op: Op, seq: int, flags: int = NLM_F_REQUEST) -> bytes:
        """One complete netlink message for ``op``."""
        cmd, body = self.op_body(op)
        return self.message(cmd, body, seq, flags)

    def dump_services(self, seq: int) -> bytes:
        return self.message(IPVS_CMD_GET_SERVICE, b"", seq, NLM_F_REQUEST | NLM_F_DUMP)

    def dump_dests(self, key: ServiceKey, seq: int) -> bytes:
        return self.message(
            IPVS_CMD_GET_DEST, self.service_key(key), seq, NLM_F_REQUEST | NLM_F_DUMP
        )

    def get_service(self, key: ServiceKey, seq: int) -> bytes:
        return self.message(IPVS_CMD_GET_SERVICE, self.service_key(key), seq)

    def get_config(self, seq: int) -> bytes:
        return self.message(IPVS_CMD_GET_CONFIG, b"", seq)

    # ---- sync daemons

    @staticmethod
    def daemon_attrs(d: SyncDaemon) -> bytes:
        """The IPVS_CMD_ATTR_DAEMON nest that starts ``d``; defaults are left out."""
        inner = _ATTR_U32.pack(8, IPVS_DAEMON_ATTR_STATE, d.state)
        inner += _asciiz(IPVS_DAEMON_ATTR_MCAST_IFN, d.interface)
        inner += _ATTR_U32.pack(8, IPVS_DAEMON_ATTR_SYNC_ID, d.sync_id)
        if d.max_len:
            inner += _ATTR_U16.pack(6, IPVS_DAEMON_ATTR_SYNC_MAXLEN, d.max_len)
        if d.group:
            if ":" in d.group:
                inner += _attr(IPVS_DAEMON_ATTR_MCAST_GROUP6, _inet_pton(AF_INET6, d.group))
            else:
                inner += _attr(IPVS_DAEMON_ATTR_MCAST_GROUP, _inet_pton(AF_INET, d.group))
        if d.port:
            inner += _ATTR_U16.pack(6, IPVS_DAEMON_ATTR_MCAST_PORT, d.port)
        if d.ttl:
            inner += _attr(IPVS_DAEMON_ATTR_MCAST_TTL, _U8.pack(d.ttl))
        return _attr(IPVS_CMD_ATTR_DAEMON, inner)

    def new_daemon(self, d: SyncDaemon, seq: int) -> bytes:
        """IPVS_CMD_NEW_DAEMON with an ACK asked: EEXIST when that role already runs."""
        return self.message(
            IPVS_CMD_NEW_DAEMON, self.daemon_attrs(d), seq, NLM_F_REQUEST | NLM_F_ACK
        )

    def del_daemon(self, state: int, seq: int) -> bytes:
        """IPVS_CMD_DEL_DAEMON (only the state is read): ESRCH when that role is not running."""
        body = _attr(IPVS_CMD_ATTR_DAEMON, _ATTR_U32.pack(8, IPVS_DAEMON_ATTR_STATE, state))
        return self.message(IPVS_CMD_DEL_DAEMON, body, seq, NLM_F_REQUEST | NLM_F_ACK)

    def dump_daemons(self, seq: int) -> bytes:
        """IPVS_CMD_GET_DAEMON is a dump only: one IPVS_CMD_NEW_DAEMON message per role."""
        return self.message(IPVS_CMD_GET_DAEMON, b"", seq, NLM_F_REQUEST | NLM_F_DUMP)


# --- decoding ---------------------------------------------------------------------


def iter_attrs(buf: bytes, off: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type, payload offset, payload end) of each attribute in ``buf[off:end]``.

    For cold paths; the dump decoders below walk inline.
    """
    unpack = _NLA.unpack_from
    while off + 4 <= end:
        ln, kind = unpack(buf, off)
        if ln < 4 or off + ln > end:
            raise ValueError(f"malformed netlink attribute at offset {off}")
        yield kind & NLA_TYPE_MASK, off + 4, off + ln
        off += (ln + 3) & ~3


def _cstr(buf: bytes, off: int, end: int) -> str:
    raw = buf[off:end]
    nul = raw.find(b"\0")
    return (raw if nul < 0 else raw[:nul]).decode("ascii", "replace")


def decode_stats(buf: bytes, off: int, end: int) -> Stats:
    """An IPVS_*_ATTR_STATS or _STATS64 nest (u32 or u64 counters alike)."""
    if end - off >= 60:
        v = _STATS64_HEAD.unpack_from(buf, off)
        if (v[0::3], v[1::3]) == _STATS64_SHAPE:
            if not (v[2] or v[5] or v[8] or v[11] or v[14]):
                return ZERO_STATS
            return Stats(v[2], v[5], v[8], v[11], v[14])
    c = [0, 0, 0, 0, 0, 0]
    unpack = _NLA.unpack_from
    while off + 4 <= end:
        ln, kind = unpack(buf, off)
        if ln < 4:
            break
        kind &= NLA_TYPE_MASK
        if 1 <= kind <= 5:
            if ln == 12:
                c[kind] = _U64.unpack_from(buf, off + 4)[0]
            elif ln == 8:
                c[kind] = _U32.unpack_from(buf, off + 4)[0]
        off += (ln + 3) & ~3
    if not any(c):
        return ZERO_STATS
    return Stats(c[1], c[2], c[3], c[4], c[5])


def _walk_service(buf: bytes, off: int, end: int) -> KernelService:
    af = proto = port = fwmark = timeout = flags = netmask = 0
    addr_off = -1
    sched = pe = ""
    st = st64 = -1
    st_end = st64_end = 0
    unpack = _NLA.unpack_from
    while off + 4 <= end:
        ln, kind = unpack(buf, off)
        if ln < 4:
            raise ValueError("malformed IPVS service attribute")
        p = off + 4
        kind &= NLA_TYPE_MASK
        if kind == IPVS_SVC_ATTR_AF:
            af = _U16.unpack_from(buf, p)[0]
        elif kind == IPVS_SVC_ATTR_PROTOCOL:
            proto = _U16.unpack_from(buf, p)[0]
        elif kind == IPVS_SVC_ATTR_ADDR:
            addr_off = p
        elif kind == IPVS_SVC_ATTR_PORT:
            port = _BE16.unpack_from(buf, p)[0]
        elif kind == IPVS_SVC_ATTR_FWMARK:
            fwmark = _U32.unpack_from(buf, p)[0]
        elif kind == IPVS_SVC_ATTR_SCHED_NAME:
            sched = _cstr(buf, p, off + ln)
        elif kind == IPVS_SVC_ATTR_FLAGS:
            flags = _FLAGS.unpack_from(buf, p)[0]
        elif kind == IPVS_SVC_ATTR_TIMEOUT:
            timeout = _U32.unpack_from(buf, p)[0]
        elif kind == IPVS_SVC_ATTR_NETMASK:
            netmask = p
        elif kind == IPVS_SVC_ATTR_STATS64:
            st64, st64_end = p, off + ln
        elif kind == IPVS_SVC_ATTR_STATS:
            st, st_end = p, off + ln
        elif kind == IPVS_SVC_ATTR_PE_NAME:
            pe = _cstr(buf, p, off + ln)
        off += (ln + 3) & ~3
    if af == AF_INET:
        mask = _BE32.unpack_from(buf, netmask)[0] if netmask else 0
        address = _inet_ntop(AF_INET, buf[addr_off : addr_off + 4]) if addr_off >= 0 else ""
    elif af == AF_INET6:
        mask = _U32.unpack_from(buf, netmask)[0] if netmask else 0
        address = _inet_ntop(AF_INET6, buf[addr_off : addr_off + 16]) if addr_off >= 0 else ""
    else:
        raise ValueError(f"IPVS service with unknown address family {af}")
    key = ServiceKey(af, 0, "", 0, fwmark) if fwmark else ServiceKey(af, proto, address, port)
    if st64 >= 0:
        stats = decode_stats(buf, st64, st64_end)
    elif st >= 0:
        stats = decode_stats(buf, st, st_end)
    else:
        stats = ZERO_STATS
    svc = Service(key, sched, flags & ~IP_VS_SVC_F_HASHED, timeout, mask, pe)
    return KernelService(svc, {}, stats)


def _walk_dest(buf: bytes, off: int, end: int, default_af: int) -> KernelDest:
    af = default_af
    port = fwd = weight = uth = lth = act = inact = pers = 0
    tun_type = tun_port = tun_flags = 0
    addr_off = -1
    st = st64 = -1
    st_end = st64_end = 0
    unpack = _NLA.unpack_from
    u32 = _U32.unpack_from
    while off + 4 <= end:
        ln, kind = unpack(buf, off)
        if ln < 4:
            raise ValueError("malformed IPVS dest attribute")
        p = off + 4
        kind &= NLA_TYPE_MASK
        if kind == IPVS_DEST_ATTR_ADDR:
            addr_off = p
        elif kind == IPVS_DEST_ATTR_PORT:
            port = _BE16.unpack_from(buf, p)[0]
        elif kind == IPVS_DEST_ATTR_FWD_METHOD:
            fwd = u32(buf, p)[0] & IP_VS_CONN_F_FWD_MASK
        elif kind == IPVS_DEST_ATTR_WEIGHT:
            weight = _I32.unpack_from(buf, p)[0]
        elif kind == IPVS_DEST_ATTR_TUN_TYPE:
            tun_type = buf[p]
        elif kind == IPVS_DEST_ATTR_TUN_PORT:
            tun_port = _BE16.unpack_from(buf, p)[0]
        elif kind == IPVS_DEST_ATTR_TUN_FLAGS:
            tun_flags = _U16.unpack_from(buf, p)[0]
        elif kind == IPVS_DEST_ATTR_U_THRESH:
            uth = u32(buf, p)[0]
        elif kind == IPVS_DEST_ATTR_L_THRESH:
            lth = u32(buf, p)[0]
        elif kind == IPVS_DEST_ATTR_ACTIVE_CONNS:
            act = u32(buf, p)[0]
        elif kind == IPVS_DEST_ATTR_INACT_CONNS:
            inact = u32(buf, p)[0]
        elif kind == IPVS_DEST_ATTR_PERSIST_CONNS:
            pers = u32(buf, p)[0]
        elif kind == IPVS_DEST_ATTR_ADDR_FAMILY:
            af = _U16.unpack_from(buf, p)[0]
        elif kind == IPVS_DEST_ATTR_STATS64:
            st64, st64_end = p, off + ln
        elif kind == IPVS_DEST_ATTR_STATS:
            st, st_end = p, off + ln
        off += (ln + 3) & ~3
    if addr_off < 0:
        raise ValueError("IPVS dest without an address")
    if af == AF_INET:
        address = _inet_ntop(AF_INET, buf[addr_off : addr_off + 4])
    else:
        address = _inet_ntop(AF_INET6, buf[addr_off : addr_off + 16])
    if st64 >= 0:
        stats = decode_stats(buf, st64, st64_end)
    elif st >= 0:
        stats = decode_stats(buf, st, st_end)
    else:
        stats = ZERO_STATS
    dest = Dest(DestKey(af, address, port), fwd, weight, uth, lth, tun_type, tun_port, tun_flags)
    return KernelDest(dest, act, inact, pers, stats)


# --- the dump's value objects (four per real server), by short names ---------------

_ServiceKey = ServiceKey
_Service = Service
_KernelService = KernelService
_DestKey = DestKey
_Dest = Dest
_KernelDest = KernelDest
_Stats = Stats


# --- learned layouts: the dump fast path ------------------------------------------------
#
# The kernel writes every service and every dest of a dump with the same
# attributes in the same order (ip_vs_genl_fill_service/_dest). After one
# generic walk we compile that exact layout into a single Struct; a later nest
# of the same length is decoded with one unpack_from, checked by comparing its
# (length, type) headers with the learned ones, and its fields picked with one
# itemgetter. A nest that does not match falls back to the walk (and is learned
# in turn). This keeps the per-object cost, and the garbage (one tuple instead
# of dozens), low enough that the kernel, not Python, dominates a dump.

_S = "s"  # variable-length bytes: the payload's own length

# attribute type -> struct code of its payload, and the field order produced.
_DEST_CODES: Final = {
    IPVS_DEST_ATTR_ADDR: _S,
    IPVS_DEST_ATTR_PORT: "H",
    IPVS_DEST_ATTR_FWD_METHOD: "I",
    IPVS_DEST_ATTR_WEIGHT: "i",
    IPVS_DEST_ATTR_U_THRESH: "I",
    IPVS_DEST_ATTR_L_THRESH: "I",
    IPVS_DEST_ATTR_ACTIVE_CONNS: "I",
    IPVS_DEST_ATTR_INACT_CONNS: "I",
    IPVS_DEST_ATTR_PERSIST_CONNS: "I",
    IPVS_DEST_ATTR_ADDR_FAMILY: "H",
    IPVS_DEST_ATTR_TUN_TYPE: "B",
    IPVS_DEST_ATTR_TUN_PORT: "H",
    IPVS_DEST_ATTR_TUN_FLAGS: "H",
}
_DEST_ORDER: Final = tuple(_DEST_CODES)
_DEST_DEFAULTS: Final = (b"", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
_SVC_CODES: Final = {
    IPVS_SVC_ATTR_AF: "H",
    IPVS_SVC_ATTR_PROTOCOL: "H",
    IPVS_SVC_ATTR_ADDR: _S,
    IPVS_SVC_ATTR_PORT: "H",
    IPVS_SVC_ATTR_FWMARK: "I",
    IPVS_SVC_ATTR_SCHED_NAME: _S,
    IPVS_SVC_ATTR_FLAGS: "I4x",
    IPVS_SVC_ATTR_TIMEOUT: "I",
    IPVS_SVC_ATTR_NETMASK: "I",
    IPVS_SVC_ATTR_PE_NAME: _S,
}
_SVC_ORDER: Final = tuple(_SVC_CODES)
_SVC_DEFAULTS: Final = (0, 0, b"", 0, 0, b"", 0, 0, 0, b"", 0, 0, 0, 0, 0)
_CODE_LEN: Final = {"H": 2, "I": 4, "i": 4, "B": 1, "I4x": 8}


@dataclass(frozen=True, slots=True)
class _Layout:
    layout: struct.Struct
    headers: Callable[[tuple[Any, ...]], tuple[int, ...]]
    expected: tuple[int, ...]
    fields: Callable[[tuple[Any, ...]], tuple[Any, ...]]


def _learn(
    buf: bytes,
    off: int,
    end: int,
    codes: dict[int, str],
    order: tuple[int, ...],
    stats_kind: int,
    narrow_kind: int,
) -> _Layout | None:
    """The layout of the nest ``buf[off:end]``, or None: decode such nests by the walk.

    ``stats_kind`` is the STATS64 nest, whose counters the layout reads;
    ``narrow_kind`` the 32-bit STATS nest, which it cannot: a nest that has it without
    STATS64 (older kernels) is not learned.
    """
    fmt = ["="]
    wide = narrow = False
    hdr_pos: list[int] = []
    expected: list[int] = []
    pos: dict[int, int] = {}  # attribute type (or -counter) -> index in the unpacked tuple
    n = 0
    unpack = _NLA.unpack_from
    while off + 4 <= end:
        ln, raw = unpack(buf, off)
        if ln < 4 or off + ln > end:
            return None
        kind = raw & NLA_TYPE_MASK
        plen = ln - 4
        fmt.append("HH")
        hdr_pos += (n, n + 1)
        expected += (ln, raw)
        n += 2
        code = codes.get(kind)
        if kind == narrow_kind:
            narrow = True
        if kind == stats_kind:
            wide = True
            p, e = off + 4, off + ln
            while p + 4 <= e:
                cl, craw = unpack(buf, p)
                if cl != 12:
                    return None
                fmt.append("HHQ")
                hdr_pos += (n, n + 1)
                expected += (12, craw)
                if 1 <= craw & NLA_TYPE_MASK <= 5:
                    pos[-(craw & NLA_TYPE_MASK)] = n + 2
                n += 3
                p += 12
            if p != e:
                return None
        elif code is not None and (code == _S or _CODE_LEN[code] == plen):
            # a repeated attribute: the last one counts, as in the walk
            fmt.append(f"{plen}s" if code == _S else code)
            pos[kind] = n
            n += 1
        elif plen:
            fmt.append(f"{plen}x")
        pad = _align(ln) - ln
        if pad:
            fmt.append(f"{pad}x")
        off += _align(ln)
    if off != end or not hdr_pos or (narrow and not wide):
        return None
    picks = [pos.get(k, n + i) for i, k in enumerate(order)]
    picks += [pos.get(-c, n + len(order) + c - 1) for c in range(1, 6)]
    return _Layout(
        struct.Struct("".join(fmt)), itemgetter(*hdr_pos), tuple(expected), itemgetter(*picks)
    )


class _LayoutCache:
    """Learned layouts by nest length (bounded; a miss re-learns)."""

    __slots__ = ("dest", "service")

    def __init__(self) -> None:
        self.dest: dict[int, _Layout | None] = {}
        self.service: dict[int, _Layout | None] = {}

    @staticmethod
    def put(cache: dict[int, _Layout | None], size: int, layout: _Layout | None) -> None:
        if len(cache) >= 256:
            cache.clear()
        cache[size] = layout


_LAYOUTS = _LayoutCache()
_ntohs = socket.ntohs
_ntohl = socket.ntohl


def decode_service(buf: bytes, off: int, end: int) -> KernelService:
    """The payload of an IPVS_CMD_ATTR_SERVICE nest, as dumped."""
    lay = _LAYOUTS.service.get(end - off)
    if lay is not None:
        vals = lay.layout.unpack_from(buf, off)
        if lay.headers(vals) == lay.expected:
            (
                af,
                proto,
                addr,
                port,
                fwmark,
                sched,
                flags,
                timeout,
                netmask,
                pe,
                c1,
                c2,
                c3,
                c4,
                c5,
            ) = lay.fields(vals + _SVC_DEFAULTS)
            if fwmark:
                key = _ServiceKey(af, 0, "", 0, fwmark)
            elif af == AF_INET:
                key = _ServiceKey(af, proto, _inet_ntop(AF_INET, addr[:4]), _ntohs(port), 0)
            else:
                key = _ServiceKey(af, proto, _inet_ntop(AF_INET6, addr[:16]), _ntohs(port), 0)
            if af == AF_INET:
                netmask = _ntohl(netmask)
            nul = sched.find(b"\0")
            name = (sched if nul < 0 else sched[:nul]).decode("ascii", "replace")
            if pe:
                nul = pe.find(b"\0")
                pe = (pe if nul < 0 else pe[:nul]).decode("ascii", "replace")
            else:
                pe = ""
            stats = _Stats(c1, c2, c3, c4, c5) if (c1 or c2 or c3 or c4 or c5) else ZERO_STATS
            return _KernelService(
                _Service(key, name, flags & ~IP_VS_SVC_F_HASHED, timeout, netmask, pe), {}, stats
            )
    ks = _walk_service(buf, off, end)
    _LayoutCache.put(
        _LAYOUTS.service,
        end - off,
        _learn(buf, off, end, _SVC_CODES, _SVC_ORDER, IPVS_SVC_ATTR_STATS64, IPVS_SVC_ATTR_STATS),
    )
    return ks


def decode_dest(buf: bytes, off: int, end: int, default_af: int) -> KernelDest:
    """The payload of an IPVS_CMD_ATTR_DEST nest, as dumped.

    ``default_af`` is the service's family, for kernels older than 3.18 that do
    not report IPVS_DEST_ATTR_ADDR_FAMILY.
    """
    lay = _LAYOUTS.dest.get(end - off)
    if lay is not None:
        vals = lay.layout.unpack_from(buf, off)
        if lay.headers(vals) == lay.expected:
            (
                addr,
                port,
                fwd,
                weight,
                uth,
                lth,
                act,
                inact,
                pers,
                af,
                tun_type,
                tun_port,
                tun_flags,
                c1,
                c2,
                c3,
                c4,
                c5,
            ) = lay.fields(vals + _DEST_DEFAULTS)
            if not af:
                af = default_af
            address = (
                _inet_ntop(AF_INET, addr[:4]) if af == AF_INET else _inet_ntop(AF_INET6, addr[:16])
            )
            stats = _Stats(c1, c2, c3, c4, c5) if (c1 or c2 or c3 or c4 or c5) else ZERO_STATS
            return _KernelDest(
                _Dest(
                    _DestKey(af, address, _ntohs(port)),
                    fwd & IP_VS_CONN_F_FWD_MASK,
                    weight,
                    uth,
                    lth,
                    tun_type,
                    _ntohs(tun_port),
                    tun_flags,
                ),
                act,
                inact,
                pers,
                stats,
            )
    kd = _walk_dest(buf, off, end, default_af)
    _LayoutCache.put(
        _LAYOUTS.dest,
        end - off,
        _learn(
            buf, off, end, _DEST_CODES, _DEST_ORDER, IPVS_DEST_ATTR_STATS64, IPVS_DEST_ATTR_STATS
        ),
    )
    return kd


def decode_timeouts(buf: bytes, off: int, end: int) -> Timeouts:
    """The attributes of a GET_CONFIG reply."""
    tcp = fin = udp = 0
    for kind, p, _e in iter_attrs(buf, off, end):
        if kind == IPVS_CMD_ATTR_TIMEOUT_TCP:
            tcp = _U32.unpack_from(buf, p)[0]
        elif kind == IPVS_CMD_ATTR_TIMEOUT_TCP_FIN:
            fin = _U32.unpack_from(buf, p)[0]
        elif kind == IPVS_CMD_ATTR_TIMEOUT_UDP:
            udp = _U32.unpack_from(buf, p)[0]
    return Timeouts(tcp, fin, udp)


def decode_daemon(buf: bytes, off: int, end: int) -> SyncDaemon | None:
    """The IPVS_CMD_ATTR_DAEMON of one GET_DAEMON reply message (None: not there)."""
    for kind, p, e in iter_attrs(buf, off, end):
        if kind != IPVS_CMD_ATTR_DAEMON:
            continue
        state = sync_id = max_len = port = ttl = 0
        ifname = group = ""
        for k, q, qe in iter_attrs(buf, p, e):
            if k == IPVS_DAEMON_ATTR_STATE:
                state = _U32.unpack_from(buf, q)[0]
            elif k == IPVS_DAEMON_ATTR_MCAST_IFN:
                ifname = _cstr(buf, q, qe)
            elif k == IPVS_DAEMON_ATTR_SYNC_ID:
                sync_id = _U32.unpack_from(buf, q)[0]
            elif k == IPVS_DAEMON_ATTR_SYNC_MAXLEN:
                max_len = _U16.unpack_from(buf, q)[0]
            elif k == IPVS_DAEMON_ATTR_MCAST_GROUP and qe - q >= 4:
                group = _inet_ntop(AF_INET, buf[q : q + 4])
            elif k == IPVS_DAEMON_ATTR_MCAST_GROUP6 and qe - q >= 16:
                group = _inet_ntop(AF_INET6, buf[q : q + 16])
            elif k == IPVS_DAEMON_ATTR_MCAST_PORT:
                port = _U16.unpack_from(buf, q)[0]
            elif k == IPVS_DAEMON_ATTR_MCAST_TTL:
                ttl = _U8.unpack_from(buf, q)[0]
        return SyncDaemon(state, ifname, sync_id, max_len, group, port, ttl)
    return None


def decode_error(buf: bytes, off: int, length: int, flags: int) -> tuple[int, int, str]:
    """(positive errno or 0, seq of the request, extack text) of an NLMSG_ERROR at ``off``."""
    if length < 36:
        raise ValueError("truncated NLMSG_ERROR")
    err = -_I32.unpack_from(buf, off + 16)[0]
    orig_len, _t, _f, orig_seq, _pid = _NLMSGHDR.unpack_from(buf, off + 20)
    extack = ""
    if flags & NLM_F_ACK_TLVS:
        # NETLINK_CAP_ACK: only the request's header is echoed; otherwise all of it.
        tlv = off + 36 if flags & NLM_F_CAPPED else off + 20 + _align(orig_len)
        extack = _extack(buf, tlv, off + length)
    return err, orig_seq, extack


def _extack(buf: bytes, off: int, end: int) -> str:
    try:
        for kind, p, e in iter_attrs(buf, off, end):
            if kind == NLMSGERR_ATTR_MSG:
                return _cstr(buf, p, e)
    except ValueError:
        pass
    return ""


def decode_done(buf: bytes, off: int, length: int, flags: int) -> tuple[int, str]:
    """(positive errno or 0, extack) carried by an NLMSG_DONE."""
    if length < 20:
        return 0, ""
    err = -_I32.unpack_from(buf, off + 16)[0]
    extack = _extack(buf, off + 20, off + length) if flags & NLM_F_ACK_TLVS else ""
    return err, extack


def decode_family_id(buf: bytes, off: int, end: int) -> int:
    """CTRL_ATTR_FAMILY_ID from the attributes of a CTRL_CMD_NEWFAMILY reply."""
    for kind, p, _e in iter_attrs(buf, off, end):
        if kind == CTRL_ATTR_FAMILY_ID:
            return int(_U16.unpack_from(buf, p)[0])
    raise ValueError("generic netlink family reply without CTRL_ATTR_FAMILY_ID")


# --- pipelines: the request/response state machines the drivers share ------------------


class SeqCounter:
    """Sequence numbers for one socket (u32, never 0)."""

    __slots__ = ("_n",)

    def __init__(self, start: int = 1) -> None:
        self._n = start

    def __call__(self) -> int:
        n = self._n
        self._n = n + 1 if n < 0xFFFFFFFF else 1
        return n


class Pipeline:
    """Base class: turns requests into batches and datagrams into results.

    Drivers loop: ``data = p.next_batch()`` (send it if non-empty), then receive
    one datagram and ``p.feed(data)``, until ``p.done``. ``expects_reply`` tells
    whether the pipeline waits for the kernel (else the driver must not block).
    Messages whose sequence number the pipeline did not send are ignored: they
    are leftovers of an earlier, abandoned pipeline on the same socket.
    """

    def __init__(self, seqs: SeqCounter, counters: Counters | None = None) -> None:
        self.seqs = seqs
        self.counters = counters if counters is not None else Counters()
        self.failure: Exception | None = None  # set when the request as a whole failed

    @property
    def done(self) -> bool:
        raise NotImplementedError

    @property
    def expects_reply(self) -> bool:
        raise NotImplementedError

    def next_batch(self) -> bytes:
        raise NotImplementedError

    def send_failed(self, err: OSError) -> None:
        """The last batch could not be sent (sendmsg raised)."""
        raise NotImplementedError

    def feed(self, data: bytes) -> None:
        """Process one received datagram (one or more netlink messages)."""
        self.counters.datagrams_received += 1
        off = 0
        n = len(data)
        unpack = _NLMSGHDR.unpack_from
        while off + 16 <= n:
            length, kind, flags, seq, _pid = unpack(data, off)
            if length < 16 or off + length > n:
                raise ValueError(f"malformed netlink message at offset {off}")
            if kind == NLMSG_ERROR:
                err, oseq, extack = decode_error(data, off, length, flags)
                self._on_error(oseq, err, extack)
            elif kind == NLMSG_DONE:
                err, extack = decode_done(data, off, length, flags)
                self._on_done(seq, flags, err, extack)
            elif kind >= 0x10:  # family messages; below are NOOP/OVERRUN
                self._on_data(seq, flags, data, off + _HDR_SIZE, off + length)
            off += (length + 3) & ~3

    def _on_error(self, seq: int, err: int, extack: str) -> None:
        raise NotImplementedError

    def _on_done(self, seq: int, flags: int, err: int, extack: str) -> None:
        pass

    def _on_data(self, seq: int, flags: int, buf: bytes, off: int, end: int) -> None:
        pass


class ApplyPipeline(Pipeline):
    """Sends operations in windows; asks an ACK only of the last message of each.

    ``window`` (messages) and ``max_bytes`` bound one batch; the driver keeps
    ``window`` within what the receive buffer can hold if every message failed.
    ``results[i]`` is None for success or the OpError of ``ops[i]``.
    """

    def __init__(
        self,
        encoder: Encoder,
        ops: Sequence[Op],
        seqs: SeqCounter,
        counters: Counters | None = None,
        *,
        window: int = 1024,
        max_bytes: int = 1 << 20,
    ) -> None:
        super().__init__(seqs, counters)
        self.encoder = encoder
        self.ops = ops
        self.window = window
        self.max_bytes = max_bytes
        self.results: list[OpError | None] = [None] * len(ops)
        self._next = 0
        self._inflight: dict[int, int] = {}  # seq -> op index, for the open window
        self._ack_seq = -1
        self.last_batch = 0  # messages in the last batch returned

    @property
    def done(self) -> bool:
        return self._ack_seq < 0 and self._next >= len(self.ops)

    @property
    def expects_reply(self) -> bool:
        return self._ack_seq >= 0

    @property
    def pending(self) -> int:
        """Operations not yet sent."""
        return len(self.ops) - self._next

    def next_batch(self) -> bytes:
        if self._ack_seq >= 0:
            return b""
        ops, n = self.ops, len(self.ops)
        enc, seqs, inflight = self.encoder, self.seqs, self._inflight
        parts: list[bytes] = []
        size = 0
        limit = max(1, self.window)
        last: tuple[int, bytes, int] | None = None  # the message that will carry the ACK
        hdr, family, ver = _HDR.pack, enc.family, IPVS_GENL_VERSION
        while self._next < n and len(inflight) < limit and size < self.max_bytes:
            i = self._next
            self._next = i + 1
            op = ops[i]
            try:
                cmd, body = enc.op_body(op)
            except (ValueError, TypeError, OverflowError, struct.error, OSError) as exc:
                self.results[i] = _unencodable(op, exc)
                continue
            if last is not None:
                lcmd, lbody, lseq = last
                parts.append(
                    hdr(_HDR_SIZE + len(lbody), family, NLM_F_REQUEST, lseq, 0, lcmd, ver, 0)
                )
                parts.append(lbody)
            seq = seqs()
            inflight[seq] = i
            last = (cmd, body, seq)
            size += _HDR_SIZE + len(body)
        if last is None:
            return b""
        lcmd, lbody, lseq = last
        parts.append(
            hdr(_HDR_SIZE + len(lbody), family, NLM_F_REQUEST | NLM_F_ACK, lseq, 0, lcmd, ver, 0)
        )
        parts.append(lbody)
        self._ack_seq = lseq
        self.last_batch = len(inflight)
        self.counters.messages_sent += len(inflight)
        return b"".join(parts)

    def send_failed(self, err: OSError) -> None:
        code = err.errno or errno_mod.EIO
        for i in self._inflight.values():
            self.results[i] = op_error(self.ops[i], code, f"sendmsg: {err.strerror or err}")
        self._inflight.clear()
        self._ack_seq = -1

    def _on_error(self, seq: int, err: int, extack: str) -> None:
        i = self._inflight.get(seq)
        if i is None:
            return
        if err:
            self.counters.netlink_errors += 1
            self.results[i] = op_error(self.ops[i], err, extack)
        if seq == self._ack_seq:
            # Messages are processed in order: everything before the ACKed
            # message has been answered (errors) or succeeded silently.
            self._inflight.clear()
            self._ack_seq = -1


def _unencodable(op: Op, exc: BaseException) -> OpError:
    text = f"{describe_op(op)}: EINVAL (cannot be encoded: {exc})"
    return OpError(op, errno_mod.EINVAL, "EINVAL", "", text)


class DumpCache:
    """Decoded objects of the last complete full dump, by their exact bytes.

    The kernel reports an unchanged real server (same attributes, same
    counters: an idle one) with byte-identical attributes from one dump to the
    next; its immutable KernelDest is then reused instead of decoded again.
    Generational: a complete full dump replaces the cache with what it saw, so
    it never holds more than one table (plus the raw attribute bytes, ~330
    bytes per object). Partial or interrupted dumps only read it.
    """

    __slots__ = ("dests", "services")

    def __init__(self) -> None:
        # (service family, raw dest nest) -> KernelDest; raw service nest -> (Service, Stats)
        self.dests: dict[tuple[int, bytes], KernelDest] = {}
        self.services: dict[bytes, tuple[Service, Stats]] = {}

    def clear(self) -> None:
        self.dests = {}
        self.services = {}


# Dump pipeline request kinds.
_SVC_DUMP: Final = 0
_SVC_GET: Final = 1
_DEST_DUMP: Final = 2


class DumpPipeline(Pipeline):
    """Reads services and their dests into a KernelTable.

    ``keys=None``: one service dump, then one dest dump per service found.
    ``keys``: GET_SERVICE per key (doit requests, all batched; a missing service
    is simply absent from the table), then a dest dump per service found.

    ``dump_window`` dump requests are put in flight together when none is; the
    kernel starts the first and answers EBUSY to the others while it runs
    (``netlink_dump_start``), which are re-issued in order, up to
    ``max_reissues`` times in all. Because the kernel only advances a running
    dump inside ``recvmsg`` (and, up to 6.1 at least, never finishes a dump
    that produced data within the request), every non-empty dest dump needs a
    receive before the next one can start: a larger window saves nothing on
    such dumps and costs an EBUSY reply per waiting request. It pays off only
    when many services are empty. The driver pairs window 1 with recvmmsg,
    which collects a chunk and the NLMSG_DONE it triggers in one call.

    ``interrupted`` turns true when any reply carries NLM_F_DUMP_INTR: the
    pipeline then stops issuing requests, drains what is in flight, and the
    driver starts again.
    """

    def __init__(
        self,
        encoder: Encoder,
        seqs: SeqCounter,
        counters: Counters | None = None,
        *,
        keys: Sequence[ServiceKey] | None = None,
        dump_window: int = 1,
        get_window: int = 256,
        max_reissues: int = 100_000,
        cache: DumpCache | None = None,
    ) -> None:
        super().__init__(seqs, counters)
        self.encoder = encoder
        self.cache = cache
        # What this dump decoded, to become the cache if it is a complete full dump.
        self._seen_dests: dict[tuple[int, bytes], KernelDest] = {}
        self._seen_services: dict[bytes, tuple[Service, Stats]] = {}
        self._full = keys is None
        self.table: KernelTable = {}
        self.interrupted = False
        self.dump_window = dump_window
        self.get_window = get_window
        self._reissues_left = max_reissues
        self._dumps: deque[tuple[int, ServiceKey | None]] = deque()
        self._gets: deque[ServiceKey] = deque()
        # seq -> (kind, key); at most dump_window dumps and get_window gets.
        self._inflight: dict[int, tuple[int, ServiceKey | None]] = {}
        self._dumps_inflight = 0
        if keys is None:
            self._dumps.append((_SVC_DUMP, None))
        else:
            self._gets.extend(dict.fromkeys(keys))

    @property
    def done(self) -> bool:
        if self._inflight:
            return False
        return self.failure is not None or self.interrupted or not (self._dumps or self._gets)

    @property
    def expects_reply(self) -> bool:
        return bool(self._inflight)

    def _stopped(self) -> bool:
        return self.failure is not None or self.interrupted

    def next_batch(self) -> bytes:
        if self._stopped():
            return b""
        enc, seqs, inflight = self.encoder, self.seqs, self._inflight
        parts: list[bytes] = []
        gets = self._gets
        while gets and len(inflight) - self._dumps_inflight < self.get_window:
            key = gets.popleft()
            seq = seqs()
            try:
                parts.append(enc.get_service(key, seq))
            except (ValueError, OverflowError, struct.error, OSError):
                continue  # a key that cannot exist in the kernel: absent
            inflight[seq] = (_SVC_GET, key)
        if self._dumps_inflight == 0:
            dumps = self._dumps
            while dumps and self._dumps_inflight < max(1, self.dump_window):
                kind, dkey = dumps.popleft()
                seq = seqs()
                if kind == _SVC_DUMP:
                    parts.append(enc.dump_services(seq))
                else:
                    assert dkey is not None
                    parts.append(enc.dump_dests(dkey, seq))
                inflight[seq] = (kind, dkey)
                self._dumps_inflight += 1
        self.counters.messages_sent += len(parts)
        return b"".join(parts)

    def send_failed(self, err: OSError) -> None:
        self.failure = err
        self._inflight.clear()
        self._dumps_inflight = 0

    def _finish(self, seq: int) -> tuple[int, ServiceKey | None] | None:
        req = self._inflight.pop(seq, None)
        if req is not None and req[0] != _SVC_GET:
            self._dumps_inflight -= 1
        return req

    def _on_error(self, seq: int, err: int, extack: str) -> None:
        req = self._inflight.get(seq)
        if req is None or err == 0:
            return
        kind, key = req
        self._finish(seq)
        if err == errno_mod.EBUSY and kind != _SVC_GET:
            # netlink_dump_start: another dump of ours still runs; ask again later.
            if self._reissues_left <= 0:
                self.failure = NetlinkError(err, "IPVS dump: too many EBUSY re-issues")
                return
            self._reissues_left -= 1
            self.counters.ebusy_reissues += 1
            self._dumps.appendleft(req)
            return
        if kind == _SVC_GET and err in (errno_mod.ESRCH, errno_mod.ENOENT):
            return  # ip_vs_genl_get_cmd: the service does not exist
        self.counters.netlink_errors += 1
        what = (
            "IPVS service dump"
            if kind == _SVC_DUMP
            else f"IPVS {'GET_SERVICE' if kind == _SVC_GET else 'dest dump'} {key}"
        )
        if self.failure is None:
            self.failure = NetlinkError(err, what, extack)

    def _on_done(self, seq: int, flags: int, err: int, extack: str) -> None:
        req = self._inflight.get(seq)
        if req is None:
            return
        if flags & NLM_F_DUMP_INTR:
            self._interrupt()
        self._finish(seq)
        if err:
            self.counters.netlink_errors += 1
            if self.failure is None:
                self.failure = NetlinkError(err, "IPVS dump", extack)

    def _interrupt(self) -> None:
        if not self.interrupted:
            self.interrupted = True
            self.counters.dumps_interrupted += 1

    def feed(self, data: bytes) -> None:
        # Pipeline.feed with the data path inlined: this loop runs once per
        # service and once per real server of a dump.
        self.counters.datagrams_received += 1
        off = 0
        n = len(data)
        unpack = _NLMSGHDR.unpack_from
        nla = _NLA.unpack_from
        inflight = self._inflight
        cache = self.cache
        old_dests = cache.dests if cache is not None else {}
        old_services = cache.services if cache is not None else {}
        seen_dests = self._seen_dests
        table = self.table
        while off + 16 <= n:
            length, kind, flags, seq, _pid = unpack(data, off)
            if length < 16 or off + length > n:
                raise ValueError(f"malformed netlink message at offset {off}")
            nxt = off + ((length + 3) & ~3)
            if kind == NLMSG_ERROR:
                err, oseq, extack = decode_error(data, off, length, flags)
                self._on_error(oseq, err, extack)
            elif kind == NLMSG_DONE:
                err, extack = decode_done(data, off, length, flags)
                self._on_done(seq, flags, err, extack)
            elif kind >= 0x10 and length >= _HDR_SIZE + 4:
                req = inflight.get(seq)
                if req is not None:
                    if flags & NLM_F_DUMP_INTR:
                        self._interrupt()
                    rkind, key = req
                    ln, attr = nla(data, off + _HDR_SIZE)
                    p = off + _HDR_SIZE + 4
                    e = off + _HDR_SIZE + ln
                    if ln < 4 or e > off + length:
                        raise ValueError("malformed IPVS reply")
                    attr &= NLA_TYPE_MASK
                    if attr == IPVS_CMD_ATTR_DEST and rkind == _DEST_DUMP:
                        assert key is not None
                        ks = table.get(key)
                        if ks is not None:
                            ck = (key.af, data[p:e])
                            kd = old_dests.get(ck)
                            if kd is None:
                                kd = decode_dest(data, p, e, key.af)
                            seen_dests[ck] = kd
                            ks.dests[kd.dest.key] = kd
                    elif attr == IPVS_CMD_ATTR_SERVICE and rkind != _DEST_DUMP:
                        self._add_service(data, p, e, old_services)
                    if rkind == _SVC_GET:
                        self._finish(seq)  # a doit: its one reply completes it
            off = nxt

    def _add_service(
        self, data: bytes, p: int, e: int, old: dict[bytes, tuple[Service, Stats]]
    ) -> None:
        raw = data[p:e]
        hit = old.get(raw)
        if hit is None:
            ks = decode_service(data, p, e)
            hit = (ks.service, ks.stats)
        else:
            ks = _KernelService(hit[0], {}, hit[1])
        self._seen_services[raw] = hit
        skey = hit[0].key
        self.table[skey] = ks
        if not self._stopped():
            self._dumps.append((_DEST_DUMP, skey))

    def _on_data(self, seq: int, flags: int, buf: bytes, off: int, end: int) -> None:
        raise AssertionError("DumpPipeline.feed handles data messages itself")

    @property
    def complete(self) -> bool:
        """Done, without failure or interruption."""
        return self.done and self.failure is None and not self.interrupted

    def update_cache(self) -> None:
        """Make this dump the cache's contents (complete full dumps only)."""
        if self.cache is not None and self._full and self.complete:
            self.cache.dests = self._seen_dests
            self.cache.services = self._seen_services


class ConfigPipeline(Pipeline):
    """IPVS_CMD_GET_CONFIG: the global timeouts."""

    def __init__(
        self, encoder: Encoder, seqs: SeqCounter, counters: Counters | None = None
    ) -> None:
        super().__init__(seqs, counters)
        self.encoder = encoder
        self.timeouts: Timeouts | None = None
        self._seq = -1

    @property
    def done(self) -> bool:
        return self.timeouts is not None or self.failure is not None

    @property
    def expects_reply(self) -> bool:
        return self._seq >= 0 and not self.done

    def next_batch(self) -> bytes:
        if self._seq >= 0 or self.done:
            return b""
        self._seq = self.seqs()
        self.counters.messages_sent += 1
        return self.encoder.get_config(self._seq)

    def send_failed(self, err: OSError) -> None:
        self.failure = err

    def _on_error(self, seq: int, err: int, extack: str) -> None:
        if seq == self._seq and err:
            self.counters.netlink_errors += 1
            self.failure = NetlinkError(err, "IPVS GET_CONFIG", extack)

    def _on_data(self, seq: int, flags: int, buf: bytes, off: int, end: int) -> None:
        if seq == self._seq:
            self.timeouts = decode_timeouts(buf, off, end)


class FamilyPipeline(Pipeline):
    """CTRL_CMD_GETFAMILY: resolve a generic netlink family name to its id.

    ``family_id`` stays None and ``missing`` turns true when the kernel does not
    know the name (ENOENT from ctrl_getfamily).
    """

    def __init__(self, name: str, seqs: SeqCounter, counters: Counters | None = None) -> None:
        super().__init__(seqs, counters)
        self.name = name
        self.family_id: int | None = None
        self.missing = False
        self._seq = -1

    @property
    def done(self) -> bool:
        return self.family_id is not None or self.missing or self.failure is not None

    @property
    def expects_reply(self) -> bool:
        return self._seq >= 0 and not self.done

    def next_batch(self) -> bytes:
        if self._seq >= 0 or self.done:
            return b""
        self._seq = self.seqs()
        self.counters.messages_sent += 1
        return encode_getfamily(self.name, self._seq)

    def send_failed(self, err: OSError) -> None:
        self.failure = err

    def _on_error(self, seq: int, err: int, extack: str) -> None:
        if seq != self._seq or not err:
            return
        if err == errno_mod.ENOENT:
            self.missing = True
        else:
            self.counters.netlink_errors += 1
            self.failure = NetlinkError(err, f"generic netlink family {self.name!r}", extack)

    def _on_data(self, seq: int, flags: int, buf: bytes, off: int, end: int) -> None:
        if seq == self._seq:
            self.family_id = decode_family_id(buf, off, end)


class DaemonPipeline(Pipeline):
    """The sync daemons: one GET_DAEMON dump, or NEW_DAEMON/DEL_DAEMON requests in order.

    ``requests`` are (description, message builder) pairs run one at a time, each
    with an ACK; ``errors[i]`` is None or the NetlinkError of request ``i``. With no
    requests, the pipeline dumps: ``daemons`` maps state to what the kernel runs.
    """

    def __init__(
        self,
        encoder: Encoder,
        seqs: SeqCounter,
        counters: Counters | None = None,
        requests: Sequence[tuple[str, Callable[[int], bytes]]] = (),
    ) -> None:
        super().__init__(seqs, counters)
        self.encoder = encoder
        self.requests = list(requests)
        self.errors: list[NetlinkError | None] = [None] * len(self.requests)
        self.daemons: dict[int, SyncDaemon] = {}
        self._dump = not self.requests
        self._next = 0
        self._seq = -1
        self._finished = False

    @property
    def done(self) -> bool:
        return self._finished or self.failure is not None

    @property
    def expects_reply(self) -> bool:
        return self._seq >= 0 and not self.done

    def next_batch(self) -> bytes:
        if self._seq >= 0 or self.done:
            return b""
        seq = self.seqs()
        if self._dump:
            self._seq = seq
            self.counters.messages_sent += 1
            return self.encoder.dump_daemons(seq)
        if self._next >= len(self.requests):
            self._finished = True
            return b""
        self._seq = seq
        self.counters.messages_sent += 1
        return self.requests[self._next][1](seq)

    def send_failed(self, err: OSError) -> None:
        self.failure = err

    def _on_error(self, seq: int, err: int, extack: str) -> None:
        if seq != self._seq:
            return
        if self._dump:
            if err:
                self.counters.netlink_errors += 1
                self.failure = NetlinkError(err, "IPVS GET_DAEMON", extack)
            return
        if err:
            self.counters.netlink_errors += 1
            self.errors[self._next] = NetlinkError(err, self.requests[self._next][0], extack)
        self._next += 1
        self._seq = -1
        if self._next >= len(self.requests):
            self._finished = True

    def _on_done(self, seq: int, flags: int, err: int, extack: str) -> None:
        if seq != self._seq or not self._dump:
            return
        if err:
            self.counters.netlink_errors += 1
            self.failure = NetlinkError(err, "IPVS GET_DAEMON", extack)
        self._finished = True

    def _on_data(self, seq: int, flags: int, buf: bytes, off: int, end: int) -> None:
        if seq == self._seq and self._dump:
            d = decode_daemon(buf, off, end)
            if d is not None:
                self.daemons[d.state] = d
