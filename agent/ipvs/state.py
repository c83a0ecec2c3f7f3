"""Persist what the agent owns in the IPVS table, so that ownership survives a restart.

A service removed from the configuration while the agent was down must still be
cleaned up, and a drain that was under way must keep its start time. This file
is the only memory of both. It is written atomically (temp file, fsync, rename)
and only when its content changes, so a restart with unchanged configuration
writes nothing.

Drain start times are CLOCK_BOOTTIME seconds, which survive a process restart
but not a reboot; the file records the boot id and drops drain times from an
earlier boot (the IPVS table did not survive it either).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from agent.ipvs.model import DestKey, ServiceKey
from agent.ipvs.plan import Ownership

FORMAT_VERSION = 1


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


class StateFileError(Exception):
    """The state file exists but cannot be read; the message names the file and the fault."""


class OwnershipStore:
    """The state file. ``load`` reads it again only when it is another file than the one
    last read or written here (inode, size or modification time changed): at 10,000
    services one ``json.loads`` of it holds the interpreter lock for 3 ms on hardware,
    tens of ms under emulation, and the daemon loads it around every reconcile."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._saved: Ownership | None = None
        self._file: tuple[int, int, int, int] | None = None  # what ``_saved`` was read from

    def load(self) -> Ownership:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            self._saved, self._file = Ownership(), None
            return self._saved
        except OSError as exc:
            raise StateFileError(f"{self.path}: cannot read: {exc.strerror}") from exc
        try:
            with os.fdopen(fd, encoding="utf-8") as f:
                seen = _identity(os.fstat(f.fileno()))
                if self._saved is not None and seen == self._file:
                    return self._saved
                raw = f.read()
        except OSError as exc:
            raise StateFileError(f"{self.path}: cannot read: {exc.strerror}") from exc
        except ValueError as exc:  # not UTF-8
            raise StateFileError(f"{self.path}: cannot read: {exc}") from exc
        try:
            data = json.loads(raw)
            ownership = _decode(data, same_boot=data.get("boot_id") == boot_id())
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StateFileError(
                f"{self.path}: not a valid lvs-agent state file ({exc}); "
                "move it away to start over (services the agent created earlier "
                "will then be left alone unless the configuration names them)"
            ) from exc
        self._saved, self._file = ownership, seen
        return ownership

    def save(self, ownership: Ownership) -> bool:
        """Write ``ownership`` if it differs from what is on disk; True when written."""
        if self._saved is not None and _same(self._saved, ownership):
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps(_encode(ownership), indent=1, sort_keys=True)
        # Not tempfile (10 ms of imports on hardware for one name): writers hold the
        # instance lock, so the process id makes the name unique.
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(tmp, flags, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            written = _identity(os.stat(tmp))
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._saved, self._file = ownership, written
        return True


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _same(a: Ownership, b: Ownership) -> bool:
    return a.services == b.services and dict(a.drains) == dict(b.drains)


def _svc(k: ServiceKey) -> list[Any]:
    return [k.af, k.protocol, k.address, k.port, k.fwmark]


def _encode(o: Ownership) -> dict[str, Any]:
    return {
        "version": FORMAT_VERSION,
        "boot_id": boot_id(),
        "services": sorted(_svc(k) for k in o.services),
        "drains": sorted(
            [*_svc(s), d.af, d.address, d.port, start] for (s, d), start in o.drains.items()
        ),
    }


def _decode(data: dict[str, Any], same_boot: bool) -> Ownership:
    if data["version"] != FORMAT_VERSION:
        raise ValueError(f"unsupported version {data['version']!r}")
    services = frozenset(
        ServiceKey(int(a), int(p), str(ad), int(po), int(fm))
        for a, p, ad, po, fm in data["services"]
    )
    drains: dict[tuple[ServiceKey, DestKey], float] = {}
    if same_boot:
        for a, p, ad, po, fm, da, dad, dpo, start in data["drains"]:
            key = ServiceKey(int(a), int(p), str(ad), int(po), int(fm))
            drains[(key, DestKey(int(da), str(dad), int(dpo)))] = float(start)
    return Ownership(services, drains)
