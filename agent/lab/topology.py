"""A small LVS site in network namespaces: client, director(s), HTTP real servers.

Lab and test scaffolding (see netns.py for why it uses ``ip``). One switch
namespace holds the bridges, so the host's own namespace is never touched;
every other node has its own namespace wired to the switch with veth pairs.

NAT:  client 192.0.2.10 --front-- director(s) 192.0.2.2.. (VIP 192.0.2.100)
                                   director(s) 10.0.1.x --back-- real servers 10.0.1.21..
      real servers route back through 10.0.1.1, which the director rewrites through.
DR:   client, director(s) and real servers share the front LAN; the real servers
      hold the VIP on lo with arp_ignore=1/arp_announce=2 and answer clients directly.

Who holds the VIP (``vip_on_director``):

- True (one director, no VRRP): the VIP is a static address of d1, and in NAT d1's
  back address is the real servers' gateway 10.0.1.1 itself.
- False (VRRP decides): no director holds the VIP; director i has 192.0.2.(1+i) in
  front and, in NAT, 10.0.1.(1+i) at the back, and the gateway 10.0.1.1 floats too —
  the classic LVS-NAT HA pair: VIP and gateway are two VRRP instances in one sync
  group, so the director that takes the client's traffic also takes the replies.
  ``vrrp_instances()`` writes them for a director.

Every node gets IPv6 link-local addresses usable at once (DAD off) and its MAC
per interface is recorded, for VRRPv3 over IPv6 and for checking ARP caches.
Everything a Lab starts, it stops (by the PIDs it started); ``close()`` deletes
every namespace it made, in every outcome.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

from agent.lab import netns
from agent.vrrp.packet import internet_checksum

FRONT_PREFIX = "192.0.2"
BACK_PREFIX = "10.0.1"
VIP = "192.0.2.100"
GATEWAY = f"{BACK_PREFIX}.1"  # the real servers' default route in NAT
CLIENT = "192.0.2.10"
VRID_VIP = 51
VRID_GATEWAY = 52


@dataclass
class Host:
    name: str  # short role name: cl, d1, r1 ...
    ns: str  # namespace name
    addresses: dict[str, str] = field(default_factory=dict)  # interface -> IPv4 address
    macs: dict[str, str] = field(default_factory=dict)  # interface -> MAC (aa:bb:..)
    link_local: dict[str, IPv6Address] = field(default_factory=dict)  # interface -> fe80::


@dataclass
class Lab:
    forwarding: str = "nat"  # nat | dr
    directors: int = 1
    real_servers: int = 2
    prefix: str = field(default_factory=lambda: "lab" + secrets.token_hex(2))
    vip_on_director: bool = True  # False when VRRP manages the VIP (and the NAT gateway)
    hosts: dict[str, Host] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _made: list[str] = field(default_factory=list)

    # ---- addresses

    @property
    def vip(self) -> str:
        return VIP

    @property
    def gateway(self) -> str:
        return GATEWAY

    @property
    def floating_gateway(self) -> bool:
        """NAT with VRRP: the real servers' gateway is a VRRP address too."""
        return self.forwarding == "nat" and not self.vip_on_director

    @property
    def client(self) -> Host:
        return self.hosts["cl"]

    def director(self, i: int = 1) -> Host:
        return self.hosts[f"d{i}"]

    def director_list(self) -> list[Host]:
        return [self.director(i) for i in range(1, self.directors + 1)]

    def real_server(self, i: int) -> Host:
        return self.hosts[f"r{i}"]

    def director_address(self, i: int) -> str:
        return f"{FRONT_PREFIX}.{1 + i}"

    def director_back_address(self, i: int) -> str:
        if self.vip_on_director:
            return f"{BACK_PREFIX}.{i}"  # d1 is the gateway 10.0.1.1 itself
        return f"{BACK_PREFIX}.{1 + i}"

    def real_server_address(self, i: int) -> str:
        return f"{BACK_PREFIX}.{20 + i}" if self.forwarding == "nat" else f"{FRONT_PREFIX}.{20 + i}"

    @property
    def real_server_port(self) -> int:
        return 8080 if self.forwarding == "nat" else 80

    # ---- building

    def build(self) -> Lab:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def _ns(self, name: str) -> Host:
        host = Host(name, f"{self.prefix}-{name}")
        netns.add(host.ns)
        self._made.append(host.ns)
        self.hosts[name] = host
        if name != "sw":
            # Link-local IPv6 usable at once: VRRPv3 over IPv6 sources from it.
            for key in ("all", "default"):
                netns.sysctl(host.ns, f"net.ipv6.conf.{key}.accept_dad", "0")
        return host

    def _wire(self, host: Host, ifname: str, bridge: str, address: str) -> None:
        sw = self.hosts["sw"].ns
        outer = f"{host.name}-{ifname}"
        netns.ip(
            "link", "add", outer, "type", "veth", "peer", "name", ifname, "netns", host.ns, netns=sw
        )
        netns.ip("link", "set", outer, "master", bridge, "up", netns=sw)
        netns.ip("addr", "add", f"{address}/24", "dev", ifname, netns=host.ns)
        netns.ip("link", "set", ifname, "up", netns=host.ns)
        host.addresses[ifname] = address

    def _build(self) -> None:
        sw = self._ns("sw")
        for bridge in ("front", "back"):
            netns.ip("link", "add", bridge, "type", "bridge", netns=sw.ns)
            # No STP delay, no multicast snooping: VRRP adverts must flood at once.
            netns.ip(
                "link",
                "set",
                bridge,
                "type",
                "bridge",
                "forward_delay",
                "0",
                "mcast_snooping",
                "0",
                netns=sw.ns,
            )
            netns.ip("link", "set", bridge, "up", netns=sw.ns)
        client = self._ns("cl")
        self._wire(client, "eth0", "front", CLIENT)
        for i in range(1, self.directors + 1):
            d = self._ns(f"d{i}")
            self._wire(d, "eth0", "front", self.director_address(i))
            if self.forwarding == "nat":
                self._wire(d, "eth1", "back", self.director_back_address(i))
            netns.sysctl(d.ns, "net.ipv4.ip_forward", "1")
        if self.vip_on_director:
            netns.ip("addr", "add", f"{VIP}/32", "dev", "eth0", netns=self.director(1).ns)
        for i in range(1, self.real_servers + 1):
            r = self._ns(f"r{i}")
            if self.forwarding == "nat":
                self._wire(r, "eth0", "back", self.real_server_address(i))
                netns.ip("route", "add", "default", "via", GATEWAY, netns=r.ns)
            else:
                self._wire(r, "eth0", "front", self.real_server_address(i))
                netns.ip("addr", "add", f"{VIP}/32", "dev", "lo", netns=r.ns)
                for key in ("all", "eth0"):
                    netns.sysctl(r.ns, f"net.ipv4.conf.{key}.arp_ignore", "1")
                    netns.sysctl(r.ns, f"net.ipv4.conf.{key}.arp_announce", "2")
        for host in self.hosts.values():
            for ifname in host.addresses:
                self._read_link(host, ifname)

    def _read_link(self, host: Host, ifname: str) -> None:
        out = netns.ip("-br", "link", "show", ifname, netns=host.ns)
        host.macs[ifname] = out.split()[2]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            shown = netns.ip(
                "-6", "-o", "addr", "show", "dev", ifname, "scope", "link", netns=host.ns
            )
            if shown and "tentative" not in shown:
                host.link_local[ifname] = IPv6Address(shown.split()[3].split("/")[0])
                return
            time.sleep(0.05)
        raise RuntimeError(f"{host.ns} {ifname}: no usable IPv6 link-local address")

    def add_client(self, name: str, address: str) -> Host:
        """Another client on the front LAN (``address`` in 192.0.2.0/24), after ``build``."""
        host = self._ns(name)
        self._wire(host, "eth0", "front", address)
        self._read_link(host, "eth0")
        return host

    # ---- VRRP

    def vrrp_instances(
        self,
        i: int,
        *,
        priority: int,
        advert_interval: str = "1s",
        version: int = 3,
        **extra: Any,
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Director ``i``'s ``vrrp_instances`` and ``vrrp_sync_groups`` for this site.

        The VIP on the front LAN; in NAT also the back-side gateway, both in sync group
        ``director``. ``extra`` keys go into every instance (garp, preempt, notify...).
        """
        common: dict[str, Any] = {
            "version": version,
            "priority": priority,
            "advert_interval": advert_interval,
            **extra,
        }
        instances = [
            {
                "name": "vip",
                "interface": "eth0",
                "vrid": VRID_VIP,
                "virtual_ips": [f"{VIP}/32"],
                **common,
            }
        ]
        groups: list[dict[str, Any]] = []
        if self.floating_gateway:
            instances.append(
                {
                    "name": "gateway",
                    "interface": "eth1",
                    "vrid": VRID_GATEWAY,
                    "virtual_ips": [f"{GATEWAY}/24"],
                    **common,
                }
            )
            groups.append({"name": "director", "instances": ["vip", "gateway"]})
        return instances, groups

    def holders(self, address: str = VIP) -> list[str]:
        """Names of the directors whose kernel has ``address`` right now."""
        return [
            d.name
            for d in self.director_list()
            if f" {address}/" in netns.ip("-o", "addr", "show", netns=d.ns)
        ]

    def neighbour_mac(self, host: Host, address: str, ifname: str = "eth0") -> str | None:
        """The MAC ``host``'s neighbour table has for ``address`` (None if none)."""
        out = netns.ip("neigh", "show", address, "dev", ifname, netns=host.ns).split()
        return out[out.index("lladdr") + 1] if "lladdr" in out else None

    # ---- processes

    def spawn(
        self,
        host: Host,
        argv: Sequence[str],
        log: Path | None = None,
        env: dict[str, str] | None = None,
        pipe: bool = False,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in ``host``'s namespace, output to ``log`` (or a pipe, or nowhere).

        The Lab stops it on ``close()``."""
        out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                netns.exec_argv(host.ns, argv),
                stdout=subprocess.PIPE if pipe else out,
                stderr=subprocess.STDOUT if log or not pipe else subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        finally:
            if log:
                out.close()  # type: ignore[union-attr]
        self.processes.append(proc)
        return proc

    def start_http_servers(self, log_dir: Path | None = None) -> None:
        for i in range(1, self.real_servers + 1):
            host = self.real_server(i)
            self.spawn(
                host,
                [
                    sys.executable,
                    "-m",
                    "agent.lab.httpd",
                    "--name",
                    host.name,
                    "--port",
                    str(self.real_server_port),
                ],
                log=log_dir / f"httpd-{host.name}.log" if log_dir else None,
            )
        deadline = time.monotonic() + 60
        for i in range(1, self.real_servers + 1):
            while (
                self.get(
                    self.real_server(i),
                    self.real_server_address(i),
                    self.real_server_port,
                    timeout=1.0,
                )
                is None
            ):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"HTTP server in {self.real_server(i).ns} did not start")
                time.sleep(0.2)

    def stop(
        self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20
    ) -> int | None:
        """Signal a process we started and wait for it (SIGKILL after ``timeout``)."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        return proc.returncode

    # ---- traffic

    def get(
        self, host: Host, address: str, port: int = 80, path: str = "/", timeout: float = 2.0
    ) -> str | None:
        """One HTTP GET from inside ``host``'s namespace on a new connection; body or None."""
        try:
            with netns.entered(host.ns):
                conn = http.client.HTTPConnection(address, port, timeout=timeout)
                conn.connect()  # the socket is made here, inside the namespace
            try:
                conn.request("GET", path)
                return conn.getresponse().read().decode().strip()
            finally:
                conn.close()
        except (OSError, http.client.HTTPException):
            return None

    def ask_vip(self, count: int, timeout: float = 2.0) -> list[str | None]:
        return [self.get(self.client, self.vip, 80, timeout=timeout) for _ in range(count)]

    def ping(self, host: Host, address: str, timeout: float = 1.0) -> bool:
        """One ICMP echo from ``host`` to an IPv4 ``address``; True if it was answered.

        A raw socket rather than ping(8): one tool less, and the wait is ours."""
        ident = secrets.randbits(16)
        body = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"lvs-agent lab"
        csum = internet_checksum(body)
        packet = body[:2] + struct.pack("!H", csum) + body[4:]
        try:
            with netns.entered(host.ns):
                sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
            with sock:
                sock.sendto(packet, (address, 0))
                deadline = time.monotonic() + timeout
                while (left := deadline - time.monotonic()) > 0:
                    sock.settimeout(left)
                    data, (source, _) = sock.recvfrom(2048)
                    ihl = (data[0] & 0x0F) * 4
                    kind, _code, _sum, got_id = struct.unpack_from("!BBHH", data, ihl)
                    if kind == 0 and got_id == ident and source == address:
                        return True
        except OSError:
            return False
        return False

    # ---- teardown

    def close(self) -> None:
        for proc in reversed(self.processes):
            self.stop(proc, signal.SIGTERM, timeout=10)
        self.processes.clear()
        for name in reversed(self._made):
            netns.delete(name)
        self._made.clear()

    def __enter__(self) -> Lab:
        return self.build()

    def __exit__(self, *exc: object) -> None:
        self.close()


def ipvs_available() -> bool:
    """True when this kernel has IPVS (loading the module if it is only not loaded yet)."""
    if os.path.exists("/proc/net/ip_vs"):
        return True
    with contextlib.suppress(OSError):
        subprocess.run(
            ["modprobe", "-q", "ip_vs"],
            check=False,
            timeout=30,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    return os.path.exists("/proc/net/ip_vs")


@contextlib.contextmanager
def lab(**kwargs: object) -> Iterator[Lab]:
    with Lab(**kwargs) as built:  # type: ignore[arg-type]
        yield built
