"""Operator maintenance flags: which real servers ``lvs-agent maint`` took out.

Owns ``state_dir/maintenance.json`` and nothing else: the set of
``(virtual server name, (address, port))`` pairs an operator put in maintenance. It
is loaded at start, written atomically (temp file, fsync, rename, mode 0600) only
when a flag changes, and survives restarts and reloads. A pair naming a virtual
server or real server that the running configuration does not have is refused
(``MaintenanceError``) and changes nothing. Entries whose server left the
configuration on a later reload are kept (the flag comes back with the server).

It never touches the kernel: the weight a flagged server carries (0) is decided where
the health weights are (the daemon's health overlay), which reads ``keys()``.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.config.model import VirtualServer

FILE_NAME = "maintenance.json"
FORMAT_VERSION = 1

RsKey = tuple[str, int]
MaintKey = tuple[str, RsKey]


class MaintenanceError(ValueError):
    """A maintenance request that cannot be applied; the message says why."""


def parse_real_server(text: str) -> RsKey:
    """``addr:port``, ``[v6addr]:port``, or a bare address (port 0, fwmark services),
    as the configuration's canonical ``(address, port)``."""
    text = text.strip()
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise MaintenanceError(f"real server {text!r}: missing ']'")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise MaintenanceError(f"real server {text!r}: expected [address]:port")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise MaintenanceError(
            f"real server {text!r}: not an IP address (addr:port, [v6addr]:port)"
        ) from None
    port = 0
    if port_text:
        if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise MaintenanceError(f"real server {text!r}: port must be 0..65535")
        port = int(port_text)
    return str(address), port


def format_real_server(key: RsKey) -> str:
    address, port = key
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


class MaintenanceStore:
    """The flags, checked against the configured servers (``servers``: virtual server
    name -> its real servers' keys; replaced with ``configure`` on reload)."""

    def __init__(self, path: Path, servers: Mapping[str, Iterable[RsKey]]) -> None:
        self.path = path
        self._servers: dict[str, frozenset[RsKey]] = {}
        self._keys: frozenset[MaintKey] = frozenset()
        self.configure(servers)

    def configure(self, servers: Mapping[str, Iterable[RsKey]]) -> None:
        self._servers = {name: frozenset(keys) for name, keys in servers.items()}

    def load(self) -> None:
        """Read the file (absent: no flags). Raises MaintenanceError, keeping no flags,
        when it cannot be read or is not a maintenance file."""
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self._keys = frozenset()
            return
        except OSError as exc:
            raise MaintenanceError(f"{self.path}: cannot read: {exc.strerror}") from exc
        try:
            data = json.loads(raw)
            if data.get("version") != FORMAT_VERSION:
                raise ValueError(f"version {data.get('version')!r}")
            keys = frozenset(
                (str(e["virtual_server"]), (str(e["address"]), int(e["port"])))
                for e in data["maintenance"]
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MaintenanceError(f"{self.path}: not a valid maintenance file ({exc})") from exc
        self._keys = keys

    def keys(self) -> frozenset[MaintKey]:
        return self._keys

    def is_on(self, vs: str, rs: RsKey) -> bool:
        return (vs, rs) in self._keys

    def set(self, vs: str, rs: RsKey, on: bool) -> bool:
        """Put ``rs`` of ``vs`` in (``on``) or out of maintenance; True when that changed
        the flags (and the file was written). Unknown servers raise MaintenanceError;
        so does a failed write, which leaves the flags as they were."""
        if vs not in self._servers:
            known = ", ".join(sorted(self._servers)) or "none"
            raise MaintenanceError(f"no virtual server {vs!r} (configured: {known})")
        if rs not in self._servers[vs] and not (not on and (vs, rs) in self._keys):
            raise MaintenanceError(
                f"virtual server {vs!r} has no real server {format_real_server(rs)}"
            )
        key = (vs, rs)
        new = self._keys | {key} if on else self._keys - {key}
        if new == self._keys:
            return False
        self._write(new)
        self._keys = new
        return True

    def _write(self, keys: frozenset[MaintKey]) -> None:
        entries = [
            {"virtual_server": vs, "address": rs[0], "port": rs[1]} for vs, rs in sorted(keys)
        ]
        text = json.dumps({"version": FORMAT_VERSION, "maintenance": entries}, indent=1) + "\n"
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            if os.geteuid() == 0:
                # ``lvs-agent maint`` as root with no agent running: the file stays the
                # agent's (its user owns state_dir under systemd), or it could not read it.
                owner = os.stat(self.path.parent)
                os.fchown(fd, owner.st_uid, owner.st_gid)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            raise MaintenanceError(f"{self.path}: cannot write: {exc.strerror}") from exc


def configured_servers(virtual_servers: Iterable[VirtualServer]) -> dict[str, list[RsKey]]:
    """Virtual server name -> its real servers' keys, from ``Config.virtual_servers``."""
    return {vs.name: [(rs.address, rs.port) for rs in vs.real_servers] for vs in virtual_servers}
