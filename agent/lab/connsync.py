"""Do established connections survive a director failover? Measured in a lab.

Lab, test and benchmark scaffolding (tests/kernel/test_conn_sync.py,
bench/conn_survival). Two directors in their own namespaces (each its own IPVS
table), a client and two echo real servers (``agent.lab.echo``); the directors run
``lvs-agent run`` with VRRP (in NAT the VIP and the real servers' gateway in one
sync group) and, when asked, ``ipvs.sync``. The client opens ``connections``
long-lived TCP connections through the VIP and moves data on each; then the
master fails:

- ``crash``: SIGKILL of its agent and its links cut (its switch-side veths down);
- ``planned``: SIGTERM (the agent leaves VRRP with priority 0, its master sync
  daemon stops, the backup takes over at once);
- ``handover``: ``lvs-agent failover vip`` (the agent stays up: it leaves MASTER,
  stops its master sync daemon and keeps its backup daemon; agent directors only).

Data sent on every connection during the takeover must come back (echoed, so both
ways) within ``deadline`` seconds; the ones that do are counted as survivors.
Before the fault the backup's connection table is read with ``ipvsadm -Lnc`` (the
referee) to count the synced entries. Every loop is bounded in count and time;
everything started here is stopped here.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from agent.lab import netns
from agent.lab.agents import REPO, LabAgent
from agent.lab.demo import lab_config, vrrp_config, wait_for_table
from agent.lab.topology import CLIENT, Host, Lab

FAULTS = ("crash", "planned", "handover")
SYNC_INTERFACE = "eth0"  # the front LAN: present on both directors in DR and NAT


@dataclass
class Survival:
    forwarding: str
    fault: str
    sync: bool
    connections: int  # asked for
    opened: int = 0  # established and echoing before the fault
    synced: int = 0  # the client's ESTABLISHED entries in the backup's table before it
    survived: int = 0  # echoed after the fault
    takeover: float = 0.0  # seconds from the fault to the backup holding the VIP
    #: with sync: the new master runs the master sync daemon after the takeover (and,
    #: but after a crash, the old one runs only the backup daemon)
    master_moved: bool = False
    note: str = ""

    @property
    def share(self) -> float:
        return self.survived / self.opened if self.opened else 0.0


def sync_section(lab: Lab) -> dict[str, object]:
    """``ipvs.sync`` for this site: the instance (NAT: the sync group) that moves the VIP."""
    return {"instance": "director" if lab.floating_gateway else "vip", "interface": SYNC_INTERFACE}


def director_config(lab: Lab, i: int, state_dir: Path, sync: bool, priority: int) -> str:
    text = lab_config(lab, str(state_dir), director=i) + vrrp_config(lab, i, priority)
    doc = yaml.safe_load(text)
    if sync:
        doc["ipvs"]["sync"] = sync_section(lab)
    return yaml.safe_dump(doc, sort_keys=False)


def ipvsadm(ns: str, *args: str) -> str:
    out = subprocess.run(
        netns.exec_argv(ns, ["ipvsadm", *args]),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return out.stdout


def established_entries(ns: str, client: str = CLIENT) -> int:
    """The client's ESTABLISHED connections in ``ns``'s IPVS table (``ipvsadm -Lnc``)."""
    return sum(
        1
        for line in ipvsadm(ns, "-Lnc").splitlines()
        if " ESTABLISHED " in f" {line} " and f" {client}:" in f" {line}"
    )


def daemons(ns: str) -> str:
    """``ipvsadm -L --daemon``: the referee for which sync daemons run."""
    return ipvsadm(ns, "-L", "--daemon")


class Clients:
    """``n`` TCP connections from the client's namespace to the VIP; echo rounds."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.socks: list[socket.socket] = []
        self.alive: list[bool] = []

    def open(self, n: int, port: int = 80, timeout: float = 120.0) -> int:
        deadline = time.monotonic() + timeout
        for _ in range(n):
            if time.monotonic() > deadline:
                break
            with netns.entered(self.lab.client.ns):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(max(1.0, min(10.0, deadline - time.monotonic())))
            try:
                s.connect((self.lab.vip, port))
            except OSError:
                s.close()
                continue
            s.setblocking(False)
            self.socks.append(s)
            self.alive.append(True)
        return len(self.socks)

    def send(self, tag: int) -> None:
        """Queue one message on every live connection (a few bytes: never blocks)."""
        for i, s in enumerate(self.socks):
            if not self.alive[i]:
                continue
            try:
                s.send(_message(tag, i))
            except OSError:
                self.alive[i] = False

    def collect(self, tag: int, deadline: float) -> set[int]:
        """Indices whose echo of message ``tag`` came back before ``deadline``."""
        want = {i: _message(tag, i) for i, ok in enumerate(self.alive) if ok}
        got: dict[int, bytes] = dict.fromkeys(want, b"")
        done: set[int] = set()
        sel = selectors.DefaultSelector()
        for i in want:
            sel.register(self.socks[i], selectors.EVENT_READ, i)
        try:
            while len(done) + sum(1 for i in want if not self.alive[i]) < len(want):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                for key, _ in sel.select(timeout=min(left, 1.0)):
                    i = key.data
                    try:
                        data = self.socks[i].recv(4096)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        self.alive[i] = False
                        sel.unregister(self.socks[i])
                        continue
                    got[i] += data
                    if got[i] == want[i]:
                        done.add(i)
                        sel.unregister(self.socks[i])
                    elif not want[i].startswith(got[i]):
                        self.alive[i] = False  # someone else's bytes: not our connection
                        sel.unregister(self.socks[i])
        finally:
            sel.close()
        for i in want:
            if i not in done:
                self.alive[i] = False
        return done

    def round(self, tag: int, timeout: float) -> set[int]:
        self.send(tag)
        return self.collect(tag, time.monotonic() + timeout)

    def close(self) -> None:
        for s in self.socks:
            with contextlib.suppress(OSError):
                s.close()
        self.socks.clear()


def _message(tag: int, i: int) -> bytes:
    return f"{tag:04d}:{i:05d}\n".encode()


def keepalived_lvs_conf(lab: Lab, i: int, priority: int, sync: bool) -> str:
    """keepalived.conf doing what ``director_config`` asks of the agent: the same VRRP
    instances (and sync group), the same virtual server, ``lvs_sync_daemon``."""
    instances, groups = lab.vrrp_instances(i, priority=priority)
    lines = ["global_defs {", f"  router_id {lab.director(i).name}", "  vrrp_version 3"]
    if sync:
        # keepalived names an instance; in a sync group it is the VIP's (same transitions)
        lines.append(f"  lvs_sync_daemon {SYNC_INTERFACE} vip id 51")
    lines.append("}")
    for g in groups:
        lines += [f"vrrp_sync_group {g['name']} {{", "  group {"]
        lines += [f"    {name}" for name in g["instances"]]
        lines += ["  }", "}"]
    for inst in instances:
        lines += [
            f"vrrp_instance {inst['name']} {{",
            "  state BACKUP",
            f"  interface {inst['interface']}",
            f"  virtual_router_id {inst['vrid']}",
            f"  priority {priority}",
            "  advert_int 1",
            "  virtual_ipaddress {",
            *[f"    {v}" for v in inst["virtual_ips"]],
            "  }",
            "}",
        ]
    lines += [
        f"virtual_server {lab.vip} 80 {{",
        "  delay_loop 60",
        "  lb_algo rr",
        f"  lb_kind {lab.forwarding.upper()}",
        "  protocol TCP",
    ]
    for r in range(1, lab.real_servers + 1):
        lines += [
            f"  real_server {lab.real_server_address(r)} {lab.real_server_port} {{",
            "    weight 1",
            "  }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


class KeepalivedLvs:
    """keepalived with both subsystems (VRRP and LVS) in a director's namespace.

    A crash stops the parent (so it respawns nothing), then SIGKILLs both children and
    the parent; only processes started here are signalled."""

    def __init__(self, lab: Lab, host: Host, conf: str, workdir: Path) -> None:
        self.lab = lab
        self.conf = workdir / f"keepalived-{host.name}.conf"
        self.log = workdir / f"keepalived-{host.name}.log"
        self._pids = [workdir / f"keepalived-{host.name}-{k}.pid" for k in ("vrrp", "check")]
        main = workdir / f"keepalived-{host.name}.pid"
        for stale in (main, *self._pids):
            stale.unlink(missing_ok=True)
        self.conf.write_text(conf)
        argv = ["keepalived", "-n", "-l", "-D", "-f", str(self.conf), "-p", str(main)]
        argv += ["-r", str(self._pids[0]), "-c", str(self._pids[1])]
        self.proc = lab.spawn(host, argv, log=self.log)

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def _children(self) -> list[int]:
        out = []
        for path in self._pids:
            with contextlib.suppress(OSError, ValueError):
                out.append(int(path.read_text().strip()))
        return out

    def kill(self) -> None:
        children = self._children()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGSTOP)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self) -> None:
        children = self._children()
        self.lab.stop(self.proc, signal.SIGTERM)
        for pid in children:  # normally gone with the parent
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


Director = LabAgent | KeepalivedLvs


@contextlib.contextmanager
def directors(
    forwarding: str,
    sync: bool,
    workdir: Path | None = None,
    prefix: str = "h14cs",
    driver: str = "agent",
) -> Iterator[tuple[Lab, dict[str, Director], Path]]:
    """A built lab with echo real servers and two directors (``driver``: the agent or
    keepalived), d1 (priority 150) the master."""
    work = workdir or Path(tempfile.mkdtemp(prefix="lvs-agent-connsync-"))
    import secrets

    lab = Lab(
        forwarding=forwarding,
        directors=2,
        vip_on_director=False,
        prefix=f"{prefix}{secrets.token_hex(2)}",
    )
    with lab:
        for i in range(1, lab.real_servers + 1):
            host = lab.real_server(i)
            lab.spawn(
                host,
                [sys.executable, "-m", "agent.lab.echo", "--port", str(lab.real_server_port)],
                log=work / f"echo-{host.name}.log",
            )
        agents: dict[str, Director] = {}
        for i, priority in ((1, 150), (2, 100)):
            d = lab.director(i)
            if driver == "keepalived":
                agents[d.name] = KeepalivedLvs(
                    lab, d, keepalived_lvs_conf(lab, i, priority, sync), work
                )
            else:
                config = director_config(lab, i, work / f"state-{d.name}", sync, priority)
                agents[d.name] = LabAgent(lab, d, config, work)
        yield lab, agents, work


def measure(
    forwarding: str,
    fault: str,
    sync: bool,
    connections: int = 200,
    deadline: float = 60.0,
    workdir: Path | None = None,
    log: bool = True,
    driver: str = "agent",
) -> Survival:
    """One run: build, settle, open, check the backup, fail the master, count."""
    if fault not in FAULTS:
        raise ValueError(f"fault must be one of {', '.join(FAULTS)}, not {fault!r}")
    result = Survival(forwarding, fault, sync, connections)

    def say(text: str) -> None:
        if log:
            mode = "sync" if sync else "no-sync"
            print(f"connsync {driver} {forwarding}/{fault}/{mode}: {text}")
            sys.stdout.flush()

    with directors(forwarding, sync, workdir, driver=driver) as (lab, agents, _work):
        d1, d2 = agents["d1"], agents["d2"]
        for i in (1, 2):
            if not wait_for_table(lab, 1, lab.real_servers, timeout=180, director=i):
                raise RuntimeError(f"d{i} did not program IPVS:\n{agents[f'd{i}'].text()}")
        time.sleep(1.0)  # a moment for VRRP to elect with both up
        if not _wait(lambda: lab.holders() == ["d1"], 120, 0.5):
            raise RuntimeError(f"no settled master:\n{d1.text()}\n{d2.text()}")
        if sync and not _wait(lambda: "backup sync daemon" in daemons(lab.director(2).ns), 60):
            raise RuntimeError(f"d2 runs no backup sync daemon:\n{d2.text()}")
        if sync and not _wait(lambda: "master sync daemon" in daemons(lab.director(1).ns), 60):
            raise RuntimeError(f"d1 runs no master sync daemon:\n{d1.text()}")
        clients = Clients(lab)
        try:
            clients.open(connections)
            tag = 0
            for tag in range(1, 4):  # the 3rd packet of a connection gets it synced
                clients.round(tag, 30.0)
            result.opened = sum(clients.alive)
            say(f"{result.opened} of {connections} connections echo through d1")
            if sync:
                _wait(lambda: established_entries(lab.director(2).ns) >= result.opened, 20)
            result.synced = established_entries(lab.director(2).ns)
            say(f"d2's table holds {result.synced} of the client's ESTABLISHED connections")
            start = time.monotonic()
            tag += 1
            if fault == "crash":
                d1.kill()
                ifaces = ["eth0", "eth1"] if forwarding == "nat" else ["eth0"]
                for ifname in ifaces:
                    netns.ip("link", "set", f"d1-{ifname}", "down", netns=lab.hosts["sw"].ns)
            elif fault == "handover":
                assert isinstance(d1, LabAgent)
                handover(d1)
            else:
                d1.signal(signal.SIGTERM)
            clients.send(tag)  # in flight during the takeover
            if _wait(lambda: "d2" in lab.holders(), 60, 0.05):
                result.takeover = time.monotonic() - start
            survivors = clients.collect(tag, start + deadline)
            if sync:
                d1_ns, d2_ns = lab.director(1).ns, lab.director(2).ns

                def moved() -> bool:
                    if "master sync daemon" not in daemons(d2_ns):
                        return False
                    if fault == "crash":
                        return True  # the old master's daemon runs on without its agent
                    shown = daemons(d1_ns)
                    return "master sync daemon" not in shown and "backup sync daemon" in shown

                result.master_moved = _wait(moved, 30, 0.5)
            # and once more, after the dust settled: data still moves both ways
            tag += 1
            result.survived = len(clients.round(tag, 20.0) & survivors)
            say(
                f"{result.survived} of {result.opened} survived ({result.share:.1%}); "
                f"takeover {result.takeover:.2f}s"
            )
        finally:
            clients.close()
            for agent in agents.values():
                agent.stop()
    return result


def handover(agent: LabAgent) -> None:
    """``lvs-agent failover vip`` against d1's running agent (it stays up, as a backup)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    argv = [sys.executable, "-m", "agent", "failover", "-c", str(agent.config), "vip"]
    done = subprocess.run(
        netns.exec_argv(agent.host.ns, argv),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"lvs-agent failover: {done.returncode}: {done.stdout}{done.stderr}")


def _wait(check: object, timeout: float, step: float = 0.25) -> bool:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step)
    return bool(check())
