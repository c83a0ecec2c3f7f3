"""What `apply` and `plan` need from a configuration file, kept on disk by the file's digest.

Reading the YAML and building the desired table is most of a one-shot command's
work at 10,000 services (about 9 of 20 s under emulation, 0.7 s on hardware),
and both depend only on the file's bytes and on the agent's code. So once a
file has been read and found valid, its state_dir, ipvs settings and desired
table are stored under a key made of a BLAKE2b digest of those bytes and a fingerprint
of the code: the content of every module of the agent and of the installed YAML
library (PyYAML's modules and its libyaml extension), the entry format and the
Python version. A later command given the same bytes loads the
entry instead of reading the file: the common cases, a re-apply or a restart
with an unchanged configuration, skip the YAML entirely.

Rules:
- Only a valid file is ever stored, so a hit means the file is valid; a changed
  byte, a changed module or another Python is a miss, and the file is read and
  validated as usual.
- Entries are marshal data (plain tuples, read in C; marshal is built in, so
  nothing more is imported). The directory and every entry must belong to the
  effective user and be writable by nobody else, or the cache is not used at
  all (it is never a way for another user to feed the agent a table).
- Each entry starts with a BLAKE2b-256 digest of the rest, so a damaged entry is never
  taken for a different table. Anything unexpected (unreadable, truncated,
  damaged, another format) is a miss. A write that fails leaves the command's
  result unchanged: the cache is only ever a shortcut.
- At most ``KEEP`` entries are kept; the least recently used go first.

The directory is ``/var/cache/lvs-agent``, or ``$LVS_AGENT_CACHE_DIR``; an
empty ``LVS_AGENT_CACHE_DIR`` turns the cache off.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.machinery
import marshal
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from agent.config.model import IpvsSettings, SyncSettings

try:  # built into the interpreter: hashlib would first load OpenSSL (55 ms emulated)
    from _blake2 import blake2b
except ImportError:  # pragma: no cover - an interpreter built without it
    from hashlib import blake2b
from agent.gcpause import paused_gc
from agent.ipvs.model import (
    DesiredService,
    DesiredTable,
    Dest,
    DestKey,
    Forwarding,
    Service,
    ServiceKey,
    TunnelType,
)

DEFAULT_DIR: Final = "/var/cache/lvs-agent"
ENV_DIR: Final = "LVS_AGENT_CACHE_DIR"
KEEP: Final = 8
FORMAT: Final = 3
_SUFFIX: Final = ".ipvs"
_SUM_SIZE: Final = 32  # an entry is blake2b-256(payload) + payload


@dataclass(frozen=True, slots=True)
class CompiledConfig:
    """The part of a valid configuration that `apply` and `plan` use."""

    state_dir: str
    ipvs: IpvsSettings
    table: DesiredTable


class ConfigCache:
    def __init__(self, directory: str | os.PathLike[str] | None) -> None:
        """``directory`` None: a cache that never hits and never stores."""
        self.directory = Path(directory) if directory else None
        self._fingerprint: bytes | None = None
        self._last: tuple[bytes, Path] | None = None  # a miss's store hashes nothing again

    @classmethod
    def default(cls) -> ConfigCache:
        return cls(os.environ.get(ENV_DIR, DEFAULT_DIR))

    def load(self, data: bytes) -> CompiledConfig | None:
        """The entry stored for a file with these bytes, or None."""
        path = self._entry(data)
        if path is None or not self._trusted_dir(create=False):
            return None
        try:
            with open(path, "rb") as f:
                if not _trusted(os.fstat(f.fileno())):
                    return None
                blob = f.read()
            payload = blob[_SUM_SIZE:]
            if blake2b(payload, digest_size=_SUM_SIZE).digest() != blob[:_SUM_SIZE]:
                return None  # damaged: read the file instead, and store it again
            with paused_gc():  # tens of thousands of objects
                compiled = _from_record(marshal.loads(payload))
        except Exception:  # a miss, whatever went wrong: the file is read instead
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used
        return compiled

    def store(self, data: bytes, compiled: CompiledConfig) -> None:
        """Keep ``compiled`` as what a file with these bytes gives; errors are ignored."""
        path = self._entry(data)
        if path is None or not self._trusted_dir(create=True):
            return
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with open(fd, "wb") as f:
                payload = marshal.dumps(_to_record(compiled))
                f.write(blake2b(payload, digest_size=_SUM_SIZE).digest() + payload)
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return
        self._evict(keep=path)

    # ---- internals

    def _entry(self, data: bytes) -> Path | None:
        if self.directory is None:
            return None
        if self._last is not None and self._last[0] is data:
            return self._last[1]
        if self._fingerprint is None:
            self._fingerprint = _code_fingerprint()
        digest = blake2b(self._fingerprint, digest_size=32)
        digest.update(data)
        path = self.directory / (digest.hexdigest() + _SUFFIX)
        self._last = (data, path)
        return path

    def _trusted_dir(self, create: bool) -> bool:
        assert self.directory is not None
        try:
            if create:
                self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            return _trusted(os.stat(self.directory))
        except OSError:
            return False

    def _evict(self, keep: Path) -> None:
        assert self.directory is not None
        try:
            entries = [
                (e.stat().st_mtime_ns, e.path)
                for e in os.scandir(self.directory)
                if e.name.endswith(_SUFFIX) and e.path != str(keep)
            ]
        except OSError:
            return
        entries.sort(reverse=True)
        for _, old in entries[KEEP - 1 :]:
            with contextlib.suppress(OSError):
                os.unlink(old)


def _trusted(st: os.stat_result) -> bool:
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _code_fingerprint() -> bytes:
    """What the meaning of a cached entry depends on besides the file's bytes: the
    content of every module of the agent (validation rules live in several
    packages) and of the YAML library that reads the file, the entry format and
    the Python version.

    By content, not by size and modification time: an edit that keeps both (a
    checkout, a copy with preserved times) must not serve an old table. The YAML
    library is found, not imported: a hit never loads it."""
    roots = [Path(__file__).resolve().parents[1]]  # the agent package
    spec = importlib.machinery.PathFinder.find_spec("yaml")
    if spec is not None and spec.submodule_search_locations:
        roots.extend(Path(p) for p in spec.submodule_search_locations)
    return _sources_digest(f"lvs-agent cache {FORMAT}\n{sys.version}\n", roots)


def _sources_digest(prefix: str, roots: list[Path]) -> bytes:
    """A digest of ``prefix`` and of the name and bytes of every module under ``roots``."""
    digest = blake2b(prefix.encode(), digest_size=32)
    for root in roots:
        for path in _module_files(root):
            data = path.read_bytes()
            digest.update(b"\0%s\0%d\0" % (str(path.relative_to(root)).encode(), len(data)))
            digest.update(data)
    return digest.digest() + b"\0"


def _module_files(root: Path) -> list[Path]:
    """The package's Python sources and extension modules, in a fixed order."""
    found: list[Path] = []
    folders = [root]
    while folders:
        folder = folders.pop()
        with os.scandir(folder) as it:
            for e in it:
                if e.name.endswith((".py", ".so")) and e.is_file():
                    found.append(Path(e.path))
                elif e.is_dir() and not e.name.startswith((".", "__")):
                    folders.append(Path(e.path))
    return sorted(found)


# ---- the record: tuples of plain values


def _to_record(c: CompiledConfig) -> tuple[Any, ...]:
    services = []
    for ds in c.table.values():
        s, k = ds.service, ds.service.key
        dests = tuple(
            (
                d.key.af, d.key.address, d.key.port, int(d.fwd), d.weight,
                d.u_threshold, d.l_threshold, int(d.tun_type), d.tun_port, d.tun_flags,
            )
            for d in ds.dests.values()
        )  # fmt: skip
        services.append(
            (
                k.af, k.protocol, k.address, k.port, k.fwmark,
                s.scheduler, s.flags, s.timeout, s.netmask, s.pe_name, ds.name, dests,
            )
        )  # fmt: skip
    i = c.ipvs
    sync = dataclasses.astuple(i.sync) if i.sync is not None else None
    settings = (
        i.timeout_tcp, i.timeout_tcp_fin, i.timeout_udp, i.drain_timeout, i.sysctls, sync
    )  # fmt: skip
    return (FORMAT, c.state_dir, settings, tuple(services))


_FORWARDING: Final = {int(m): m for m in Forwarding}
_TUNNEL_TYPES: Final = {int(m): m for m in TunnelType}


def _from_record(record: tuple[Any, ...]) -> CompiledConfig:
    form, state_dir, settings, services = record
    if form != FORMAT or not isinstance(state_dir, str):
        raise ValueError("not a cache entry of this format")
    tcp, tcp_fin, udp, drain_timeout, sysctls, sync = settings
    ipvs = IpvsSettings(
        tcp, tcp_fin, udp, drain_timeout, dict(sysctls),
        SyncSettings(*sync) if sync is not None else None,
    )  # fmt: skip
    forwarding, tunnel_types, tunnel = _FORWARDING, _TUNNEL_TYPES, Forwarding.TUNNEL
    table: DesiredTable = {}
    for af, proto, address, port, fwmark, sched, flags, timeout, mask, pe, name, ds in services:
        key = ServiceKey(af, proto, address, port, fwmark)
        dests = {}
        for d_af, d_addr, d_port, fwd, weight, upper, lower, tun, tun_port, tun_flags in ds:
            dkey = DestKey(d_af, d_addr, d_port)
            fwd = forwarding[fwd]
            dests[dkey] = Dest(
                dkey, fwd, weight, upper, lower,
                tunnel_types[tun] if fwd is tunnel else tun, tun_port, tun_flags,
            )  # fmt: skip
        service = Service(key, sched, flags, timeout, mask, pe)
        table[key] = DesiredService(service, dests, name)
    return CompiledConfig(state_dir, ipvs, table)
