"""``include:``: the virtual servers of one configuration spread over several files.

Owns expanding the main file's ``include`` patterns into files, reading each
included file, and the per-file cache that lets a reload re-read only the files
whose bytes changed. The rules:

- ``include`` is a list of glob patterns at the top level of the main file only
  (an included file cannot include). A relative pattern is resolved against the
  main file's directory. Each pattern's matches are read in sorted order,
  patterns in the order written; a file matched twice is read once. A pattern
  with glob characters that matches nothing is allowed (a ``conf.d`` directory
  may be empty) and reported as a warning by ``check-config``; a literal path
  that does not exist is an error, as is a pattern that matches the main file.
- An included file holds ``virtual_servers`` and nothing else; every other key
  is refused with file:line:key. VRRP instances, sync groups and the lock stay
  in the main file: they are few, and they are checked against one another.
- Problems in an included file name that file and its line. Duplicates across
  files (same name, same kernel service) are errors naming both places
  (``agent.config.loader`` checks them over the whole set on every load).
- ``Parts`` keeps each included file's bytes and what reading them gave (its
  virtual servers, or its problems) in this process: the same bytes are never
  parsed twice. Only the files of the latest load are kept.

Never touches the kernel, and never reads a file the patterns do not name.
"""

from __future__ import annotations

import contextlib
import glob
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.config.reader import Item, Problem, Problems, compose

if TYPE_CHECKING:
    from agent.config.model import VirtualServer

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class Included:
    """One ``include`` pattern as written, its line, and the files it matched."""

    pattern: str
    line: int
    files: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Part:
    """What one included file's bytes gave: its virtual servers (each with its
    index in the file's list) or its problems."""

    path: str
    servers: tuple[VirtualServer, ...]
    indexes: tuple[int, ...]
    problems: tuple[Problem, ...]


def expand(item: Item, main: str) -> tuple[list[Included], list[str]]:
    """The patterns under ``include`` (recorded as problems when malformed) and the
    files to read, in order, each once."""
    patterns = item.as_list()
    if patterns is None:
        return [], []
    base = os.path.dirname(os.path.abspath(main))
    main_real = os.path.realpath(main)
    result: list[Included] = []
    files: list[str] = []
    seen: set[str] = set()
    for entry in patterns:
        pattern = entry.as_str()
        if pattern is None:
            continue
        if not pattern:
            entry.error("an empty pattern names no file")
            continue
        full = os.path.normpath(os.path.join(base, pattern))
        if _GLOB_CHARS.isdisjoint(pattern):
            if not os.path.isfile(full):
                entry.error(f"{full}: no such file")
                continue
            matched = [full]
        else:
            matched = sorted(p for p in glob.glob(full) if os.path.isfile(p))
        own = [p for p in matched if os.path.realpath(p) == main_real]
        if own:
            entry.error(f"{pattern!r} matches the main file itself ({own[0]})")
            matched = [p for p in matched if p not in own]
        result.append(Included(pattern, entry.line, tuple(matched)))
        for path in matched:
            if path not in seen:
                seen.add(path)
                files.append(path)
    return result, files


class Parts:
    """Included files read before, by path: (bytes, Part). Thread-safe."""

    def __init__(self) -> None:
        self._kept: dict[str, tuple[bytes, Part]] = {}
        self._lock = threading.Lock()
        self.parsed = 0  # files actually parsed (not found here): for tests and benchmarks

    def read(self, paths: list[str], given: Mapping[str, bytes] | None = None) -> list[Part]:
        """Each file's Part, parsing only files whose bytes differ from the last read.
        ``given``: bytes already read for some paths (read the rest from disk).
        Raises OSError for a file that cannot be read."""
        parts: list[Part] = []
        with self._lock:
            kept: dict[str, tuple[bytes, Part]] = {}
            for path in paths:
                data = given[path] if given is not None and path in given else _read(path)
                old = self._kept.get(path)
                if old is not None and old[0] == data:
                    part = old[1]
                else:
                    part = parse_part(data, path)
                    self.parsed += 1
                kept[path] = (data, part)
                parts.append(part)
            self._kept = kept
        return parts

    def clear(self) -> None:
        with self._lock:
            self._kept = {}


#: the process's cache (the daemon's configuration worker keeps it between reloads)
PARTS = Parts()


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def parse_part(data: bytes, path: str) -> Part:
    """Read one included file: ``virtual_servers`` only."""
    from agent.config.loader import _VirtualServers, decode_config
    from agent.config.reader import ConfigError

    problems = Problems(path)
    try:
        text = decode_config(data, path)
    except ConfigError as exc:
        return Part(path, (), (), tuple(exc.problems))
    servers = _VirtualServers(problems)
    root_node = compose(text, problems, stream={"virtual_servers": servers.add})
    if root_node is not None:
        root = Item(root_node, "", problems).as_section()
        if root is not None:
            listed = root.item("virtual_servers")
            if listed is not None:
                listed.as_list()  # checks the shape; the entries were read as composed
            for key, why in _NOT_HERE.items():
                if root.item(key) is not None:
                    root.error(why, key)
            root.finish()
    # an empty file (a conf.d placeholder) adds nothing
    if problems.found:
        return Part(path, (), (), tuple(problems.found))
    return Part(path, tuple(servers.result), tuple(servers.indexes), ())


_NOT_HERE = {
    "include": "an included file cannot include others: list every pattern in the main file",
    "vrrp_instances": "VRRP instances belong in the main file (included files hold "
    "virtual_servers only)",
    "vrrp_sync_groups": "sync groups belong in the main file (included files hold "
    "virtual_servers only)",
}


def included_files(path: str, data: bytes) -> list[str] | None:
    """The files the main file ``data`` (read from ``path``) includes, in order; []
    without ``include``; None when that cannot be told (the main file or a pattern
    is invalid: the caller reads the usual way and reports it)."""
    if b"include" not in data:
        return []
    from agent.config.loader import decode_config
    from agent.config.reader import ConfigError

    problems = Problems(path)
    try:
        text = decode_config(data, path)
    except ConfigError:
        return None
    root_node = compose(text, problems, stream={"virtual_servers": lambda node, index: None})
    if root_node is None:
        return None
    root = Item(root_node, "", problems).as_section()
    if root is None:
        return None
    item = root.item("include")
    if item is None:
        return []
    _, files = expand(item, path)
    return None if problems.found else files


def included_bytes(path: str, data: bytes) -> dict[str, bytes] | None:
    """``included_files`` with their bytes, read now (None if one cannot be read)."""
    files = included_files(path, data)
    if files is None:
        return None
    try:
        return {f: _read(f) for f in files}
    except OSError:
        return None


def total_size(path: str, limit: int | None = None) -> int:
    """Bytes of the main file and of the files it includes (OSError: the main file
    cannot be read). ``limit``: a main file of this size or more is not looked into
    (the caller only asks whether the whole is smaller)."""
    size = os.stat(path).st_size
    if limit is not None and size >= limit:
        return size
    files = included_files(path, _read(path)) or []
    total = size
    for name in files:
        with contextlib.suppress(OSError):  # the load itself reports it
            total += os.stat(name).st_size
    return total


def combine(
    source: str, servers: list[VirtualServer], parts: list[Part], found: list[Problem]
) -> list[VirtualServer]:
    """The main file's virtual servers followed by each part's, with duplicates
    across files (same name, same kernel service) recorded in ``found``, naming
    both places."""
    from agent.config.loader import _identity, describe_service

    names: dict[str, tuple[str, int]] = {vs.name: (source, vs.line) for vs in servers}
    keys: dict[tuple[object, ...], tuple[str, int]] = {
        _identity(vs): (source, vs.line) for vs in servers
    }
    result = list(servers)
    for part in parts:
        if part.problems:
            found.extend(part.problems)
            continue
        here = part.path
        for vs, index in zip(part.servers, part.indexes, strict=True):
            place = (here, vs.line)
            first = names.setdefault(vs.name, place)
            if first is not place:
                found.append(
                    Problem(
                        here,
                        vs.line,
                        f"virtual_servers[{index}].name",
                        f"duplicate virtual server name {vs.name!r} "
                        f"(first at {first[0]}:{first[1]})",
                    )
                )
            key = _identity(vs)
            first = keys.setdefault(key, place)
            if first is not place:
                found.append(
                    Problem(
                        here,
                        vs.line,
                        f"virtual_servers[{index}]",
                        f"duplicate virtual server: {describe_service(vs)} is already "
                        f"defined at {first[0]}:{first[1]}",
                    )
                )
            result.append(vs)
    return result


def read_included(
    item: Item,
    source: str,
    servers: list[VirtualServer],
    given: Mapping[str, bytes] | None = None,
    parts: Parts | None = None,
) -> tuple[tuple[Included, ...], list[VirtualServer]]:
    """Expand ``include`` and read its files (problems go to ``item.problems``):
    the patterns and the whole list of virtual servers."""
    includes, files = expand(item, source)
    found = item.problems.found
    try:
        read = (parts or PARTS).read(files, given)
    except OSError as exc:
        item.error(f"cannot read {exc.filename}: {exc.strerror}")
        return tuple(includes), servers
    return tuple(includes), combine(source, servers, read, found)
