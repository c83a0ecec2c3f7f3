"""The dump decoder's learned layouts decode exactly what the general walk decodes.

``decode_service``/``decode_dest`` learn a nest's layout from the first nest of each
length and decode later nests of that length with one ``unpack_from``, checked
against the learned attribute headers. Here generated sequences of nests — kernel
order and shuffled orders, with and without STATS64, PE name, ADDR_FAMILY (kernels
before 3.18), unknown and repeated attributes, scheduler names whose padded sizes
coincide — go through the learning decoder one after another, and every result
must equal ``_walk_service``/``_walk_dest`` on the same bytes.
"""

from __future__ import annotations

import socket
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.ipvs import netlink as nl
from agent.ipvs.model import AF_INET, AF_INET6, IP_VS_SVC_F_HASHED

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)


def attr(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * (((n + 3) & ~3) - n)


@st.composite
def stats_nests(draw: st.DrawFn, stats_kind: int, stats64_kind: int) -> list[bytes]:
    """Zero, one or both of the STATS (32-bit counters) and STATS64 nests."""
    vals = draw(st.lists(u64, min_size=10, max_size=10))
    if draw(st.booleans()):
        vals[:5] = [0] * 5  # an idle object
    out = []
    if draw(st.integers(0, 3)):
        narrow = b"".join(
            attr(i, struct.pack("=Q", v) if i in (4, 5) else struct.pack("=I", v & 0xFFFFFFFF))
            for i, v in enumerate(vals, 1)
        )
        out.append(attr(stats_kind, narrow))
    if draw(st.integers(0, 3)):
        out.append(attr(stats64_kind, b"".join(
            attr(i, struct.pack("=Q", v)) for i, v in enumerate(vals, 1))))
    return out


def _arrange(draw: st.DrawFn, attrs: list[bytes]) -> bytes:
    """Kernel order mostly; sometimes shuffled, an unknown attribute, or one repeated."""
    how = draw(st.integers(0, 5))
    if how == 1:
        attrs = draw(st.permutations(attrs))
    elif how == 2:
        attrs = [*attrs, attr(draw(st.integers(20, 40)), draw(st.binary(max_size=9)))]
    elif how == 3 and attrs:
        attrs = [*attrs, draw(st.sampled_from(attrs))]
    return b"".join(attrs)


@st.composite
def service_nests(draw: st.DrawFn) -> bytes:
    af = draw(st.sampled_from([AF_INET, AF_INET6]))
    a = [attr(nl.IPVS_SVC_ATTR_AF, struct.pack("=H", af))]
    if draw(st.integers(0, 3)) == 0:
        a.append(attr(nl.IPVS_SVC_ATTR_FWMARK, struct.pack("=I", draw(st.integers(1, 2**32 - 1)))))
    else:
        raw = draw(st.binary(min_size=4, max_size=4) if af == AF_INET else
                   st.binary(min_size=16, max_size=16))
        proto = draw(st.sampled_from([6, 17, 132]))
        a.append(attr(nl.IPVS_SVC_ATTR_PROTOCOL, struct.pack("=H", proto)))
        a.append(attr(nl.IPVS_SVC_ATTR_ADDR, raw.ljust(16, b"\0")))
        a.append(attr(nl.IPVS_SVC_ATTR_PORT, struct.pack("!H", draw(st.integers(0, 65535)))))
    sched = draw(st.sampled_from(["rr", "wrr", "lc", "wlc", "sh", "mh", "lblcr", "sed"]))
    a.append(attr(nl.IPVS_SVC_ATTR_SCHED_NAME, sched.encode() + b"\0"))
    if draw(st.booleans()):
        a.append(attr(nl.IPVS_SVC_ATTR_PE_NAME, b"sip\0"))
    flags = draw(st.integers(0, 0x3F)) | IP_VS_SVC_F_HASHED
    a.append(attr(nl.IPVS_SVC_ATTR_FLAGS, struct.pack("=II", flags, 0xFFFFFFFF)))
    a.append(attr(nl.IPVS_SVC_ATTR_TIMEOUT, struct.pack("=I", draw(u32))))
    mask = draw(u32) if af == AF_INET else draw(st.integers(0, 128))
    a.append(attr(nl.IPVS_SVC_ATTR_NETMASK, struct.pack("!I" if af == AF_INET else "=I", mask)))
    a += draw(stats_nests(nl.IPVS_SVC_ATTR_STATS, nl.IPVS_SVC_ATTR_STATS64))
    return _arrange(draw, a)


@st.composite
def dest_nests(draw: st.DrawFn) -> tuple[bytes, int]:
    af = draw(st.sampled_from([AF_INET, AF_INET6]))
    raw = draw(st.binary(min_size=4, max_size=4) if af == AF_INET else
               st.binary(min_size=16, max_size=16))
    a = [
        attr(nl.IPVS_DEST_ATTR_ADDR, raw.ljust(16, b"\0")),
        attr(nl.IPVS_DEST_ATTR_PORT, struct.pack("!H", draw(st.integers(0, 65535)))),
        attr(nl.IPVS_DEST_ATTR_FWD_METHOD, struct.pack("=I", draw(st.integers(0, 0x1F)))),
        attr(nl.IPVS_DEST_ATTR_WEIGHT, struct.pack("=i", draw(st.integers(-(2**31), 2**31 - 1)))),
    ]
    if draw(st.booleans()):  # kernels before 5.2 have no tunnel attributes
        a += [
            attr(nl.IPVS_DEST_ATTR_TUN_TYPE, struct.pack("=B", draw(st.integers(0, 2)))),
            attr(nl.IPVS_DEST_ATTR_TUN_PORT, struct.pack("!H", draw(st.integers(0, 65535)))),
            attr(nl.IPVS_DEST_ATTR_TUN_FLAGS, struct.pack("=H", draw(st.integers(0, 0xFFFF)))),
        ]
    a += [attr(kind, struct.pack("=I", draw(u32))) for kind in (
        nl.IPVS_DEST_ATTR_U_THRESH, nl.IPVS_DEST_ATTR_L_THRESH, nl.IPVS_DEST_ATTR_ACTIVE_CONNS,
        nl.IPVS_DEST_ATTR_INACT_CONNS, nl.IPVS_DEST_ATTR_PERSIST_CONNS)]
    default_af = af
    if draw(st.integers(0, 3)):
        a.append(attr(nl.IPVS_DEST_ATTR_ADDR_FAMILY, struct.pack("=H", af)))
    a += draw(stats_nests(nl.IPVS_DEST_ATTR_STATS, nl.IPVS_DEST_ATTR_STATS64))
    return _arrange(draw, a), default_af


def _forget() -> None:
    nl._LAYOUTS.service.clear()
    nl._LAYOUTS.dest.clear()


@settings(max_examples=300)
@given(st.lists(service_nests(), min_size=1, max_size=12))
def test_service_layouts_equal_the_walk(nests: list[bytes]) -> None:
    _forget()
    # Each nest twice, so every learned layout also serves a nest of its own length.
    for nest in [*nests, *nests]:
        assert nl.decode_service(nest, 0, len(nest)) == nl._walk_service(nest, 0, len(nest))
    assert nl._LAYOUTS.service  # something was learned (and used on the second pass)


@settings(max_examples=300)
@given(st.lists(dest_nests(), min_size=1, max_size=12))
def test_dest_layouts_equal_the_walk(nests: list[tuple[bytes, int]]) -> None:
    _forget()
    for nest, af in [*nests, *nests]:
        assert nl.decode_dest(nest, 0, len(nest), af) == nl._walk_dest(nest, 0, len(nest), af)
    assert nl._LAYOUTS.dest


def test_same_length_other_layout_is_decoded_by_the_walk() -> None:
    """'rr' and 'wrr' pad to the same size: the second nest has the length the first
    was learned at, another SCHED_NAME header, and must not be read with its layout."""
    _forget()

    def nest(sched: str, port: int) -> bytes:
        return (attr(nl.IPVS_SVC_ATTR_AF, struct.pack("=H", AF_INET))
                + attr(nl.IPVS_SVC_ATTR_PROTOCOL, struct.pack("=H", 6))
                + attr(nl.IPVS_SVC_ATTR_ADDR, socket.inet_aton("192.0.2.1").ljust(16, b"\0"))
                + attr(nl.IPVS_SVC_ATTR_PORT, struct.pack("!H", port))
                + attr(nl.IPVS_SVC_ATTR_SCHED_NAME, sched.encode() + b"\0")
                + attr(nl.IPVS_SVC_ATTR_FLAGS, struct.pack("=II", IP_VS_SVC_F_HASHED, 0xFFFFFFFF))
                + attr(nl.IPVS_SVC_ATTR_TIMEOUT, struct.pack("=I", 0))
                + attr(nl.IPVS_SVC_ATTR_NETMASK, struct.pack("!I", 0xFFFFFFFF)))

    first, second = nest("wrr", 80), nest("rr", 443)
    assert len(first) == len(second)
    assert nl.decode_service(first, 0, len(first)).service.scheduler == "wrr"
    got = nl.decode_service(second, 0, len(second)).service
    assert (got.scheduler, got.key.port) == ("rr", 443)
    assert nl.decode_service(first, 0, len(first)) == nl._walk_service(first, 0, len(first))
