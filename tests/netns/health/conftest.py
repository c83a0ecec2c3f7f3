"""Fixtures for the health netns tests: a checker namespace, a target namespace across a
veth pair, certificates, and the misbehaving servers of ``targets.py``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from agent.lab import netns
from tests.check_skips import skip_or_fail

CHECKER_IP = "10.77.0.1"
TARGET_IP = "10.77.0.2"
T = TypeVar("T")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(d: Path) -> None:
    """A CA, and leaves signed by it: good.test (valid), expired, and one for another name."""
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=lvs-agent test CA",
        cwd=d,
    )
    for name, cn, days in (
        ("good", "good.test", "2"),
        ("expired", "good.test", "-1"),
        ("wrongname", "wrong.test", "2"),
    ):
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={cn}",
            cwd=d,
        )
        (d / f"{name}.ext").write_text(f"subjectAltName=DNS:{cn}\n")
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            days,
            "-extfile",
            f"{name}.ext",
            cwd=d,
        )


class Site:
    """The two namespaces and the target servers; ``modes`` rewrites their behaviour."""

    def __init__(self, tmp: Path):
        tag = os.getpid()
        self.checker = f"hc-chk-{tag}"
        self.target = f"hc-tgt-{tag}"
        self.dir = tmp
        self.modes_file = tmp / "modes.json"
        self.proc: subprocess.Popen[str] | None = None
        self.tcp: dict[int, str] = {}
        self.udp: dict[int, str] = {}

    def build(self) -> None:
        netns.add(self.checker)
        netns.add(self.target)
        veth = f"hcv{os.getpid() % 100000}"
        netns.ip(
            "link",
            "add",
            veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            self.target,
            netns=self.checker,
        )
        netns.ip("link", "set", veth, "name", "eth0", netns=self.checker)
        for ns, addr in ((self.checker, CHECKER_IP), (self.target, TARGET_IP)):
            netns.ip("addr", "add", f"{addr}/24", "dev", "eth0", netns=ns)
            netns.ip("link", "set", "eth0", "up", netns=ns)
        # every probe to a closed UDP port must get its ICMP answer, not a rate-limited few
        netns.sysctl(self.target, "net.ipv4.icmp_ratelimit", "0")
        make_certs(self.dir)
        self.write()
        root = Path(__file__).resolve().parents[3]
        self.proc = subprocess.Popen(
            netns.exec_argv(
                self.target,
                [sys.executable, "-m", "tests.netns.health.targets", str(self.modes_file)],
            ),
            cwd=root,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", line

    def write(self) -> None:
        tmp = self.modes_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"tcp": self.tcp, "udp": self.udp}))
        tmp.replace(self.modes_file)

    def modes(
        self,
        *,
        tcp: dict[int, str] | None = None,
        udp: dict[int, str] | None = None,
        settle: float = 0.3,
    ) -> None:
        self.tcp.update(tcp or {})
        self.udp.update(udp or {})
        self.write()
        time.sleep(settle)  # the servers re-read the file every 50 ms

    def drop_syn(self, port: int, on: bool) -> None:
        if on:
            script = (
                "add table inet hc\nadd chain inet hc input { type filter hook input "
                f"priority 0; }}\nadd rule inet hc input tcp dport {port} drop\n"
            )
        else:
            script = "delete table inet hc\n"
        subprocess.run(
            ["ip", "netns", "exec", self.target, "nft", "-f", "-"],
            input=script,
            text=True,
            check=True,
        )

    def run(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run a coroutine on a fresh loop with this thread inside the checker namespace."""
        import asyncio

        with netns.entered(self.checker):
            return asyncio.run(make())  # type: ignore[arg-type]

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
        netns.delete(self.checker)
        netns.delete(self.target)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    missing = [t for t in ("ip", "nft", "openssl") if shutil.which(t) is None]
    if missing:
        skip_or_fail(f"needs {', '.join(missing)}")
    s = Site(tmp_path_factory.mktemp("health"))
    try:
        s.build()
        yield s
    finally:
        s.close()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def child_pids() -> set[int]:
    import psutil

    return {p.pid for p in psutil.Process().children(recursive=True)}
