"""keepalived 2.2 (the Debian package) as a VRRP peer in a lab namespace.

Lab, test and benchmark scaffolding for interoperability: writes a VRRP-only
configuration and runs ``keepalived -n -l -D -P`` (foreground, log to the console,
detailed, VRRP subsystem only) in a node's namespace with its own pid files.
keepalived forks a VRRP child that does the protocol; a crash is simulated by
stopping the parent (so it cannot respawn the child), killing the child with
SIGKILL, then the parent. Only processes this module started are signalled.
keepalived enters BACKUP first even with ``state MASTER``, and a SIGKILL leaves
its VIPs in the kernel.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from agent.lab.topology import Host, Lab


def keepalived_conf(
    *,
    name: str = "ka",
    interface: str = "eth0",
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
        f"  interface {interface}",
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


class Keepalived:
    """One keepalived (parent and VRRP child) running ``conf`` in ``host``'s namespace."""

    def __init__(self, lab: Lab, host: Host, conf: str, workdir: Path, tag: str = "") -> None:
        self.lab = lab
        self.host = host
        label = f"{host.name}{tag}"
        self.conf = workdir / f"keepalived-{label}.conf"
        self.log = workdir / f"keepalived-{label}.log"
        self._pidfile = workdir / f"keepalived-{label}.pid"
        self._vrrp_pidfile = workdir / f"keepalived-vrrp-{label}.pid"
        for stale in (self._pidfile, self._vrrp_pidfile):
            stale.unlink(missing_ok=True)
        self.conf.write_text(conf)
        self.proc = lab.spawn(
            host,
            [
                "keepalived",
                "-n",
                "-l",
                "-D",
                "-P",
                "-f",
                str(self.conf),
                "-p",
                str(self._pidfile),
                "-r",
                str(self._vrrp_pidfile),
            ],
            log=self.log,
        )

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def count(self, text: str) -> int:
        return self.text().count(text)

    def wait_for(self, text: str, timeout: float, occurrence: int = 1) -> float | None:
        """Poll the log until ``text`` appeared ``occurrence`` times; when seen, or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count(text) >= occurrence:
                return time.monotonic()
            time.sleep(0.02)
        return None

    def child_pid(self, timeout: float = 10.0) -> int | None:
        """The VRRP child's PID (from its pid file), once it has written it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                return int(self._vrrp_pidfile.read_text().strip())
            time.sleep(0.02)
        return None

    def running(self) -> bool:
        return self.proc.poll() is None

    def terminate(self) -> None:
        """SIGTERM: the VRRP child sends priority 0 and removes its VIPs, then both exit."""
        child = self.child_pid(0)
        self.lab.stop(self.proc, signal.SIGTERM)
        self._reap_child(child)

    def signal_terminate(self) -> None:
        """SIGTERM without waiting (the caller times the hand-over)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """A crash: the VRRP child dies with SIGKILL (its VIPs stay in the kernel)."""
        child = self.child_pid(0)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGSTOP)  # the parent must not respawn the child
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self._reap_child(child)

    def _reap_child(self, child: int | None) -> None:
        if child is None:
            return
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.terminate()
