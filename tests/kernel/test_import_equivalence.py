"""keepalived and lvs-agent program the same IPVS table from one keepalived.conf.

For each file of tests/data/keepalived with virtual servers (refused.conf aside:
it is the file of what the importer leaves out, and its HTTP digest check fails on
purpose), in one boot: keepalived's checker process loads the original in one
namespace, with every real server answering its checks from another; lvs-agent
applies the import in a third. ``ipvsadm -S -n`` (and the connection timeouts) of the
two namespaces must be equal, lines in any order.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.lab import netns

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "keepalived"
FILES = ["nat_web.conf", "dr_mixed.conf", "layered.conf"]
DIRECTOR = ["10.90.1.1/24", "10.91.1.1/24", "10.91.2.1/24", "10.91.3.1/24", "10.92.1.1/24"]
REAL = [
    "10.90.1.11/24",
    "10.90.1.12/24",
    "10.90.1.13/24",
    "10.90.1.99/24",
    "10.91.1.11/24",
    "10.91.1.12/24",
    "10.91.2.11/24",
    "10.91.2.12/24",
    "10.91.3.11/24",
    "10.92.1.11/24",
    "10.92.1.12/24",
    "10.92.1.21/24",
]
SETTLE = 120.0  # keepalived's first checks: delay_loop up to 10 s, alpha, emulated CPU


def _ipvs_view(ns: str) -> list[str]:
    def run(*args: str) -> str:
        done = subprocess.run(
            netns.exec_argv(ns, ["ipvsadm", *args]),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout

    return [*sorted(run("-S", "-n").splitlines()), run("-L", "--timeout").strip()]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    tag = uuid.uuid4().hex[:6]
    ka, ag, rs = f"h15-ka-{tag}", f"h15-ag-{tag}", f"h15-rs-{tag}"
    procs: list[subprocess.Popen[str]] = []
    for name in (ka, ag, rs):
        netns.add(name)
    try:
        for name in (ka, ag, rs):
            netns.ip("link", "set", "lo", "up", netns=name)
        netns.ip("link", "add", "h15d", "type", "veth", "peer", "name", "h15r", netns=ka)
        netns.ip("link", "set", "h15r", "netns", rs, netns=ka)
        for name, dev, addresses in ((ka, "h15d", DIRECTOR), (rs, "h15r", REAL)):
            for address in addresses:
                netns.ip("addr", "add", address, "dev", dev, netns=name)
            netns.ip("link", "set", dev, "up", netns=name)
        cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=secure.example.org",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ],
            capture_output=True,
            check=True,
            timeout=120,
        )
        backends = subprocess.Popen(
            netns.exec_argv(
                rs,
                [sys.executable, "-m", "tests.kernel.keepalived_backends", str(cert), str(key)],
            ),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(backends)
        assert backends.stdout is not None
        assert backends.stdout.readline().strip() == "ready"
        tmp_path.joinpath("procs").mkdir()
        yield ka, ag, tmp_path
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=30)
        time.sleep(1)
        for name in (ka, ag, rs):
            netns.delete(name)


def _keepalived(ns: str, conf: Path, work: Path) -> subprocess.Popen[str]:
    procs = work / "procs"
    return subprocess.Popen(
        netns.exec_argv(
            ns,
            [
                "keepalived",
                "-n",
                "-l",
                "-D",
                "-C",
                "-f",
                str(conf),
                "-i",
                "lb1",
                "-p",
                str(procs / "ka.pid"),
                "-c",
                str(procs / "ka-checkers.pid"),
                "-r",
                str(procs / "ka-vrrp.pid"),
            ],
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )


@pytest.mark.parametrize("name", FILES)
def test_keepalived_and_the_import_program_the_same_table(
    lab: tuple[str, str, Path], name: str
) -> None:
    ka, ag, work = lab
    out = work / "import.yaml"
    imported = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "import-keepalived",
            str(DATA / name),
            "--config-id",
            "lb1",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert imported.returncode in (0, 2), imported.stderr
    with out.open("a") as f:
        f.write(f"state_dir: {work / 'state'}\n")
    keepalived = _keepalived(ka, DATA / name, work)
    try:
        applied = subprocess.run(
            netns.exec_argv(ag, [sys.executable, "-m", "agent", "apply", "-c", str(out)]),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            cwd=ROOT,
            env={**os.environ, "LVS_AGENT_CACHE_DIR": ""},
        )
        assert applied.returncode == 0, applied.stdout + applied.stderr
        agent_view = _ipvs_view(ag)
        assert sum(line.startswith("-A") for line in agent_view) >= 2, agent_view
        deadline = time.monotonic() + SETTLE
        keepalived_view: list[str] = []
        while time.monotonic() < deadline:
            keepalived_view = _ipvs_view(ka)
            if keepalived_view == agent_view:
                break
            time.sleep(2)
        assert keepalived_view == agent_view, (
            "keepalived:\n" + "\n".join(keepalived_view) + "\nagent:\n" + "\n".join(agent_view)
        )
    finally:
        keepalived.send_signal(signal.SIGTERM)
        try:
            keepalived.wait(timeout=60)
        except subprocess.TimeoutExpired:
            keepalived.kill()
            keepalived.wait(timeout=30)
