"""The hand-written codecs against the libraries they replace, and the dump decoder's layouts.

One command, no IPVS needed (the host kernel may lack it)::

    .venv/bin/python bench/codecs/run.py            # everything; root for the rtnetlink part
    .venv/bin/python bench/codecs/run.py --only layouts --rounds 9

Parts (``--only``, comma-separated):

- ``ipvs``: the IPVS generic-netlink codec (agent/ipvs/netlink.py) against pyroute2's
  ``ipvsmsg`` as its ``IPVS`` class uses it. Encode: the NEW_SERVICE/NEW_DEST messages
  of 1,000 services x 4 real servers (pyroute2: ``IPVSService``/``IPVSDest.dump_nla()``
  into an ``ipvsmsg``, ``encode()``). Decode: a full dump of the same table with busy
  counters, as the kernel writes it (bench/codecs/dumps.py): ours through
  ``DumpPipeline.feed`` into the model's ``KernelTable``; pyroute2 ``decode()`` of each
  message and ``IPVSService``/``IPVSDest.from_message`` (its documented way to a record).
- ``vrrp``: agent/vrrp/packet.py against scapy's ``VRRPv3`` layer: build a VRRPv3
  IPv4 advert with two VIPs, checksum included (scapy needs the IP layer for the
  pseudo-header), and parse it (ours also verifies the checksum and every RFC 5798
  receive check; scapy checks nothing).
- ``rtnetlink``: a VIP added and removed (RTM_NEWADDR + RTM_DELADDR, each acked) on a
  veth interface in a scratch network namespace: ``vips.Rtnetlink`` against pyroute2's
  ``IPRoute.addr``; plus building the request alone (``address_request`` against
  pyroute2's ``ifaddrmsg``). Needs root.
- ``layouts``: decoding a full dump (1,000 and 10,000 services x 4) with the learned
  layouts (``decode_service``/``decode_dest``) against the general walk alone
  (``_walk_service``/``_walk_dest``), with the same value constructors on both sides;
  with the garbage collector paused, as ``IpvsKernel`` decodes by default, and on.

Every variant of a part runs in turn within each round (interleaved: the CPU may be
shared) and the best (minimum) CPU time of each is kept (the layouts also print the
best wall-clock times). Ratios are library / ours.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import platform
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from ipaddress import ip_address, ip_interface
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.ipvs import model
from agent.ipvs import netlink as nl
from agent.ipvs.model import (
    AF_INET,
    IPPROTO_TCP,
    AddDest,
    AddService,
    Dest,
    DestKey,
    Service,
    ServiceKey,
)
from bench.codecs.dumps import DESTS, FAMILY, full_dump, messages, rip, vip

WALL: dict[str, float] = {}  # the last race's best wall-clock times, by variant


def race(variants: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    """Best CPU time (this thread's, user + system) of each variant over ``rounds``
    interleaved rounds; the best wall-clock times are left in ``WALL``.

    CPU time, because the machine may be shared: wall-clock time then also counts
    the time other processes had the CPU, which differs from run to run.
    """
    best = dict.fromkeys(variants, float("inf"))
    WALL.clear()
    WALL.update(best)
    for _ in range(rounds):
        for name, fn in variants.items():
            gc.collect()
            t, c = time.perf_counter(), time.thread_time()
            fn()
            best[name] = min(best[name], time.thread_time() - c)
            WALL[name] = min(WALL[name], time.perf_counter() - t)
    return best


def line(what: str, ours: float, theirs: float, unit: str = "s") -> None:
    scale = {"s": 1.0, "ms": 1e3, "us": 1e6}[unit]
    print(
        f"  {what:40s} ours {ours * scale:9.3f} {unit:2s}  library {theirs * scale:10.3f}"
        f" {unit:2s}  ratio {theirs / ours:6.1f}x"
    )


# --- IPVS -----------------------------------------------------------------------


def table_ops(n: int) -> list[model.Op]:
    ops: list[model.Op] = []
    for i in range(n):
        key = ServiceKey(AF_INET, IPPROTO_TCP, vip(i), 80)
        ops.append(AddService(Service(key, "wrr")))
        for j in range(DESTS):
            ops.append(AddDest(key, Dest(DestKey(AF_INET, rip(i, j), 8080), 0, 1 + j)))
    return ops


def encode_ours(ops: list[model.Op]) -> int:
    enc = nl.Encoder(FAMILY)
    size = 0
    for seq, op in enumerate(ops, 1):
        size += len(enc.encode(op, seq))
    return size


def encode_pyroute2(ops: list[model.Op]) -> int:
    from pyroute2.ipvs import IPVSDest, IPVSService
    from pyroute2.netlink.generic.ipvs import ipvsmsg

    size = 0
    for seq, op in enumerate(ops, 1):
        msg = ipvsmsg()
        msg["version"] = 1
        msg["header"]["type"] = FAMILY
        msg["header"]["flags"] = 0x605  # REQUEST | ACK | EXCL | CREATE, as IPVS "add"
        msg["header"]["sequence_number"] = seq
        if isinstance(op, AddService):
            k = op.service.key
            svc = IPVSService(addr=k.address, port=k.port, protocol=k.protocol,
                              sched_name=op.service.scheduler)
            msg["cmd"] = nl.IPVS_CMD_NEW_SERVICE
            msg["attrs"] = [("IPVS_CMD_ATTR_SERVICE", svc.dump_nla())]
        else:
            assert isinstance(op, AddDest)
            k = op.service
            svc = IPVSService(addr=k.address, port=k.port, protocol=k.protocol)
            d = op.dest
            dest = IPVSDest(addr=d.key.address, port=d.key.port, weight=d.weight,
                            fwd_method=d.fwd)
            msg["cmd"] = nl.IPVS_CMD_NEW_DEST
            msg["attrs"] = [("IPVS_CMD_ATTR_SERVICE", svc.dump_key()),
                            ("IPVS_CMD_ATTR_DEST", dest.dump_nla())]
        msg.encode()
        size += len(msg.data)
    return size


def decode_ours(datagrams: list[bytes]) -> model.KernelTable:
    """A full dump through the pipeline the kernel adapter drives (window 1, no cache)."""
    p = nl.DumpPipeline(nl.Encoder(FAMILY), nl.SeqCounter(1), cache=None)
    replies = iter(datagrams)
    while not p.done:
        p.next_batch()
        p.feed(next(replies))
    assert p.complete
    return p.table


def decode_pyroute2(msgs: list[bytes]) -> int:
    from pyroute2.ipvs import IPVSDest, IPVSService
    from pyroute2.netlink.generic.ipvs import ipvsmsg

    count = 0
    for raw in msgs:
        m = ipvsmsg(raw)
        m.decode()
        if m["cmd"] == nl.IPVS_CMD_NEW_SERVICE:
            IPVSService.from_message(m)
        else:
            IPVSDest.from_message(m)
        count += 1
    return count


def bench_ipvs(rounds: int, n: int = 1000) -> None:
    ops = table_ops(n)
    dump = full_dump(n)
    msgs = messages(dump)
    print(f"IPVS generic netlink, {n} services x {DESTS} ({len(ops)} messages), best of {rounds}")
    enc = race({"ours": lambda: encode_ours(ops), "pyroute2": lambda: encode_pyroute2(ops)},
               rounds)
    line("encode NEW_SERVICE/NEW_DEST", enc["ours"], enc["pyroute2"])
    dec = race({"ours": lambda: decode_ours(dump), "pyroute2": lambda: decode_pyroute2(msgs)},
               rounds)
    line("decode a full dump (busy counters)", dec["ours"], dec["pyroute2"])


# --- VRRP -------------------------------------------------------------------------


def bench_vrrp(rounds: int, count: int = 2000) -> None:
    from scapy.layers.inet import IP
    from scapy.layers.vrrp import VRRPv3

    from agent.vrrp.packet import Advert, decode, encode

    src, dst = ip_address("192.0.2.1"), ip_address("224.0.0.18")
    vips = ("192.0.2.100", "192.0.2.101")
    advert = Advert(3, socket.AF_INET, 51, 150, 100, tuple(ip_address(a) for a in vips))
    wire = encode(advert, src, dst)

    def ours_encode() -> None:
        for _ in range(count):
            encode(advert, src, dst)

    def scapy_encode() -> None:
        for _ in range(count):
            pkt = IP(src=str(src), dst=str(dst), ttl=255, proto=112) / VRRPv3(
                vrid=51, priority=150, adv=100, ipcount=2, addrlist=list(vips))
            bytes(pkt)

    def ours_decode() -> None:
        for _ in range(count):
            decode(wire, family=socket.AF_INET, src=src, dst=dst, hop_limit=255, version=3)

    fields: list[tuple[Any, ...]] = []

    def scapy_decode() -> None:
        for _ in range(count):
            p = VRRPv3(wire)
            fields.append((p.version, p.vrid, p.priority, p.adv, p.addrlist))
        fields.clear()

    scapy_wire = bytes(IP(src=str(src), dst=str(dst), ttl=255, proto=112) / VRRPv3(
        vrid=51, priority=150, adv=100, ipcount=2, addrlist=list(vips)))[20:]
    assert scapy_wire == wire, "scapy and the codec disagree"
    print(f"VRRPv3 advert, IPv4, 2 VIPs, per packet, best of {rounds} x {count}")
    enc = race({"ours": ours_encode, "scapy": scapy_encode}, rounds)
    line("encode (with checksum)", enc["ours"] / count, enc["scapy"] / count, "us")
    dec = race({"ours": ours_decode, "scapy": scapy_decode}, rounds)
    line("decode", dec["ours"] / count, dec["scapy"] / count, "us")


# --- rtnetlink addresses ----------------------------------------------------------


@contextmanager
def scratch_netns() -> Iterator[str]:
    from agent.lab import netns

    name = f"bench-codecs-{uuid.uuid4().hex[:8]}"
    netns.add(name)
    try:
        netns.ip("link", "add", "d0", "type", "veth", "peer", "name", "d1", netns=name)
        netns.ip("link", "set", "d0", "up", netns=name)
        netns.ip("link", "set", "d1", "up", netns=name)
        yield name
    finally:
        netns.delete(name)


def bench_rtnetlink(rounds: int, count: int = 300) -> None:
    if os.geteuid() != 0:
        print("rtnetlink: skipped (needs root for a scratch network namespace)")
        return
    from pyroute2 import IPRoute
    from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

    from agent.lab import netns
    from agent.vrrp.vips import RTM_DELADDR, RTM_NEWADDR, Rtnetlink, address_request

    vipi = ip_interface("198.51.100.10/24")
    with scratch_netns() as name:
        with netns.entered(name):
            ours = Rtnetlink()
            ipr = IPRoute()
            index = socket.if_nametoindex("d0")

        def ours_pairs() -> None:
            for _ in range(count):
                assert ours.address(RTM_NEWADDR, index, vipi) == 0
                assert ours.address(RTM_DELADDR, index, vipi) == 0

        def pyroute2_pairs() -> None:
            for _ in range(count):
                ipr.addr("add", index=index, address=str(vipi.ip), prefixlen=24)
                ipr.addr("del", index=index, address=str(vipi.ip), prefixlen=24)

        def ours_build() -> None:
            for seq in range(count):
                address_request(RTM_NEWADDR, seq, index, vipi)

        def pyroute2_build() -> None:
            for seq in range(count):
                m = ifaddrmsg()
                m["family"] = socket.AF_INET
                m["prefixlen"] = 24
                m["index"] = index
                m["attrs"] = [("IFA_ADDRESS", str(vipi.ip)), ("IFA_LOCAL", str(vipi.ip))]
                m["header"]["type"] = RTM_NEWADDR
                m["header"]["flags"] = 0x605
                m["header"]["sequence_number"] = seq
                m.encode()

        try:
            print(f"rtnetlink VIP add + remove on a veth, per pair, best of {rounds} x {count}")
            r = race({"ours": ours_pairs, "pyroute2": pyroute2_pairs}, rounds)
            line("RTM_NEWADDR + RTM_DELADDR, acked", r["ours"] / count, r["pyroute2"] / count,
                 "us")
            b = race({"ours": ours_build, "pyroute2": pyroute2_build}, rounds)
            line("build one RTM_NEWADDR request", b["ours"] / count, b["pyroute2"] / count, "us")
        finally:
            ours.close()
            ipr.close()


# --- the learned layouts ----------------------------------------------------------

_CTORS = ("Service", "KernelService", "DestKey", "Dest", "KernelDest", "Stats")


@contextmanager
def decoder(mode: str) -> Iterator[None]:
    """``layouts``: the module as it is; ``walk``: the general walk alone, with the
    constructors the layouts use (so that only the layouts differ)."""
    saved = {k: getattr(nl, k) for k in ("decode_service", "decode_dest", *_CTORS)}
    try:
        if mode == "walk":
            nl.decode_service = nl._walk_service
            nl.decode_dest = nl._walk_dest
            for k in _CTORS:  # the layouts' constructors, where they have their own
                setattr(nl, k, getattr(nl, "_" + k, saved[k]))
        yield
    finally:
        for k, v in saved.items():
            setattr(nl, k, v)


def bench_layouts(rounds: int, sizes: list[int]) -> None:
    print(f"Dump decoder: learned layouts against the general walk, best of {rounds}")
    for n in sizes:
        dump = full_dump(n)
        tables = {}
        for mode in ("layouts", "walk"):
            with decoder(mode):
                tables[mode] = decode_ours(dump)
        assert tables["layouts"] == tables["walk"], "the two decoders disagree"
        del tables
        # GC paused: as IpvsKernel decodes (pause_gc, the default); GC on: without it.
        for gc_label, pause in (("GC paused", True), ("GC on", False)):

            def run(mode: str, dump: list[bytes] = dump, pause: bool = pause) -> None:
                with decoder(mode):
                    if pause:
                        gc.disable()
                    try:
                        decode_ours(dump)
                    finally:
                        gc.enable()

            best = race({m: functools.partial(run, m) for m in ("layouts", "walk")}, rounds)
            cut = 1 - best["layouts"] / best["walk"]
            wall = 1 - WALL["layouts"] / WALL["walk"]
            print(
                f"  {n:6d} x {DESTS}, {gc_label:9s}: CPU layouts {best['layouts']:6.3f} s"
                f"  walk {best['walk']:6.3f} s  cut {cut:6.1%}"
                f"  (wall {WALL['layouts']:6.3f} / {WALL['walk']:6.3f} s, cut {wall:6.1%})"
            )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="ipvs,vrrp,rtnetlink,layouts")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--sizes", default="1000,10000", help="layouts: services (x 4 dests)")
    args = ap.parse_args()
    parts = set(args.only.split(","))
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for row in f:
            if row.startswith("model name"):
                cpu = row.split(":", 1)[1].strip()
                break
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=Path(__file__).resolve().parents[2]).stdout.strip()
    print(f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, commit {commit}")
    if "ipvs" in parts:
        bench_ipvs(args.rounds)
    if "vrrp" in parts:
        bench_vrrp(args.rounds)
    if "rtnetlink" in parts:
        bench_rtnetlink(args.rounds)
    if "layouts" in parts:
        bench_layouts(args.rounds, [int(s) for s in args.sizes.split(",")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
