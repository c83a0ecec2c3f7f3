"""A throw-away Ethernet segment for VRRP tests: nodes (netns) on one bridge.

Each node gets ``eth0`` with 198.51.100.<10+i>/24 and a link-local IPv6 address
(DAD off, so addresses are usable at once). The bridge lives in its own
namespace with multicast snooping off, so multicast floods like on a dumb switch.
Processes started through the lab are tracked by PID and killed on close; the
namespaces are deleted. Every wait is bounded.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from contextlib import suppress
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

from agent.lab import netns


def have_root_tools(*tools: str) -> str | None:
    """Why the netns tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", *tools):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return None


class Lan:
    def __init__(self, names: Sequence[str]) -> None:
        tag = f"{os.getpid() % 100000}"
        self.switch = f"vrsw{tag}"
        self.ns = {name: f"vr{name}{tag}" for name in names}
        self.v4: dict[str, IPv4Address] = {}
        self.v6: dict[str, IPv6Address] = {}
        self.mac: dict[str, str] = {}
        self._procs: list[subprocess.Popen[bytes]] = []
        try:
            self._build(names)
        except BaseException:
            self.close()
            raise

    def _build(self, names: Sequence[str]) -> None:
        netns.add(self.switch)
        netns.ip("link", "add", "br0", "type", "bridge", "mcast_snooping", "0", netns=self.switch)
        netns.ip("link", "set", "br0", "up", netns=self.switch)
        for i, name in enumerate(names):
            ns = self.ns[name]
            netns.add(ns)
            for key in ("all", "default"):
                netns.sysctl(ns, f"net.ipv6.conf.{key}.accept_dad", "0")
            port = f"p{i}"
            netns.ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns,
                     netns=self.switch)
            netns.ip("link", "set", port, "master", "br0", "up", netns=self.switch)
            netns.sysctl(ns, "net.ipv6.conf.eth0.accept_dad", "0")
            self.v4[name] = IPv4Address(f"198.51.100.{10 + i}")
            netns.ip("addr", "add", f"{self.v4[name]}/24", "dev", "eth0", netns=ns)
            netns.ip("link", "set", "eth0", "up", netns=ns)
        for name in names:
            self.v6[name] = self._link_local(name)
            out = netns.ip("-br", "link", "show", "eth0", netns=self.ns[name])
            self.mac[name] = out.split()[2]

    def _link_local(self, name: str) -> IPv6Address:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            out = netns.ip("-6", "-o", "addr", "show", "dev", "eth0", "scope", "link",
                           netns=self.ns[name])
            if out and "tentative" not in out:
                return IPv6Address(out.split()[3].split("/")[0])
            time.sleep(0.05)
        raise RuntimeError(f"{name}: no usable link-local address")

    def start(
        self, name: str, argv: Sequence[str], log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                netns.exec_argv(self.ns[name], argv), stdout=out, stderr=subprocess.STDOUT,
                env=env,
            )
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        if proc.poll() is None:
            with suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def close(self) -> None:
        for proc in self._procs:
            self.stop(proc)
        for ns in [*self.ns.values(), self.switch]:
            netns.delete(ns)


class Capture:
    """tcpdump on a node's eth0 into a pcap file, started and stopped with bounded waits."""

    def __init__(self, lan: Lan, node: str, path: Path, bpf: str) -> None:
        self.path = path
        self.log = path.with_suffix(".log")
        self.proc = lan.start(
            node,
            # --immediate-mode: without it libpcap holds frames in a ring block that is
            # lost when tcpdump is stopped within its buffer timeout.
            ["tcpdump", "-i", "eth0", "-U", "--immediate-mode", "-Z", "root", "-n",
             "-w", str(path), bpf],
            self.log,
        )
        self._lan = lan
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if b"listening on" in self.log.read_bytes():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"tcpdump did not start: {self.log.read_text()}")

    def stop(self) -> Path:
        time.sleep(0.3)  # let the last frames reach the buffer
        self._lan.stop(self.proc, signal.SIGINT)
        return self.path


def tshark_fields(pcap: Path, *fields: str, display_filter: str = "") -> list[list[str]]:
    argv = ["tshark", "-r", str(pcap), "-T", "fields"]
    for f in fields:
        argv += ["-e", f]
    if display_filter:
        argv += ["-Y", display_filter]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    return [line.split("\t") for line in out.splitlines() if line.strip()]


def tshark_verbose(pcap: Path) -> str:
    return subprocess.run(
        ["tshark", "-r", str(pcap), "-V"], capture_output=True, text=True, timeout=60, check=True
    ).stdout


def keepalived_conf(
    *,
    name: str = "ka",
    version: int,
    vrid: int,
    priority: int,
    interval: float,
    vips: Sequence[str],
    state: str = "BACKUP",
    auth_pass: str | None = None,
    unicast_src: str | None = None,
    unicast_peers: Sequence[str] = (),
    nopreempt: bool = False,
) -> str:
    lines = [
        "global_defs {",
        f"  router_id {name}",
        f"  vrrp_version {version}",
        "}",
        f"vrrp_instance {name} {{",
        f"  state {state}",
        "  interface eth0",
        f"  virtual_router_id {vrid}",
        f"  priority {priority}",
        f"  advert_int {interval:g}",
    ]
    if nopreempt:
        lines.append("  nopreempt")
    if auth_pass is not None:
        lines += ["  authentication {", "    auth_type PASS", f"    auth_pass {auth_pass}", "  }"]
    if unicast_src is not None:
        lines.append(f"  unicast_src_ip {unicast_src}")
    if unicast_peers:
        lines += ["  unicast_peer {", *[f"    {p}" for p in unicast_peers], "  }"]
    lines += ["  virtual_ipaddress {", *[f"    {v}" for v in vips], "  }", "}"]
    return "\n".join(lines) + "\n"


def start_keepalived(lan: Lan, node: str, conf: str, workdir: Path) -> subprocess.Popen[bytes]:
    """keepalived 2.2.7, VRRP only, in the foreground, logging to a file."""
    path = workdir / f"keepalived-{node}.conf"
    path.write_text(conf)
    argv = [
        "keepalived", "-n", "-l", "-D", "-P", "-f", str(path),
        "-p", str(workdir / f"ka-{node}.pid"), "-r", str(workdir / f"ka-vrrp-{node}.pid"),
    ]
    return lan.start(node, argv, workdir / f"keepalived-{node}.log")


def stop_keepalived(lan: Lan, node: str, proc: subprocess.Popen[bytes], workdir: Path,
                    sig: int = signal.SIGTERM) -> None:
    """Stop keepalived and make sure its VRRP child (which we also started) is gone."""
    child = None
    with suppress(OSError, ValueError):
        child = int((workdir / f"ka-vrrp-{node}.pid").read_text().strip())
    lan.stop(proc, sig)
    if child is not None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        with suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


REPO = Path(__file__).resolve().parents[3]


def start_agent(lan: Lan, node: str, spec: dict[str, object], log: Path) -> subprocess.Popen[bytes]:
    """Our VrrpService in ``node`` (see run_agent.py), logging to ``log``."""
    import json
    import sys

    env = dict(os.environ, PYTHONPATH=str(REPO))
    argv = [sys.executable, "-u", str(Path(__file__).with_name("run_agent.py")), json.dumps(spec)]
    return lan.start(node, argv, log, env=env)


def wait_for_text(path: Path, text: str, timeout: float) -> float | None:
    """Poll a log until ``text`` appears; the monotonic time it was seen, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with suppress(OSError):
            if text in path.read_text(errors="replace"):
                return time.monotonic()
        time.sleep(0.02)
    return None
