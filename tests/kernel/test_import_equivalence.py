"""keepalived and lvs-agent program the same IPVS table from one keepalived.conf.

For each file of tests/data/keepalived with virtual servers (refused.conf aside:
it is the file of what the importer leaves out, and its HTTP digest check fails on
purpose), in one boot: keepalived's checker process loads the original in one
namespace and lvs-agent the import in another, each director with its own copy of
the real servers (same addresses) answering every check. ``ipvsadm -S -n`` (and the
connection timeouts) of the two must be equal, lines in any order: after ``apply``;
and with ``run`` checking, both with every check passing and after one checked real
server starts refusing in both copies (removed, as keepalived does without
inhibit_on_failure).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
ZERO = re.compile(r" -w 0( |$)")
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


@dataclass
class Lab:
    ka: str  # keepalived's director
    ag: str  # lvs-agent's director
    real: dict[str, str]  # director -> its real servers' namespace
    work: Path


def _wire(director: str, real: str) -> None:
    netns.ip("link", "add", "h15d", "type", "veth", "peer", "name", "h15r", netns=director)
    netns.ip("link", "set", "h15r", "netns", real, netns=director)
    for name, dev, addresses in ((director, "h15d", DIRECTOR), (real, "h15r", REAL)):
        for address in addresses:
            netns.ip("addr", "add", address, "dev", dev, netns=name)
        netns.ip("link", "set", dev, "up", netns=name)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """Two directors, each wired to its own copy of the real servers (the same
    addresses), so each checks its own and both can be made to fail alike."""
    tag = uuid.uuid4().hex[:6]
    ka, ag = f"h15-ka-{tag}", f"h15-ag-{tag}"
    real = {ka: f"h15-rk-{tag}", ag: f"h15-ra-{tag}"}
    names = [ka, ag, *real.values()]
    procs: list[subprocess.Popen[str]] = []
    for name in names:
        netns.add(name)
    try:
        for name in names:
            netns.ip("link", "set", "lo", "up", netns=name)
        for director, rs in real.items():
            _wire(director, rs)
        cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]  # noqa: RUF005
            + ["-subj", "/CN=secure.example.org", "-keyout", str(key), "-out", str(cert)],
            capture_output=True,
            check=True,
            timeout=120,
        )
        for rs in real.values():
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
        yield Lab(ka, ag, real, tmp_path)
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=30)
        time.sleep(1)
        for name in names:
            netns.delete(name)


def _import(name: str, work: Path) -> Path:
    out = work / "import.yaml"
    imported = subprocess.run(
        [sys.executable, "-m", "agent", "import-keepalived", str(DATA / name)]  # noqa: RUF005
        + ["--config-id", "lb1", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert imported.returncode in (0, 2), imported.stderr
    with out.open("a") as f:
        f.write(f"state_dir: {work / 'state'}\n")
    return out


def _converge(lab: Lab, settled: Callable[[list[str]], bool] = lambda v: True) -> list[str]:
    """Both tables, once equal and ``settled`` (fails with both when they never are)."""
    deadline = time.monotonic() + SETTLE
    while True:
        ka_view, ag_view = _ipvs_view(lab.ka), _ipvs_view(lab.ag)
        filled = any(line.startswith("-A") for line in ag_view)
        if ka_view == ag_view and filled and settled(ag_view):
            return ag_view
        if time.monotonic() > deadline:
            pytest.fail("keepalived:\n" + "\n".join(ka_view) + "\nagent:\n" + "\n".join(ag_view))
        time.sleep(2)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


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
def test_keepalived_and_the_import_program_the_same_table(lab: Lab, name: str) -> None:
    """``lvs-agent apply``: the configured table, against keepalived's with every check passing."""
    out = _import(name, lab.work)
    keepalived = _keepalived(lab.ka, DATA / name, lab.work)
    try:
        applied = subprocess.run(
            netns.exec_argv(lab.ag, [sys.executable, "-m", "agent", "apply", "-c", str(out)]),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            cwd=ROOT,
            env={**os.environ, "LVS_AGENT_CACHE_DIR": ""},
        )
        assert applied.returncode == 0, applied.stdout + applied.stderr
        _converge(lab)
    finally:
        _stop(keepalived)


# A real server each file's checks watch, made to refuse its checks in both copies:
# both files remove it (keepalived's default without inhibit_on_failure).
FAILING = {
    "dr_mixed.conf": ("10.91.1.12", 443),
    "layered.conf": ("10.92.1.11", 8080),
}


@pytest.mark.parametrize("name", list(FAILING))
def test_both_checkers_take_a_failing_real_server_out_alike(lab: Lab, name: str) -> None:
    """``lvs-agent run`` with the imported checks against keepalived's checkers: the same
    table with every check passing, and again after one real server starts refusing."""
    out = _import(name, lab.work)
    log = (lab.work / "agent.log").open("w")
    keepalived = _keepalived(lab.ka, DATA / name, lab.work)
    agent = subprocess.Popen(
        netns.exec_argv(lab.ag, [sys.executable, "-m", "agent", "run", "-c", str(out)]),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    address, port = FAILING[name]
    target = f"-r {address}:"
    try:
        # every real server in at its weight
        _converge(lab, lambda view: not any(ZERO.search(line) for line in view))
        refuse = f"ip daddr {address} tcp dport {port} reject with tcp reset"
        for rs in lab.real.values():
            for command in (
                "add table inet h15",
                "add chain inet h15 input { type filter hook input priority 0; }",
                f"add rule inet h15 input {refuse}",
            ):
                subprocess.run(netns.exec_argv(rs, ["nft", command]), check=True, timeout=30)
        _converge(lab, lambda view: not any(target in v for v in view))
    finally:
        _stop(agent)
        _stop(keepalived)
