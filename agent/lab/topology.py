"""A small LVS site in network namespaces: client, director(s), HTTP real servers.

Lab and test scaffolding (see netns.py for why it uses ``ip``). One switch
namespace holds the bridges, so the host's own namespace is never touched;
every other node has its own namespace wired to the switch with veth pairs.

NAT:  client 192.0.2.10 --front-- director(s) 192.0.2.2.. (VIP 192.0.2.100)
                                   director 10.0.1.1 --back-- real servers 10.0.1.21..
      real servers route back through the director, which rewrites addresses.
DR:   client, director(s) and real servers share the front LAN; the real servers
      hold the VIP on lo with arp_ignore=1/arp_announce=2 and answer clients directly.

Everything a Lab starts, it stops (by the PIDs it started); ``close()`` deletes
every namespace it made, in every outcome.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.lab import netns

FRONT_PREFIX = "192.0.2"
BACK_PREFIX = "10.0.1"
VIP = "192.0.2.100"
CLIENT = "192.0.2.10"


@dataclass
class Host:
    name: str  # short role name: cl, d1, r1 ...
    ns: str  # namespace name
    addresses: dict[str, str] = field(default_factory=dict)  # interface -> address


@dataclass
class Lab:
    forwarding: str = "nat"  # nat | dr
    directors: int = 1
    real_servers: int = 2
    prefix: str = field(default_factory=lambda: "lab" + secrets.token_hex(2))
    vip_on_director: bool = True  # False when something else (VRRP) manages the VIP
    hosts: dict[str, Host] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _made: list[str] = field(default_factory=list)

    # ---- addresses

    @property
    def vip(self) -> str:
        return VIP

    @property
    def client(self) -> Host:
        return self.hosts["cl"]

    def director(self, i: int = 1) -> Host:
        return self.hosts[f"d{i}"]

    def real_server(self, i: int) -> Host:
        return self.hosts[f"r{i}"]

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
            self._wire(d, "eth0", "front", f"{FRONT_PREFIX}.{1 + i}")
            if self.forwarding == "nat":
                # With one director it is the real servers' gateway 10.0.1.1 itself.
                self._wire(d, "eth1", "back", f"{BACK_PREFIX}.{i if self.directors > 1 else 1}")
            netns.sysctl(d.ns, "net.ipv4.ip_forward", "1")
        if self.vip_on_director:
            netns.ip("addr", "add", f"{VIP}/32", "dev", "eth0", netns=self.director(1).ns)
        for i in range(1, self.real_servers + 1):
            r = self._ns(f"r{i}")
            if self.forwarding == "nat":
                self._wire(r, "eth0", "back", self.real_server_address(i))
                if self.directors == 1:
                    netns.ip("route", "add", "default", "via", f"{BACK_PREFIX}.1", netns=r.ns)
            else:
                self._wire(r, "eth0", "front", self.real_server_address(i))
                netns.ip("addr", "add", f"{VIP}/32", "dev", "lo", netns=r.ns)
                for key in ("all", "eth0"):
                    netns.sysctl(r.ns, f"net.ipv4.conf.{key}.arp_ignore", "1")
                    netns.sysctl(r.ns, f"net.ipv4.conf.{key}.arp_announce", "2")

    # ---- processes

    def spawn(
        self,
        host: Host,
        argv: Sequence[str],
        log: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                netns.exec_argv(host.ns, argv),
                stdout=out,
                stderr=subprocess.STDOUT,
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
