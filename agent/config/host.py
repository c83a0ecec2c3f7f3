"""Check a validated configuration against the machine it is checked on.

``lvs-agent check-config`` (and ``witness --check``) runs this after validation: the
lock key files, the state directories, the interfaces VRRP names and the commands it
runs, the programs of exec health checks and the CA files of https checks.
Validation (``agent.config.loader``) never looks at the host; this module only
looks: it stats paths and reads key files, and never creates or changes anything.

What can differ between the host where a file is checked and the director that runs
it (an interface, a script not installed yet, a state directory not created yet) is a
warning; what ``run`` would refuse or fail on here is an error. The key file is read
by the lock's own loader (``agent.lock.transport.load_keyring``), so ``check-config``
and ``run`` cannot disagree about it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

    from agent.config.model import Config
    from agent.lock.config import LockConfig


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem found on the host, worded like a validation problem.

    ``line`` 0: the key is not in the file (its default applies).
    """

    file: str
    line: int
    path: str
    message: str
    warning: bool = False

    def __str__(self) -> str:
        place = f"{self.file}:{self.line}:" if self.line else f"{self.file}:"
        mark = " warning:" if self.warning else ""
        key = f" {self.path}:" if self.path else ""
        return f"{place}{mark}{key} {self.message}"


def check_host(config: Config) -> list[Finding]:
    """Everything about ``config`` that this host can tell, in the file's order."""
    found: list[tuple[int, Finding]] = []  # (line in the configuration, finding)
    lines = config.lines

    def add(path: str, message: str, warning: bool = False) -> None:
        line = lines.get(path, 0)
        found.append((line, Finding(config.source, line, path, message, warning)))

    clusters = list(_clusters(config))
    dirs = [] if config.witness else [("state_dir", config.state_dir)]
    for prefix, lock in clusters:
        key = f"{prefix}.state_dir"
        dirs.append((key if key in lines else "state_dir", str(lock.state_dir)))
    seen: set[str] = set()
    for key, directory in dirs:
        if directory not in seen:
            seen.add(directory)
            problem = state_dir_problem(directory)
            if problem is not None:
                add(key, f"{directory} {problem[0]}", problem[1])

    for prefix, lock in clusters:
        key = f"{prefix}.key_file"
        bad_key = key_file_problem(lock.key_file)
        if bad_key is None:
            continue
        where, line, message = bad_key
        if line:  # inside the key file: its path and line first
            ref = lines.get(key, 0)
            named = f"(the key file of {key}, {config.source}:{ref})"
            found.append((ref, Finding(where, line, "", f"{message} {named}")))
        else:
            add(key, f"{where}: {message}")

    for i, instance in enumerate(config.vrrp.vrrp_instances):
        at = f"vrrp_instances[{i}]"
        if not interface_exists(instance.interface):
            add(
                f"{at}.interface",
                f"interface {instance.interface} does not exist on this host; "
                "run refuses to start without it",
                warning=True,
            )
        for j, tracked in enumerate(instance.track_interfaces):
            key = f"{at}.track_interfaces[{j}]"
            if not interface_exists(tracked.name):
                add(
                    key if key in lines else f"{key}.name",
                    f"interface {tracked.name} does not exist on this host; "
                    "run counts it as down until it appears",
                    warning=True,
                )
        commands: list[tuple[str, str | None]] = [
            (f"{at}.track_scripts[{j}].script", t.script)
            for j, t in enumerate(instance.track_scripts)
        ]
        commands.append((f"{at}.notify", instance.notify))
        for key, command in commands:
            problem = command_problem(command) if command is not None else None
            if problem is not None:
                add(key, *problem)
    for g, group in enumerate(config.vrrp.vrrp_sync_groups):
        problem = command_problem(group.notify) if group.notify is not None else None
        if problem is not None:
            add(f"vrrp_sync_groups[{g}].notify", *problem)
    _health_programs(config, found)
    for number, included in enumerate(config.includes):
        if not included.files:
            # Allowed (a conf.d directory may be empty), but never silently.
            message = f"{included.pattern!r} matches no file: nothing is included from it"
            path = f"include[{number}]"
            found.append(
                (included.line, Finding(config.source, included.line, path, message, True))
            )
    sync = config.ipvs.sync
    if sync is not None:
        if not interface_exists(sync.interface):
            add(
                "ipvs.sync.interface",
                f"interface {sync.interface} does not exist on this host; the kernel "
                "refuses to start a sync daemon on it",
                warning=True,
            )
        for key, message in sync_sysctl_findings(config):
            add("ipvs.sync.instance", f"net.ipv4.vs.{key}: {message}", warning=True)
    found.sort(key=lambda pair: pair[0])
    return [finding for _, finding in found]


def _health_programs(config: Config, found: list[tuple[int, Finding]]) -> None:
    """The programs of exec health checks and the CA files of https checks, each once,
    at the first real server that uses it. A virtual server read from an included file
    is named by its position (its line is in that file)."""
    seen: set[tuple[str, str]] = set()
    for i, vs in enumerate(config.virtual_servers):
        for j, rs in enumerate(vs.real_servers):
            for check in rs.checks:
                if check.type == "exec":
                    what = ("exec", check.command[0])
                    problem = None if what in seen else command_problem(shlex.join(check.command))
                elif check.type == "https" and check.tls_ca_file:
                    what = ("ca", check.tls_ca_file)
                    problem = None if what in seen else _ca_file_problem(check.tls_ca_file)
                else:
                    continue
                seen.add(what)
                if problem is None:
                    continue
                line = 0 if config.includes else rs.line
                path = f"virtual_servers[{i}].real_servers[{j}].health_checks"
                message = f"{vs.name}: {check.type} check: {problem[0]}"
                found.append((line, Finding(config.source, line, path, message, problem[1])))


def _ca_file_problem(path: str) -> tuple[str, bool] | None:
    """An https check's CA file: a readable regular file (a warning: it may be
    installed on the director only; until it is, the check fails)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"tls_ca_file {path}: {exc.strerror or exc}; the check fails until it exists", True
    if not stat.S_ISREG(st.st_mode):
        return f"tls_ca_file {path} is not a regular file", True
    if not os.access(path, os.R_OK):
        return f"tls_ca_file {path} is not readable (for uid {os.geteuid()})", True
    return None


SYSCTL_ROOT = Path("/proc/sys/net/ipv4/vs")


def sync_sysctl_findings(config: Config, root: Path = SYSCTL_ROOT) -> list[tuple[str, str]]:
    """With ``ipvs.sync``: the sysctls the file leaves alone whose value on this host
    keeps synced connections from surviving a takeover (README, "Connections survive
    a failover"). Only reads; a key the file sets is the reconciler's business."""
    asked = config.ipvs.sysctls
    if not root.is_dir():
        return [("*", "IPVS is not loaded on this host: the sync sysctls cannot be checked")]

    def value(key: str) -> list[int] | None:
        try:
            return [int(v) for v in (root / key).read_text().split()]
        except (OSError, ValueError):
            return None

    out: list[tuple[str, str]] = []
    nat = any(rs.forwarding == "nat" for vs in config.virtual_servers for rs in vs.real_servers)
    if nat and "conntrack" not in asked and value("conntrack") == [0]:
        out.append(
            (
                "conntrack",
                "is 0 with NAT real servers: if netfilter connection tracking sees this "
                "traffic (a stateful firewall, iptables NAT), a synced connection has no "
                "conntrack entry on the new master and its packets may be dropped as "
                "INVALID; set ipvs.sysctls.conntrack: 1",
            )
        )
    persistent = any(vs.persistence is not None for vs in config.virtual_servers)
    if persistent and "sync_persist_mode" not in asked and value("sync_persist_mode") == [1]:
        out.append(
            (
                "sync_persist_mode",
                "is 1: only the persistence templates of persistent services are synced, "
                "not their connections, which then break at a takeover",
            )
        )
    threshold = value("sync_threshold")
    if (
        "sync_threshold" not in asked
        and threshold is not None
        and len(threshold) == 2
        and threshold[1] == 0
        and value("sync_refresh_period") == [0]
    ):
        out.append(
            (
                "sync_threshold",
                "period is 0 with sync_refresh_period 0: a connection is synced once, "
                f"at its packet number {threshold[0]}, and none of its later state changes",
            )
        )
    if "expire_nodest_conn" not in asked and value("expire_nodest_conn") == [0]:
        out.append(
            (
                "expire_nodest_conn",
                "is 0: a synced connection whose real server is gone on the new master "
                "keeps its entry and its packets are dropped silently until it times out; "
                "1 expires it at once and the client reconnects "
                "(set ipvs.sysctls.expire_nodest_conn: 1)",
            )
        )
    return out


def _clusters(config: Config) -> Iterator[tuple[str, LockConfig]]:
    """Each lock cluster with the key path of its section."""
    if config.lock is not None:
        yield "lock", config.lock
    # A witness file: the ``lock`` section (if any) first, then ``witness.clusters``.
    offset = 1 if "lock.key_file" in config.lines else 0
    for n, lock in enumerate(config.witness):
        yield ("lock" if n < offset else f"witness.clusters[{n - offset}]"), lock


def interface_exists(name: str) -> bool:
    """Whether this host (its network namespace) has an interface called ``name``."""
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def key_file_problem(path: Path) -> tuple[str, int, str] | None:
    """What the lock would refuse about its key file: (file, line or 0, message)."""
    from agent.lock.transport import load_keyring  # with the lock package: only when used
    from agent.lock.wire import KeyFileError

    try:
        load_keyring(path)
    except KeyFileError as exc:
        return exc.path or str(path), exc.line, exc.reason
    return None


def state_dir_problem(directory: str) -> tuple[str, bool] | None:
    """Why ``run`` could not keep its state in ``directory``: (message, is a warning).

    ``run`` creates the directory and its parents (``mkdir -p``); one that does not
    exist yet but could be created is only a warning.
    """
    path = Path(directory)
    probe = path
    while True:  # up to the nearest thing that exists ("/" does)
        try:
            st = probe.stat()
            break
        except (FileNotFoundError, NotADirectoryError):
            probe = probe.parent
        except OSError as exc:
            return f"cannot be used: {probe}: {exc.strerror or exc}", False
    exists = probe == path
    prefix = "" if exists else f"cannot be created: {probe} "
    if not stat.S_ISDIR(st.st_mode):
        return ("exists and is not a directory" if exists else f"{prefix}is not a directory"), False
    if not os.access(probe, os.W_OK | os.X_OK):
        why = "on a read-only file system" if _read_only(probe) else "not writable"
        user = f"uid {os.geteuid()}"
        return (f"is {why} (for {user})" if exists else f"{prefix}is {why} (for {user})"), False
    if not exists:
        return "does not exist yet; run creates it", True
    return None


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def command_problem(command: str) -> tuple[str, bool] | None:
    """What is wrong with the program of a track script or notify command, as the VRRP
    service runs it (split like a shell would, then executed without one): (message,
    is a warning). Only the program is checked, not its arguments."""
    argv = shlex.split(command)  # validation made sure it splits
    program = argv[0] if argv else ""
    if not program.startswith("/"):
        # run finds it through its PATH, as keepalived does: a warning, not an error
        # (check-config must not refuse what run accepts); --strict makes it one.
        found = shutil.which(program)
        where = f"here {found}" if found else "not found in this PATH"
        return (
            f"{program!r} is not an absolute path: run looks it up in its PATH "
            f"({where}); write the full path",
            True,
        )
    try:
        st = os.stat(program)
    except (FileNotFoundError, NotADirectoryError):
        return f"{program} does not exist on this host", True
    except OSError as exc:
        return f"{program}: {exc.strerror or exc}", False
    if not stat.S_ISREG(st.st_mode):
        return f"{program} is not a regular file", False
    if not os.access(program, os.X_OK):
        return f"{program} is not executable (for uid {os.geteuid()})", False
    return None
