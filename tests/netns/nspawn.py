"""A booted systemd container for the deployment tests (systemd units, Ansible).

``Container`` boots the host's own tree under ``systemd-nspawn`` with systemd as its
PID 1, the way a director runs the agent: the root is an overlay (the host's root file
system read-only underneath, a tmpfs on top, so the container can write /etc, /opt and
/usr and nothing of it reaches the host), the repository is bound read-only, and the
network is a namespace made here holding one veth pair (``v0`` 10.99.0.1/24 and its
peer ``v1`` 10.99.0.2/24), whose sysctls (/proc/sys/net) the container may write:
nothing touches the host's network. Commands run inside
with ``nsenter`` into the container's PID 1. Closing it stops the container (SIGTERM to
the ``systemd-nspawn`` process started here, SIGKILL after a bound), unmounts the
overlay and deletes the namespace.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

from agent.lab import netns

REPO = Path(__file__).resolve().parents[2]
# The repository again at a fixed path that a sandboxed unit can see: the clone may
# live under /tmp or /root, which PrivateTmp= and ProtectHome= hide from services.
REPO_IN = Path("/srv/lvs-agent-repo")
BOOT_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class Container:
    def __init__(self, name: str, *, binds: tuple[str, ...] = ()) -> None:
        self.name = f"{name}{os.getpid()}"
        self.ns = self.name
        self.top = Path(f"/run/{self.name}")
        self.root = self.top / "merged"
        self.binds = binds
        self.log = self.top.parent / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.leader = 0
        self._mounted: list[Path] = []
        self._ns_made = False

    def __enter__(self) -> Container:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _start(self) -> None:
        netns.ip("netns", "add", self.ns)
        self._ns_made = True
        netns.ip("link", "set", "lo", "up", netns=self.ns)
        netns.ip("link", "add", "v0", "type", "veth", "peer", "name", "v1", netns=self.ns)
        for dev, addr in (("v0", "10.99.0.1/24"), ("v1", "10.99.0.2/24")):
            netns.ip("addr", "add", addr, "dev", dev, netns=self.ns)
            netns.ip("link", "set", dev, "up", netns=self.ns)
        self.top.mkdir(parents=True, exist_ok=True)
        _run("mount", "-t", "tmpfs", "tmpfs", str(self.top))
        self._mounted.append(self.top)
        for d in ("upper", "work", "merged"):
            (self.top / d).mkdir()
        _run(
            "mount", "-t", "overlay", "overlay", "-o",
            f"lowerdir=/,upperdir={self.top}/upper,workdir={self.top}/work", str(self.root),
        )  # fmt: skip
        self._mounted.append(self.root)
        # Boot without the services this host enables (databases, web servers, ...): only
        # what a test installs runs. The links go in the overlay, not on the host.
        wants = self.root / "etc/systemd/system/multi-user.target.wants"
        for link in wants.glob("*") if wants.is_dir() else ():
            link.unlink()
        args = [
            "systemd-nspawn", "-q", "-D", str(self.root), "--register=no", "--keep-unit",
            # nspawn drops CAP_NET_ADMIN unless the network is private; this one is.
            "--capability=CAP_NET_ADMIN",
            f"--network-namespace-path=/run/netns/{self.ns}",
            f"--bind-ro={REPO}",
            f"--bind-ro={REPO}:{REPO_IN}",
            *(f"--bind-ro={b}" for b in self.binds),
            "--boot", "--", "systemd.firstboot=no",
        ]  # fmt: skip
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # /proc/sys/net writable inside (it is the namespace made here): sysctls
                env={**os.environ, "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"},
            )
        deadline = time.monotonic() + BOOT_TIMEOUT
        state = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"systemd-nspawn exited: {self.log.read_text()[-2000:]}")
            if not self.leader:
                self.leader = _systemd_child(self.proc.pid)
            if self.leader:
                state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
                if state in ("running", "degraded"):
                    return
            time.sleep(0.5)
        raise AssertionError(f"container not booted after {BOOT_TIMEOUT:g}s (state {state!r})")

    def run(
        self,
        *argv: str,
        check: bool = True,
        timeout: float = 120.0,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``argv`` inside the container (all its namespaces, its root)."""
        prefix = ["nsenter", "-t", str(self.leader), "-a"]
        if env:
            prefix += ["env", *(f"{k}={v}" for k, v in env.items())]
        done = subprocess.run(
            [*prefix, *argv], capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
            )
        return done

    def sh(self, script: str, check: bool = True, timeout: float = 120.0) -> str:
        return self.run("sh", "-ec", script, check=check, timeout=timeout).stdout

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        """A file in the container, written through its overlay's upper layer."""
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # nspawn powers the container off
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for path in reversed(self._mounted):
            subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)
        self._mounted.clear()
        if self.top.exists() and not os.path.ismount(self.top):
            shutil.rmtree(self.top, ignore_errors=True)
        if self._ns_made:
            netns.ip("netns", "del", self.ns, check=False)
            self._ns_made = False
        self.log.unlink(missing_ok=True)  # a failed boot quoted its tail already


def _systemd_child(pid: int) -> int:
    """The container's PID 1 as the host sees it: the child of nspawn running systemd."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0
    for child in children:
        try:
            if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                return int(child)
        except OSError:
            continue
    return 0


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)
