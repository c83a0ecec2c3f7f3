"""Packet captures in lab namespaces (tcpdump) and their dissection (tshark).

Lab and test scaffolding: tcpdump writes a pcap file from inside a node's
namespace; tshark, an independent dissector, reads it back field by field. Every
wait is bounded; the tcpdump process is one the caller's ``Lab`` started and stops.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from agent.lab.topology import Host, Lab


class Capture:
    """tcpdump on ``host``'s ``ifname`` into ``path``, started and stopped with bounded waits."""

    def __init__(self, lab: Lab, host: Host, path: Path, bpf: str, ifname: str = "eth0") -> None:
        self.path = path
        self.log = path.with_suffix(".log")
        self._lab = lab
        self.proc = lab.spawn(
            host,
            # --immediate-mode: without it libpcap holds frames in a ring block that is
            # lost when tcpdump is stopped within its buffer timeout.
            [
                "tcpdump",
                "-i",
                ifname,
                "-U",
                "--immediate-mode",
                "-Z",
                "root",
                "-n",
                "-w",
                str(path),
                bpf,
            ],
            log=self.log,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.log.exists() and b"listening on" in self.log.read_bytes():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self._lab.stop(self.proc)
        raise RuntimeError(f"tcpdump did not start: {self.log.read_text(errors='replace')}")

    def stop(self) -> Path:
        time.sleep(0.3)  # let the last frames reach the file
        self._lab.stop(self.proc, signal.SIGINT)
        return self.path


def tshark_fields(pcap: Path, *fields: str, display_filter: str = "") -> list[list[str]]:
    """One row per packet (matching ``display_filter``) with the named fields."""
    argv = ["tshark", "-r", str(pcap), "-T", "fields"]
    for f in fields:
        argv += ["-e", f]
    if display_filter:
        argv += ["-Y", display_filter]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    return [line.split("\t") for line in out.splitlines() if line.strip()]


def tshark_problems(pcap: Path, display_filter: str) -> list[str]:
    """VRRP packets (matching ``display_filter``) that tshark flags: malformed, a bad
    checksum, or any expert note of warning severity or worse. Empty when clean."""
    rows = tshark_fields(
        pcap,
        "frame.number",
        "vrrp.checksum.status",
        "_ws.malformed",
        "_ws.expert.severity",
        display_filter=display_filter,
    )
    bad = []
    for number, status, malformed, severity in (r + [""] * (4 - len(r)) for r in rows):
        # checksum status 1 = good; expert severity >= 0x00600000 = warning or error.
        levels = [int(s, 0) for s in severity.split(",") if s]
        if status != "1" or malformed or any(level >= 0x00600000 for level in levels):
            bad.append(
                f"frame {number}: checksum={status!r} malformed={malformed!r} expert={severity!r}"
            )
    return bad
