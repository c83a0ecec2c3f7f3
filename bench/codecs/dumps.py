"""Dump replies as the kernel writes them, without a kernel.

``ip_vs_genl_fill_service`` / ``ip_vs_genl_fill_dest`` (net/netfilter/ipvs/ip_vs_ctl.c)
order and sizes: 16-byte addresses, HASHED in the flags, a 32-bit STATS nest (bytes
as u64) then STATS64. Counters are random but fixed by the seed: a busy table, whose
objects all differ from one dump to the next (the decode cache cannot help). The
service dump is packed into 32 KiB datagrams as ``netlink_dump`` fills its skb; each
dest dump is one datagram, its NLMSG_DONE included (what ``recvmmsg`` gathers).
"""

from __future__ import annotations

import random
import socket
import struct

from agent.ipvs import netlink as nl
from agent.ipvs.model import AF_INET, IP_VS_SVC_F_HASHED, IPPROTO_TCP

FAMILY = 0x24  # any generic netlink family id: the pipelines take what they are given
DESTS = 4
DATAGRAM = 32 * 1024


def _attr(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * (((n + 3) & ~3) - n)


def _stats(kind: int, vals: tuple[int, ...], wide: bool) -> bytes:
    out = b""
    for i, v in enumerate(vals, 1):
        if wide or i in (4, 5):
            out += _attr(i, struct.pack("=Q", v))
        else:
            out += _attr(i, struct.pack("=I", v & 0xFFFFFFFF))
    return _attr(kind, out)


def _counters(rng: random.Random) -> tuple[int, ...]:
    conns = rng.randrange(1, 10**6)
    pkts = conns * rng.randrange(5, 50)
    return (conns, pkts, pkts, pkts * 700, pkts * 90, *(rng.randrange(0, 5000) for _ in range(5)))


def _nlmsg(kind: int, flags: int, seq: int, payload: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(payload), kind, flags, seq, 0) + payload


def _genl(cmd: int, attrs: bytes, seq: int) -> bytes:
    return _nlmsg(FAMILY, nl.NLM_F_MULTI, seq, struct.pack("=BBH", cmd, 1, 0) + attrs)


def _done(seq: int) -> bytes:
    return _nlmsg(nl.NLMSG_DONE, nl.NLM_F_MULTI, seq, struct.pack("=i", 0))


def vip(i: int) -> str:
    return f"10.{100 + i // 65536}.{i // 256 % 256}.{i % 256}"


def rip(i: int, j: int) -> str:
    k = i * DESTS + j
    return f"172.{16 + k // 65536}.{k // 256 % 256}.{k % 256}"


def service_nest(i: int, rng: random.Random) -> bytes:
    raw = socket.inet_pton(AF_INET, vip(i)).ljust(16, b"\0")
    vals = _counters(rng)
    a = (
        _attr(nl.IPVS_SVC_ATTR_AF, struct.pack("=H", AF_INET))
        + _attr(nl.IPVS_SVC_ATTR_PROTOCOL, struct.pack("=H", IPPROTO_TCP))
        + _attr(nl.IPVS_SVC_ATTR_ADDR, raw)
        + _attr(nl.IPVS_SVC_ATTR_PORT, struct.pack("!H", 80))
        + _attr(nl.IPVS_SVC_ATTR_SCHED_NAME, b"wrr\0")
        + _attr(nl.IPVS_SVC_ATTR_FLAGS, struct.pack("=II", IP_VS_SVC_F_HASHED, 0xFFFFFFFF))
        + _attr(nl.IPVS_SVC_ATTR_TIMEOUT, struct.pack("=I", 0))
        + _attr(nl.IPVS_SVC_ATTR_NETMASK, struct.pack("!I", 0xFFFFFFFF))
        + _stats(nl.IPVS_SVC_ATTR_STATS, vals, wide=False)
        + _stats(nl.IPVS_SVC_ATTR_STATS64, vals, wide=True)
    )
    return _attr(nl.IPVS_CMD_ATTR_SERVICE, a)


def dest_nest(i: int, j: int, rng: random.Random) -> bytes:
    vals = _counters(rng)
    a = (
        _attr(nl.IPVS_DEST_ATTR_ADDR, socket.inet_pton(AF_INET, rip(i, j)).ljust(16, b"\0"))
        + _attr(nl.IPVS_DEST_ATTR_PORT, struct.pack("!H", 8080))
        + _attr(nl.IPVS_DEST_ATTR_FWD_METHOD, struct.pack("=I", 0))  # masq
        + _attr(nl.IPVS_DEST_ATTR_WEIGHT, struct.pack("=i", 1 + j))
        + _attr(nl.IPVS_DEST_ATTR_TUN_TYPE, struct.pack("=B", 0))
        + _attr(nl.IPVS_DEST_ATTR_TUN_PORT, struct.pack("!H", 0))
        + _attr(nl.IPVS_DEST_ATTR_TUN_FLAGS, struct.pack("=H", 0))
        + _attr(nl.IPVS_DEST_ATTR_U_THRESH, struct.pack("=I", 0))
        + _attr(nl.IPVS_DEST_ATTR_L_THRESH, struct.pack("=I", 0))
        + _attr(nl.IPVS_DEST_ATTR_ACTIVE_CONNS, struct.pack("=I", rng.randrange(0, 5000)))
        + _attr(nl.IPVS_DEST_ATTR_INACT_CONNS, struct.pack("=I", rng.randrange(0, 50000)))
        + _attr(nl.IPVS_DEST_ATTR_PERSIST_CONNS, struct.pack("=I", 0))
        + _attr(nl.IPVS_DEST_ATTR_ADDR_FAMILY, struct.pack("=H", AF_INET))
        + _stats(nl.IPVS_DEST_ATTR_STATS, vals, wide=False)
        + _stats(nl.IPVS_DEST_ATTR_STATS64, vals, wide=True)
    )
    return _attr(nl.IPVS_CMD_ATTR_DEST, a)


def full_dump(n: int, seed: int = 1) -> list[bytes]:
    """The datagrams of a full dump of ``n`` services x 4 real servers, in the order a
    ``DumpPipeline`` with window 1 and sequence numbers from 1 receives them."""
    rng = random.Random(seed)
    out: list[bytes] = []
    chunk = b""
    for i in range(n):
        msg = _genl(nl.IPVS_CMD_NEW_SERVICE, service_nest(i, rng), 1)
        if len(chunk) + len(msg) > DATAGRAM:
            out.append(chunk)
            chunk = b""
        chunk += msg
    out.append(chunk + _done(1))
    for i in range(n):
        seq = 2 + i
        msgs = b"".join(
            _genl(nl.IPVS_CMD_NEW_DEST, dest_nest(i, j, rng), seq) for j in range(DESTS)
        )
        out.append(msgs + _done(seq))
    return out


def messages(datagrams: list[bytes]) -> list[bytes]:
    """Every data message (not NLMSG_DONE) of the datagrams, one bytes object each."""
    out = []
    for data in datagrams:
        off = 0
        while off + 16 <= len(data):
            ln, kind = struct.unpack_from("=IH", data, off)
            if kind != nl.NLMSG_DONE:
                out.append(data[off : off + ln])
            off += (ln + 3) & ~3
    return out
