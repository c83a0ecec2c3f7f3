"""The IPVS netlink codec and pipelines, without a kernel.

- encode -> decode round trips over generated model values;
- byte-for-byte agreement with pyroute2's ``ipvsmsg`` for a few messages;
- kernel-style replies built here (as ip_vs_genl_fill_service/_dest write them:
  16-byte addresses, HASHED set, STATS + STATS64) decoded through the pipelines,
  including multi-part dumps, NLM_F_DUMP_INTR, errors with extended ACK;
- a fake kernel that follows af_netlink's dump rules (one dump per socket, EBUSY,
  a dump advances only on recvmsg) drives the pipelines end to end.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections import deque

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.ipvs import netlink as nl
from agent.ipvs.model import (
    AF_INET,
    AF_INET6,
    IP_VS_SVC_F_HASHED,
    IP_VS_SVC_F_ONEPACKET,
    IP_VS_SVC_F_PERSISTENT,
    IP_VS_SVC_F_SCHED1,
    IP_VS_SVC_F_SCHED2,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    ZERO_STATS,
    AddDest,
    AddService,
    DelDest,
    DelService,
    Dest,
    DestKey,
    EditDest,
    EditService,
    Forwarding,
    KernelDest,
    KernelService,
    KernelTable,
    Op,
    Service,
    ServiceKey,
    SetTimeouts,
    Stats,
    Timeouts,
    TunnelType,
)

FAMILY = 0x24

# --- strategies -------------------------------------------------------------------

ipv4 = st.integers(1, 2**32 - 2).map(lambda n: socket.inet_ntop(AF_INET, n.to_bytes(4, "big")))
ipv6 = st.binary(min_size=16, max_size=16).map(lambda b: socket.inet_ntop(AF_INET6, b))
port = st.integers(0, 65535)
u32 = st.integers(0, 2**32 - 1)


@st.composite
def service_keys(draw: st.DrawFn) -> ServiceKey:
    af = draw(st.sampled_from([AF_INET, AF_INET6]))
    if draw(st.booleans()) and draw(st.booleans()):
        return ServiceKey(af, 0, "", 0, draw(st.integers(1, 2**32 - 1)))
    addr = draw(ipv4 if af == AF_INET else ipv6)
    proto = draw(st.sampled_from([IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP]))
    return ServiceKey(af, proto, addr, draw(port))


@st.composite
def services(draw: st.DrawFn) -> Service:
    key = draw(service_keys())
    flags = draw(st.integers(0, 0x3F)) & ~IP_VS_SVC_F_HASHED
    netmask = draw(u32) if key.af == AF_INET else draw(st.integers(1, 128))
    return Service(key, draw(st.sampled_from(["rr", "wrr", "sh", "mh", "lblcr", "twos"])),
                   flags, draw(u32), netmask, draw(st.sampled_from(["", "sip"])))


@st.composite
def dests(draw: st.DrawFn, af: int | None = None) -> Dest:
    af = af or draw(st.sampled_from([AF_INET, AF_INET6]))
    key = DestKey(af, draw(ipv4 if af == AF_INET else ipv6), draw(port))
    return Dest(key, draw(st.sampled_from(list(Forwarding))), draw(st.integers(0, 2**31 - 1)),
                draw(u32), draw(u32), draw(st.sampled_from(list(TunnelType))), draw(port),
                draw(st.integers(0, 0xFFFF)))


stats_st = st.builds(Stats, *(st.integers(0, 2**64 - 1) for _ in range(5)))


# --- message helpers ----------------------------------------------------------------


def messages(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, seq, payload after nlmsghdr) of each message."""
    out = []
    off = 0
    while off < len(data):
        ln, kind, flags, seq, _pid = struct.unpack_from("=IHHII", data, off)
        out.append((kind, flags, seq, data[off + 16:off + ln]))
        off += (ln + 3) & ~3
    return out


def top_attrs(payload: bytes) -> dict[int, bytes]:
    """Top-level attributes of a genl payload (after the 4-byte genl header)."""
    return {k: payload[p:e] for k, p, e in nl.iter_attrs(payload, 4, len(payload))}


def attr(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * (((n + 3) & ~3) - n)


def nlmsg(kind: int, flags: int, seq: int, payload: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(payload), kind, flags, seq, 4242) + payload


def genl(cmd: int, attrs: bytes, seq: int, flags: int = 0) -> bytes:
    return nlmsg(FAMILY, flags, seq, struct.pack("=BBH", cmd, 1, 0) + attrs)


def done(seq: int, flags: int = nl.NLM_F_MULTI, err: int = 0) -> bytes:
    return nlmsg(nl.NLMSG_DONE, flags, seq, struct.pack("=i", -err))


def error(seq: int, err: int, extack: str = "", capped: bool = True) -> bytes:
    """NLMSG_ERROR as netlink_ack builds it with NETLINK_CAP_ACK / NETLINK_EXT_ACK."""
    orig = struct.pack("=IHHII", 60, FAMILY, nl.NLM_F_REQUEST, seq, 0)
    body = struct.pack("=i", -err) + orig
    flags = 0
    if capped:
        flags |= nl.NLM_F_CAPPED
    else:
        body += b"\x01" * 44  # the echoed request payload
    if extack:
        flags |= nl.NLM_F_ACK_TLVS
        body += attr(nl.NLMSGERR_ATTR_MSG, extack.encode() + b"\0")
        body += attr(2, struct.pack("=I", 24))  # NLMSGERR_ATTR_OFFS, ignored
    return nlmsg(nl.NLMSG_ERROR, flags, 0, body)


def stats_nest(kind: int, s: Stats, wide: bool) -> bytes:
    vals = (s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes, 1, 2, 3, 4, 5)
    out = b""
    for i, v in enumerate(vals, 1):
        if wide or i in (4, 5):
            out += attr(i, struct.pack("=Q", v))
        else:
            out += attr(i, struct.pack("=I", v & 0xFFFFFFFF))
    return attr(kind, out)


def kernel_service_attrs(svc: Service, stats: Stats = ZERO_STATS) -> bytes:
    """An IPVS_CMD_ATTR_SERVICE nest as ip_vs_genl_fill_service writes it."""
    k = svc.key
    a = attr(nl.IPVS_SVC_ATTR_AF, struct.pack("=H", k.af))
    if k.fwmark:
        a += attr(nl.IPVS_SVC_ATTR_FWMARK, struct.pack("=I", k.fwmark))
    else:
        raw = socket.inet_pton(k.af, k.address).ljust(16, b"\0")
        a += attr(nl.IPVS_SVC_ATTR_PROTOCOL, struct.pack("=H", k.protocol))
        a += attr(nl.IPVS_SVC_ATTR_ADDR, raw)
        a += attr(nl.IPVS_SVC_ATTR_PORT, struct.pack("!H", k.port))
    a += attr(nl.IPVS_SVC_ATTR_SCHED_NAME, svc.scheduler.encode() + b"\0")
    if svc.pe_name:
        a += attr(nl.IPVS_SVC_ATTR_PE_NAME, svc.pe_name.encode() + b"\0")
    a += attr(nl.IPVS_SVC_ATTR_FLAGS,
              struct.pack("=II", svc.flags | IP_VS_SVC_F_HASHED, 0xFFFFFFFF))
    a += attr(nl.IPVS_SVC_ATTR_TIMEOUT, struct.pack("=I", svc.timeout))
    mask = struct.pack("!I" if k.af == AF_INET else "=I", svc.netmask)
    a += attr(nl.IPVS_SVC_ATTR_NETMASK, mask)
    a += stats_nest(nl.IPVS_SVC_ATTR_STATS, stats, wide=False)
    a += stats_nest(nl.IPVS_SVC_ATTR_STATS64, stats, wide=True)
    return attr(nl.IPVS_CMD_ATTR_SERVICE, a)


def kernel_dest_attrs(kd: KernelDest) -> bytes:
    """An IPVS_CMD_ATTR_DEST nest as ip_vs_genl_fill_dest writes it."""
    d = kd.dest
    k = d.key
    a = (attr(nl.IPVS_DEST_ATTR_ADDR, socket.inet_pton(k.af, k.address).ljust(16, b"\0"))
         + attr(nl.IPVS_DEST_ATTR_PORT, struct.pack("!H", k.port))
         + attr(nl.IPVS_DEST_ATTR_FWD_METHOD, struct.pack("=I", d.fwd))
         + attr(nl.IPVS_DEST_ATTR_WEIGHT, struct.pack("=i", d.weight))
         + attr(nl.IPVS_DEST_ATTR_TUN_TYPE, struct.pack("=B", d.tun_type))
         + attr(nl.IPVS_DEST_ATTR_TUN_PORT, struct.pack("!H", d.tun_port))
         + attr(nl.IPVS_DEST_ATTR_TUN_FLAGS, struct.pack("=H", d.tun_flags))
         + attr(nl.IPVS_DEST_ATTR_U_THRESH, struct.pack("=I", d.u_threshold))
         + attr(nl.IPVS_DEST_ATTR_L_THRESH, struct.pack("=I", d.l_threshold))
         + attr(nl.IPVS_DEST_ATTR_ACTIVE_CONNS, struct.pack("=I", kd.active_conns))
         + attr(nl.IPVS_DEST_ATTR_INACT_CONNS, struct.pack("=I", kd.inactive_conns))
         + attr(nl.IPVS_DEST_ATTR_PERSIST_CONNS, struct.pack("=I", kd.persist_conns))
         + attr(nl.IPVS_DEST_ATTR_ADDR_FAMILY, struct.pack("=H", k.af))
         + stats_nest(nl.IPVS_DEST_ATTR_STATS, kd.stats, wide=False)
         + stats_nest(nl.IPVS_DEST_ATTR_STATS64, kd.stats, wide=True))
    return attr(nl.IPVS_CMD_ATTR_DEST, a)


# --- round trips ------------------------------------------------------------------


@given(services())
def test_service_round_trip(svc: Service) -> None:
    enc = nl.Encoder(FAMILY)
    for op, cmd in ((AddService(svc), nl.IPVS_CMD_NEW_SERVICE),
                    (EditService(svc), nl.IPVS_CMD_SET_SERVICE)):
        [(kind, flags, seq, payload)] = messages(enc.encode(op, 9))
        assert (kind, flags, seq, payload[0]) == (FAMILY, nl.NLM_F_REQUEST, 9, cmd)
        nest = top_attrs(payload)[nl.IPVS_CMD_ATTR_SERVICE]
        assert nl.decode_service(nest, 0, len(nest)).service == svc
        flags_attr = {k: nest[p:e] for k, p, e in nl.iter_attrs(nest, 0, len(nest))}[
            nl.IPVS_SVC_ATTR_FLAGS]
        # mask ~0: a SET replaces every flag bit (ip_vs_genl_parse_service)
        assert struct.unpack("=II", flags_attr) == (svc.flags, 0xFFFFFFFF)


@given(service_keys())
def test_service_key_round_trip(key: ServiceKey) -> None:
    enc = nl.Encoder(FAMILY)
    [(_k, _f, _s, payload)] = messages(enc.encode(DelService(key), 1))
    assert payload[0] == nl.IPVS_CMD_DEL_SERVICE
    nest = top_attrs(payload)[nl.IPVS_CMD_ATTR_SERVICE]
    assert nl.decode_service(nest, 0, len(nest)).service.key == key
    assert enc.service_key(key) is enc.service_key(key)  # built once, reused


@given(service_keys(), dests())
def test_dest_round_trip(key: ServiceKey, dest: Dest) -> None:
    enc = nl.Encoder(FAMILY)
    for op, cmd in ((AddDest(key, dest), nl.IPVS_CMD_NEW_DEST),
                    (EditDest(key, dest), nl.IPVS_CMD_SET_DEST)):
        [(_k, _f, _s, payload)] = messages(enc.encode(op, 3))
        assert payload[0] == cmd
        attrs = top_attrs(payload)
        svc_nest, dest_nest = attrs[nl.IPVS_CMD_ATTR_SERVICE], attrs[nl.IPVS_CMD_ATTR_DEST]
        assert nl.decode_service(svc_nest, 0, len(svc_nest)).service.key == key
        assert nl.decode_dest(dest_nest, 0, len(dest_nest), key.af).dest == dest
    [(_k, _f, _s, payload)] = messages(enc.encode(DelDest(key, dest.key), 4))
    dest_nest = top_attrs(payload)[nl.IPVS_CMD_ATTR_DEST]
    assert nl.decode_dest(dest_nest, 0, len(dest_nest), key.af).dest.key == dest.key


@given(st.builds(Timeouts, u32, u32, u32))
def test_timeouts_round_trip(t: Timeouts) -> None:
    [(_k, _f, _s, payload)] = messages(nl.Encoder(FAMILY).encode(SetTimeouts(t), 5))
    assert payload[0] == nl.IPVS_CMD_SET_CONFIG
    assert nl.decode_timeouts(payload, 4, len(payload)) == t
    # 0 means "leave unchanged" (ip_vs_set_timeout): such values are not sent at all
    assert len(top_attrs(payload)) == sum(1 for v in (t.tcp, t.tcp_fin, t.udp) if v)


@given(services(), stats_st)
def test_kernel_service_reply_decodes(svc: Service, stats: Stats) -> None:
    nest = kernel_service_attrs(svc, stats)
    ks = nl.decode_service(nest, 4, len(nest))
    assert ks.service == svc  # HASHED masked, 16-byte address trimmed
    assert ks.stats == stats  # STATS64 preferred over the 32-bit STATS


@given(dests(), stats_st, u32, u32, u32)
def test_kernel_dest_reply_decodes(dest: Dest, stats: Stats, a: int, i: int, p: int) -> None:
    kd = KernelDest(dest, a, i, p, stats)
    nest = kernel_dest_attrs(kd)
    assert nl.decode_dest(nest, 4, len(nest), AF_INET) == kd


def test_stats_fallback_walk_without_stats64() -> None:
    s = Stats(1, 2, 3, 2**40, 2**41)
    nest = stats_nest(nl.IPVS_SVC_ATTR_STATS, s, wide=False)
    assert nl.decode_stats(nest, 4, len(nest)) == s


# --- byte-level agreement with pyroute2 ----------------------------------------------


def pyroute2_bytes(cmd: int, attrs: list[tuple[str, object]], seq: int, flags: int) -> bytes:
    from pyroute2.netlink.generic.ipvs import ipvsmsg

    m = ipvsmsg()
    m["cmd"] = cmd
    m["version"] = 1
    m["header"]["type"] = FAMILY
    m["header"]["flags"] = flags
    m["header"]["sequence_number"] = seq
    m["attrs"] = attrs
    m.encode()
    return bytes(m.data)


def test_new_service_matches_pyroute2() -> None:
    svc = Service(ServiceKey(AF_INET, IPPROTO_UDP, "192.0.2.10", 5060), "sh",
                  IP_VS_SVC_F_PERSISTENT | IP_VS_SVC_F_SCHED1 | IP_VS_SVC_F_SCHED2, 300,
                  0xFFFFFF00, "sip")
    ours = nl.Encoder(FAMILY).encode(AddService(svc), 17)
    theirs = pyroute2_bytes(nl.IPVS_CMD_NEW_SERVICE, [("IPVS_CMD_ATTR_SERVICE", {"attrs": [
        ("IPVS_SVC_ATTR_AF", AF_INET), ("IPVS_SVC_ATTR_PROTOCOL", IPPROTO_UDP),
        ("IPVS_SVC_ATTR_ADDR", "192.0.2.10"), ("IPVS_SVC_ATTR_PORT", 5060),
        ("IPVS_SVC_ATTR_SCHED_NAME", "sh"),
        ("IPVS_SVC_ATTR_FLAGS", {"flags": svc.flags, "mask": 0xFFFFFFFF}),
        ("IPVS_SVC_ATTR_TIMEOUT", 300), ("IPVS_SVC_ATTR_NETMASK", "255.255.255.0"),
        ("IPVS_SVC_ATTR_PE_NAME", "sip")]})], 17, nl.NLM_F_REQUEST)
    assert ours == theirs


def test_fwmark_service_matches_pyroute2() -> None:
    svc = Service(ServiceKey(AF_INET6, 0, "", 0, 77), "mh", IP_VS_SVC_F_SCHED2, 0, 64)
    ours = nl.Encoder(FAMILY).encode(EditService(svc), 2)
    theirs = pyroute2_bytes(nl.IPVS_CMD_SET_SERVICE, [("IPVS_CMD_ATTR_SERVICE", {"attrs": [
        ("IPVS_SVC_ATTR_AF", AF_INET6), ("IPVS_SVC_ATTR_FWMARK", 77),
        ("IPVS_SVC_ATTR_SCHED_NAME", "mh"),
        ("IPVS_SVC_ATTR_FLAGS", {"flags": IP_VS_SVC_F_SCHED2, "mask": 0xFFFFFFFF}),
        ("IPVS_SVC_ATTR_TIMEOUT", 0),
        # pyroute2 types NETMASK as ip4addr; the kernel reads an IPv6 prefix length
        # as a host-order u32, which is what these four bytes are.
        ("IPVS_SVC_ATTR_NETMASK", socket.inet_ntop(AF_INET, struct.pack("=I", 64)))]})],
        2, nl.NLM_F_REQUEST)
    assert ours == theirs


def test_new_dest_tunnel_matches_pyroute2() -> None:
    key = ServiceKey(AF_INET, IPPROTO_TCP, "192.0.2.10", 80)
    dest = Dest(DestKey(AF_INET6, "2001:db8::5", 8080), Forwarding.TUNNEL, 7, 100, 10,
                TunnelType.GUE, 6080, 1)
    ours = nl.Encoder(FAMILY).encode(AddDest(key, dest), 5, nl.NLM_F_REQUEST | nl.NLM_F_ACK)
    theirs = pyroute2_bytes(nl.IPVS_CMD_NEW_DEST, [
        ("IPVS_CMD_ATTR_SERVICE", {"attrs": [
            ("IPVS_SVC_ATTR_AF", AF_INET), ("IPVS_SVC_ATTR_PROTOCOL", IPPROTO_TCP),
            ("IPVS_SVC_ATTR_ADDR", "192.0.2.10"), ("IPVS_SVC_ATTR_PORT", 80)]}),
        ("IPVS_CMD_ATTR_DEST", {"attrs": [
            ("IPVS_DEST_ATTR_ADDR_FAMILY", AF_INET6),  # pyroute2 needs it before ADDR
            ("IPVS_DEST_ATTR_ADDR", "2001:db8::5"), ("IPVS_DEST_ATTR_PORT", 8080),
            ("IPVS_DEST_ATTR_FWD_METHOD", 2), ("IPVS_DEST_ATTR_WEIGHT", 7),
            ("IPVS_DEST_ATTR_U_THRESH", 100), ("IPVS_DEST_ATTR_L_THRESH", 10),
            ("IPVS_DEST_ATTR_TUN_TYPE", 1),
            # pyroute2 types TUN_PORT as host-order uint16; the kernel reads be16
            ("IPVS_DEST_ATTR_TUN_PORT", socket.htons(6080)),
            ("IPVS_DEST_ATTR_TUN_FLAGS", 1)]})], 5, nl.NLM_F_REQUEST | nl.NLM_F_ACK)
    # Same attributes; our order puts ADDR_FAMILY after PORT (as ipvsadm does).
    ours_attrs, theirs_attrs = top_attrs(messages(ours)[0][3]), top_attrs(messages(theirs)[0][3])
    assert ours_attrs[1] == theirs_attrs[1]
    assert len(ours) == len(theirs)

    def dest_attr_map(nest: bytes) -> dict[int, bytes]:
        return {k: nest[p:e] for k, p, e in nl.iter_attrs(nest, 0, len(nest))}

    assert dest_attr_map(ours_attrs[2]) == dest_attr_map(theirs_attrs[2])


def test_del_dest_matches_pyroute2() -> None:
    key = ServiceKey(AF_INET, IPPROTO_TCP, "192.0.2.10", 80)
    ours = nl.Encoder(FAMILY).encode(DelDest(key, DestKey(AF_INET, "10.0.0.1", 8080)), 7)
    theirs = pyroute2_bytes(nl.IPVS_CMD_DEL_DEST, [
        ("IPVS_CMD_ATTR_SERVICE", {"attrs": [
            ("IPVS_SVC_ATTR_AF", AF_INET), ("IPVS_SVC_ATTR_PROTOCOL", IPPROTO_TCP),
            ("IPVS_SVC_ATTR_ADDR", "192.0.2.10"), ("IPVS_SVC_ATTR_PORT", 80)]}),
        ("IPVS_CMD_ATTR_DEST", {"attrs": [
            ("IPVS_DEST_ATTR_ADDR", "10.0.0.1"), ("IPVS_DEST_ATTR_PORT", 8080),
            ("IPVS_DEST_ATTR_ADDR_FAMILY", AF_INET)]})], 7, nl.NLM_F_REQUEST)
    assert ours == theirs


def test_getfamily_matches_pyroute2() -> None:
    from pyroute2.netlink.generic import ctrlmsg

    m = ctrlmsg()
    m["cmd"] = nl.CTRL_CMD_GETFAMILY
    m["version"] = 1
    m["attrs"] = [("CTRL_ATTR_FAMILY_NAME", "IPVS")]
    m["header"]["type"] = nl.GENL_ID_CTRL
    m["header"]["flags"] = nl.NLM_F_REQUEST
    m["header"]["sequence_number"] = 3
    m.encode()
    assert nl.encode_getfamily("IPVS", 3) == bytes(m.data)


# --- apply pipeline -------------------------------------------------------------------

KEY = ServiceKey(AF_INET, IPPROTO_TCP, "192.0.2.10", 80)


def add_dest(i: int) -> AddDest:
    return AddDest(KEY, Dest(DestKey(AF_INET, f"10.0.0.{i}", 8080)))


def test_apply_acks_only_last_message_of_each_window() -> None:
    ops: list[Op] = [add_dest(i) for i in range(1, 8)]
    p = nl.ApplyPipeline(nl.Encoder(FAMILY), ops, nl.SeqCounter(100), window=3)
    first = messages(p.next_batch())
    assert [f & nl.NLM_F_ACK for _k, f, _s, _p in first] == [0, 0, nl.NLM_F_ACK]
    assert p.next_batch() == b""  # waits for the window's ACK
    p.feed(error(first[0][2], errno.EEXIST) + error(first[2][2], 0))
    second = messages(p.next_batch())
    assert len(second) == 3
    p.feed(error(second[2][2], errno.ESRCH))  # the last one failing is its own ACK
    third = messages(p.next_batch())
    assert len(third) == 1 and third[0][1] & nl.NLM_F_ACK
    p.feed(error(third[0][2], 0))
    assert p.done
    res = p.results
    assert [r.name if r else None for r in res] == [
        "EEXIST", None, None, None, None, "ESRCH", None]
    assert str(res[5]) == "add-dest tcp 192.0.2.10:80 -> 10.0.0.6:8080: ESRCH (No such process)"
    assert p.counters.netlink_errors == 2 and p.counters.messages_sent == 7


def test_apply_error_with_extack_and_uncapped_echo() -> None:
    p = nl.ApplyPipeline(nl.Encoder(FAMILY), [add_dest(1), add_dest(2)], nl.SeqCounter(1))
    sent = messages(p.next_batch())
    p.feed(error(sent[0][2], errno.EINVAL, "Attribute failed policy validation",
                 capped=False)
           + error(sent[1][2], errno.ERANGE, "weight", capped=True))
    assert p.done
    a, b = p.results
    assert a is not None and a.extack == "Attribute failed policy validation"
    assert a.description.endswith("EINVAL (Invalid argument): Attribute failed policy validation")
    assert b is not None and (b.errno, b.extack) == (errno.ERANGE, "weight")


def test_apply_missing_scheduler_text() -> None:
    svc = Service(KEY, "twos")
    p = nl.ApplyPipeline(nl.Encoder(FAMILY), [AddService(svc)], nl.SeqCounter(1))
    [(_k, _f, seq, _p)] = messages(p.next_batch())
    p.feed(error(seq, errno.ENOENT))
    [r] = p.results
    assert r is not None and r.name == "ENOENT"
    assert "scheduler 'twos' is not available in this kernel (module ip_vs_twos)" in str(r)


def test_apply_unencodable_op_fails_alone() -> None:
    bad = AddDest(KEY, Dest(DestKey(AF_INET, "not-an-address", 80)))
    ops: list[Op] = [add_dest(1), bad, AddDest(KEY, Dest(DestKey(AF_INET, "10.0.0.9", 70000))),
                     add_dest(2)]
    p = nl.ApplyPipeline(nl.Encoder(FAMILY), ops, nl.SeqCounter(1))
    sent = messages(p.next_batch())
    assert len(sent) == 2
    p.feed(error(sent[-1][2], 0))
    assert p.done
    assert [r.name if r else None for r in p.results] == [None, "EINVAL", "EINVAL", None]


def test_apply_send_failure_fails_window() -> None:
    p = nl.ApplyPipeline(nl.Encoder(FAMILY), [add_dest(1), add_dest(2)], nl.SeqCounter(1))
    p.next_batch()
    p.send_failed(OSError(errno.EMSGSIZE, "Message too long"))
    assert p.done and all(r is not None and r.name == "EMSGSIZE" for r in p.results)


def test_descriptions() -> None:
    v6 = ServiceKey(AF_INET6, IPPROTO_UDP, "2001:db8::1", 53)
    assert nl.describe_op(DelService(v6)) == "del-service udp [2001:db8::1]:53"
    assert nl.describe_op(DelDest(ServiceKey(AF_INET, 0, "", 0, 5),
                                  DestKey(AF_INET6, "2001:db8::2", 0))) == \
        "del-dest fwmark 5 (inet) -> [2001:db8::2]:0"
    assert nl.describe_op(SetTimeouts(Timeouts(1, 2, 3))) == "set-timeouts tcp=1 tcpfin=2 udp=3"


# --- dump pipeline on synthetic replies ---------------------------------------------------


def test_multipart_service_and_dest_dump() -> None:
    s1 = Service(KEY, "wrr", IP_VS_SVC_F_PERSISTENT, 60, 0xFFFFFF00)
    s2 = Service(ServiceKey(AF_INET6, 0, "", 0, 9), "mh", IP_VS_SVC_F_SCHED1, 0, 64, "")
    d1 = KernelDest(Dest(DestKey(AF_INET, "10.0.0.1", 80), weight=5), 3, 4, 1, Stats(1, 2, 3, 4, 5))
    p = nl.DumpPipeline(nl.Encoder(FAMILY), nl.SeqCounter(50))
    [(_kind, flags, seq, payload)] = messages(p.next_batch())
    assert flags == nl.NLM_F_REQUEST | nl.NLM_F_DUMP and payload[0] == nl.IPVS_CMD_GET_SERVICE
    m = nl.NLM_F_MULTI
    p.feed(genl(nl.IPVS_CMD_NEW_SERVICE, kernel_service_attrs(s1, Stats(9, 9, 9, 9, 9)), seq, m))
    assert p.next_batch() == b""  # the service dump still runs
    p.feed(genl(nl.IPVS_CMD_NEW_SERVICE, kernel_service_attrs(s2), seq, m) + done(seq))
    batch = messages(p.next_batch())
    assert len(batch) == 1  # dump_window=1: one dest dump at a time
    seq1 = batch[0][2]
    p.feed(genl(nl.IPVS_CMD_NEW_DEST, kernel_dest_attrs(d1), seq1, m))
    p.feed(done(seq1))
    [(_k, _f, seq2, _p)] = messages(p.next_batch())
    p.feed(done(seq2))
    assert p.done and p.failure is None and not p.interrupted
    assert p.table == {
        KEY: KernelService(s1, {d1.dest.key: d1}, Stats(9, 9, 9, 9, 9)),
        s2.key: KernelService(s2, {}),
    }


def test_dump_intr_stops_and_flags() -> None:
    p = nl.DumpPipeline(nl.Encoder(FAMILY), nl.SeqCounter(1))
    [(_k, _f, seq, _p)] = messages(p.next_batch())
    flags = nl.NLM_F_MULTI | nl.NLM_F_DUMP_INTR
    p.feed(genl(nl.IPVS_CMD_NEW_SERVICE, kernel_service_attrs(Service(KEY, "rr")), seq, flags))
    p.feed(done(seq))
    assert p.interrupted and p.done
    assert p.next_batch() == b""  # no dest dumps for an inconsistent service list
    assert p.counters.dumps_interrupted == 1


def test_dump_error_and_stray_replies() -> None:
    p = nl.DumpPipeline(nl.Encoder(FAMILY), nl.SeqCounter(10))
    [(_k, _f, seq, _p)] = messages(p.next_batch())
    # leftovers of an abandoned call on the same socket are ignored
    p.feed(genl(nl.IPVS_CMD_NEW_DEST, b"", 3, nl.NLM_F_MULTI) + done(4) + error(5, errno.EPERM))
    assert not p.done
    p.feed(error(seq, errno.EPERM, "not allowed"))
    assert p.done and isinstance(p.failure, nl.NetlinkError)
    assert p.failure.errno == errno.EPERM and "not allowed" in str(p.failure)


def test_done_with_error_fails_dump() -> None:
    p = nl.DumpPipeline(nl.Encoder(FAMILY), nl.SeqCounter(10))
    [(_k, _f, seq, _p)] = messages(p.next_batch())
    p.feed(done(seq, err=errno.EMSGSIZE))
    assert p.done and isinstance(p.failure, nl.NetlinkError)


def test_subset_gets_then_dest_dumps() -> None:
    other = ServiceKey(AF_INET, IPPROTO_TCP, "192.0.2.99", 80)
    p = nl.DumpPipeline(nl.Encoder(FAMILY), nl.SeqCounter(1), keys=[KEY, other, KEY])
    gets = messages(p.next_batch())
    assert [(f, pl[0]) for _k, f, _s, pl in gets] == [
        (nl.NLM_F_REQUEST, nl.IPVS_CMD_GET_SERVICE)] * 2
    p.feed(genl(nl.IPVS_CMD_NEW_SERVICE, kernel_service_attrs(Service(KEY, "rr")), gets[0][2]))
    p.feed(error(gets[1][2], errno.ESRCH))
    [(_k, flags, seq, _p)] = messages(p.next_batch())
    assert flags & nl.NLM_F_DUMP
    p.feed(done(seq))
    assert p.done and list(p.table) == [KEY]


def test_config_and_family_replies() -> None:
    c = nl.ConfigPipeline(nl.Encoder(FAMILY), nl.SeqCounter(1))
    [(_k, _f, seq, payload)] = messages(c.next_batch())
    assert payload[0] == nl.IPVS_CMD_GET_CONFIG
    c.feed(genl(nl.IPVS_CMD_SET_CONFIG, attr(4, struct.pack("=I", 900))
                + attr(5, struct.pack("=I", 120)) + attr(6, struct.pack("=I", 300)), seq))
    assert c.done and c.timeouts == Timeouts(900, 120, 300)

    f = nl.FamilyPipeline("IPVS", nl.SeqCounter(1))
    [(_k, _f, seq, _p)] = messages(f.next_batch())
    f.feed(nlmsg(nl.GENL_ID_CTRL, 0, seq, struct.pack("=BBH", 1, 2, 0)
                 + attr(2, b"IPVS\0") + attr(1, struct.pack("=H", 0x24))))
    assert f.done and f.family_id == 0x24
    g = nl.FamilyPipeline("IPVS", nl.SeqCounter(1))
    [(_k, _f, seq, _p)] = messages(g.next_batch())
    g.feed(error(seq, errno.ENOENT))
    assert g.done and g.missing and g.family_id is None


# --- a fake kernel with af_netlink's dump rules ------------------------------------------


class FakeKernel:
    """IPVS over one netlink socket, as far as the pipelines can tell.

    A dump emits ``chunk`` messages per datagram; the first datagram is produced
    while the request is processed, each later one (and NLMSG_DONE) only when
    the previous one is received (netlink_recvmsg -> netlink_dump). A dump
    request meeting a running dump gets EBUSY (netlink_dump_start).
    """

    def __init__(self, table: KernelTable, chunk: int = 3, intr_dumps: int = 0) -> None:
        self.table = table
        self.chunk = chunk
        self.intr_dumps = intr_dumps  # this many service dumps carry NLM_F_DUMP_INTR
        self.queue: deque[bytes] = deque()
        self.running: tuple[int, list[bytes], int] | None = None
        self.ebusy = 0

    def send(self, data: bytes) -> None:
        for kind, flags, seq, payload in messages(data):
            assert kind == FAMILY and flags & nl.NLM_F_REQUEST
            self._handle(flags, seq, payload)

    def _handle(self, flags: int, seq: int, payload: bytes) -> None:
        cmd = payload[0]
        attrs = top_attrs(payload)
        if flags & nl.NLM_F_DUMP:
            if self.running is not None:
                self.ebusy += 1
                self.queue.append(error(seq, errno.EBUSY))
                return
            if cmd == nl.IPVS_CMD_GET_SERVICE:
                out = [genl(nl.IPVS_CMD_NEW_SERVICE, kernel_service_attrs(ks.service, ks.stats),
                            seq, nl.NLM_F_MULTI) for ks in self.table.values()]
                extra = 0
                if self.intr_dumps:
                    self.intr_dumps -= 1
                    extra = nl.NLM_F_DUMP_INTR
            else:
                nest = attrs[nl.IPVS_CMD_ATTR_SERVICE]
                key = nl.decode_service(nest, 0, len(nest)).service.key
                ks = self.table.get(key)
                out = [genl(nl.IPVS_CMD_NEW_DEST, kernel_dest_attrs(kd), seq, nl.NLM_F_MULTI)
                       for kd in (ks.dests.values() if ks else ())]
                extra = 0
            self.running = (seq, out, extra)
            self._dump_step()
            return
        if cmd == nl.IPVS_CMD_GET_SERVICE:
            nest = attrs[nl.IPVS_CMD_ATTR_SERVICE]
            key = nl.decode_service(nest, 0, len(nest)).service.key
            ks = self.table.get(key)
            if ks is None:
                self.queue.append(error(seq, errno.ESRCH))
            else:
                self.queue.append(genl(nl.IPVS_CMD_NEW_SERVICE,
                                       kernel_service_attrs(ks.service, ks.stats), seq))
            return
        raise AssertionError(f"unexpected command {cmd}")

    def _dump_step(self) -> None:
        assert self.running is not None
        seq, out, extra = self.running
        if out:
            part, rest = out[:self.chunk], out[self.chunk:]
            if extra:
                part = [m[:6] + struct.pack("=H", struct.unpack_from("=H", m, 6)[0] | extra)
                        + m[8:] for m in part]
            self.queue.append(b"".join(part))
            self.running = (seq, rest, extra)
        else:
            self.queue.append(done(seq, nl.NLM_F_MULTI | extra))
            self.running = None

    def recv(self) -> bytes:
        data = self.queue.popleft()
        if self.running is not None:
            self._dump_step()
        return data


def run(p: nl.Pipeline, k: FakeKernel, limit: int = 100_000) -> None:
    for _ in range(limit):
        if p.done:
            return
        data = p.next_batch()
        if data:
            k.send(data)
        if p.expects_reply:
            p.feed(k.recv())
    raise AssertionError("pipeline did not finish")


@st.composite
def tables(draw: st.DrawFn) -> KernelTable:
    table: KernelTable = {}
    for key in draw(st.lists(service_keys(), max_size=8, unique=True)):
        svc = Service(key, "rr", 0, 0, 0xFFFFFFFF if key.af == AF_INET else 128)
        ds = draw(st.lists(dests(key.af), max_size=7, unique_by=lambda d: d.key))
        table[key] = KernelService(svc, {d.key: KernelDest(d) for d in ds})
    return table


# deadline=None: these also run inside the (5-20x slower) lab VM.
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables(), st.integers(1, 5), st.integers(1, 4))
def test_dump_against_fake_kernel(table: KernelTable, window: int, chunk: int) -> None:
    k = FakeKernel(table, chunk)
    p = nl.DumpPipeline(nl.Encoder(FAMILY), nl.SeqCounter(1), dump_window=window)
    run(p, k)
    assert p.failure is None and not p.interrupted
    assert p.table == table
    assert p.counters.ebusy_reissues == k.ebusy
    if window == 1:
        assert k.ebusy == 0


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables(), st.data())
def test_subset_against_fake_kernel(table: KernelTable, data: st.DataObject) -> None:
    keys = data.draw(st.lists(st.sampled_from(list(table)), unique=True)) if table else []
    missing = ServiceKey(AF_INET, IPPROTO_TCP, "203.0.113.1", 1)
    k = FakeKernel(table, 2)
    p = nl.DumpPipeline(nl.Encoder(FAMILY), nl.SeqCounter(7), keys=[*keys, missing],
                        dump_window=2)
    run(p, k)
    assert p.table == {key: table[key] for key in keys if key != missing}


def test_dump_cache_reuses_identical_replies_only() -> None:
    busy = DestKey(AF_INET, "10.0.0.1", 80)
    idle = DestKey(AF_INET, "10.0.0.2", 80)
    table = {KEY: KernelService(Service(KEY, "rr"), {
        busy: KernelDest(Dest(busy), 1, 0, 0, Stats(1, 1, 1, 1, 1)),
        idle: KernelDest(Dest(idle))})}
    cache = nl.DumpCache()
    first = nl.DumpPipeline(nl.Encoder(FAMILY), nl.SeqCounter(1), cache=cache)
    run(first, FakeKernel(table))
    first.update_cache()
    assert len(cache.dests) == 2 and len(cache.services) == 1
    # traffic on one real server: its counters change, the other's do not
    table[KEY].dests[busy] = KernelDest(Dest(busy), 2, 0, 0, Stats(2, 2, 2, 2, 2))
    second = nl.DumpPipeline(nl.Encoder(FAMILY), nl.SeqCounter(100), cache=cache)
    run(second, FakeKernel(table))
    assert second.table == table
    assert second.table[KEY].dests[idle] is first.table[KEY].dests[idle]
    assert second.table[KEY].dests[busy] is not first.table[KEY].dests[busy]
    assert second.table[KEY].dests is not first.table[KEY].dests  # fresh containers
    # a subset dump reads the cache but does not replace it
    subset = nl.DumpPipeline(nl.Encoder(FAMILY), nl.SeqCounter(200), keys=[], cache=cache)
    run(subset, FakeKernel(table))
    subset.update_cache()
    assert len(cache.dests) == 2


def test_interrupted_dump_is_flagged_then_clean_retry() -> None:
    table = {KEY: KernelService(Service(KEY, "rr"), {})}
    k = FakeKernel(table, intr_dumps=1)
    first = nl.DumpPipeline(nl.Encoder(FAMILY), nl.SeqCounter(1))
    run(first, k)
    assert first.interrupted and not first.complete
    second = nl.DumpPipeline(nl.Encoder(FAMILY), nl.SeqCounter(100))
    run(second, k)
    assert not second.interrupted and second.table == table


def test_ebusy_reissue_is_bounded() -> None:
    table = {KEY: KernelService(Service(KEY, "rr"),
                                {DestKey(AF_INET, f"10.0.0.{i}", 1):
                                 KernelDest(Dest(DestKey(AF_INET, f"10.0.0.{i}", 1)))
                                 for i in range(1, 50)})}
    k = FakeKernel(table, chunk=1)
    p = nl.DumpPipeline(nl.Encoder(FAMILY), nl.SeqCounter(1), keys=[KEY], max_reissues=0)
    k.running = (9999, [b""] * 5, 0)  # a dump left running by someone else on the socket
    k.send(p.next_batch())  # GET_SERVICE
    p.feed(k.recv())
    k.send(p.next_batch())  # dest dump -> EBUSY, no re-issue left
    while k.queue and not p.done:
        p.feed(k.recv())
    assert isinstance(p.failure, nl.NetlinkError) and p.failure.errno == errno.EBUSY


# --- misc -------------------------------------------------------------------------


def test_flags_never_send_hashed() -> None:
    svc = Service(KEY, "rr", IP_VS_SVC_F_ONEPACKET | IP_VS_SVC_F_HASHED)
    nest = top_attrs(messages(nl.Encoder(FAMILY).encode(AddService(svc), 1))[0][3])[1]
    decoded = nl.decode_service(nest, 0, len(nest)).service
    assert decoded.flags == IP_VS_SVC_F_ONEPACKET


@pytest.mark.parametrize("data", [b"\x10\x00\x00\x00", struct.pack("=IHHII", 64, 2, 0, 1, 0)])
def test_malformed_datagrams_raise(data: bytes) -> None:
    p = nl.DumpPipeline(nl.Encoder(FAMILY), nl.SeqCounter(1))
    p.next_batch()
    if len(data) < 16:
        p.feed(data)  # shorter than a header: nothing to read
    else:
        with pytest.raises(ValueError):
            p.feed(data)
