"""Reading the same configuration file again, re-validating only the entries that changed.

A reload of a 10,000-service file that changes one weight differs from the file read
before in one ``virtual_servers`` entry. ``Rereader`` keeps, from its last read, each
entry's text and the virtual server it validated to; the next read splits the new
file's ``virtual_servers`` list into entries by their text and takes the unchanged ones
from there. The rest of the file — the other sections and the entries that changed —
is read by the full reader (``agent.config.loader``) from a copy of the file in which
the unchanged entries are blank lines, so every line number stays what it is in the
file. The result is always the one ``load_config`` gives for the file:

- entries are split only in a plain block list (``virtual_servers:`` at the start of a
  line, its entries ``- `` at one indentation) of a file without anchors, aliases,
  directives, document markers or ``include``; anything else is read whole;
- an entry's text is its own: without anchors or aliases nothing in it refers to
  another part of the file, so the same text at the same indentation validates to the
  same virtual server (moved with its lines when the entry moved);
- the read of the rest must give exactly one virtual server for each changed entry, on
  that entry's first line, or the split is not trusted and the file is read whole;
- any problem, or two entries naming the same virtual server, and the file is read
  whole, so that the problems are reported as ``load_config`` words them.

Owns no state but its cache (the last file's entries); never touches the kernel.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from agent.config.loader import decode_config, parse_config
from agent.config.reader import ConfigError
from agent.gcpause import paused_gc

if TYPE_CHECKING:
    from agent.config.model import Config, RealServer, VirtualServer

_KEY = re.compile(r"^virtual_servers:[ \t]*(?:#.*)?$", re.M)
# What an entry's text can depend on outside itself, and what ends or changes the
# document: anchors and aliases, tags and directives, document markers, an include.
_UNSAFE_CHARS = "&*!\\"
_UNSAFE_LINES = ("\n%", "\n---", "\n...", "\ninclude")
_FIRST = re.compile(r"^( *)- \S", re.M)
_TOP = re.compile(r"\n(?!- )[^ \t\n#]")
_CONTENT = re.compile(r"^[ \t]*[^ \t\n#]", re.M)


class Rereader:
    """``load_config`` for a file read again and again (the daemon's reloads)."""

    def __init__(self) -> None:
        # entry text -> (its first line when read, the virtual server it gave)
        self._cache: dict[str, tuple[int, VirtualServer]] = {}
        self.reused = 0  # entries taken from the cache by the last read (for tests, logs)

    def load(self, path: str) -> Config:
        """Read and validate ``path``; raises ConfigError or OSError as ``load_config``."""
        text = decode_config(Path(path).read_bytes(), path)
        with paused_gc():  # tens of thousands of objects that live on: see agent.gcpause
            split = _split(text)
            self.reused = 0
            if split is not None and self._cache:
                config = self._incremental(text, path, *split)
                if config is not None:
                    return config
            config = parse_config(text, path)
            self._remember(split, config.virtual_servers)
            return config

    def _incremental(
        self, text: str, path: str, key_line: int, entries: list[_Entry]
    ) -> Config | None:
        cache = self._cache
        found = [cache.get(e.text) for e in entries]
        changed = [e for e, hit in zip(entries, found, strict=True) if hit is None]
        if len(changed) * 4 > len(entries):
            return None  # most of the list changed: one whole read is cheaper
        # The file with each unchanged entry replaced by as many empty lines.
        pieces: list[str] = []
        at = 0
        for entry, hit in zip(entries, found, strict=True):
            if hit is not None:
                pieces.append(text[at : entry.start])
                pieces.append("\n" * entry.text.count("\n"))
                at = entry.end
        pieces.append(text[at:])
        kept = "".join(pieces)
        if not changed:
            # An empty list, on the key's own line (the lines after it are blank).
            kept_lines = kept.split("\n", key_line)
            kept_lines[key_line - 1] = "virtual_servers: []"
            kept = "\n".join(kept_lines)
        try:
            rest = parse_config(kept, path)
        except ConfigError:
            return None  # the whole file's read words the problems
        fresh = rest.virtual_servers
        if len(fresh) != len(changed) or any(
            vs.line != e.first for vs, e in zip(fresh, changed, strict=True)
        ):
            return None
        servers: list[VirtualServer] = []
        made = iter(fresh)
        names: set[str] = set()
        identities: set[tuple[object, ...]] = set()
        for entry, hit in zip(entries, found, strict=True):
            if hit is None:
                vs = next(made)
            else:
                first, vs = hit
                if first != entry.first:
                    vs = _moved(vs, entry.first - first)
            identity = _identity(vs)
            if vs.name in names or identity in identities:
                return None  # a duplicate: the whole file's read words it
            names.add(vs.name)
            identities.add(identity)
            servers.append(vs)
        self.reused = len(entries) - len(changed)
        self._cache = {e.text: (e.first, vs) for e, vs in zip(entries, servers, strict=True)}
        return replace(rest, virtual_servers=tuple(servers))

    def _remember(
        self, split: tuple[int, list[_Entry]] | None, servers: tuple[VirtualServer, ...]
    ) -> None:
        self._cache = {}
        if split is None:
            return
        entries = split[1]
        if len(entries) == len(servers) and all(
            vs.line == e.first for vs, e in zip(servers, entries, strict=True)
        ):
            self._cache = {e.text: (e.first, vs) for e, vs in zip(entries, servers, strict=True)}


class _Entry:
    __slots__ = ("end", "first", "start", "text")

    def __init__(self, text: str, first: int, start: int, end: int) -> None:
        self.text = text  # the entry's lines (with the blank and comment lines after it)
        self.first = first  # its first line in the file (1-based)
        self.start, self.end = start, end  # where it is in the file's text


def _split(text: str) -> tuple[int, list[_Entry]] | None:
    """(the line of ``virtual_servers:``, the list's entries), or None when the file is
    not the plain shape whose entries can be read on their own."""
    if any(c in text for c in _UNSAFE_CHARS):
        return None
    lined = "\n" + text  # every line, the first too, starts after a newline
    if any(s in lined for s in _UNSAFE_LINES):
        return None
    found = lined.find("\nvirtual_servers:")
    if found < 0 or lined.find("\nvirtual_servers:", found + 1) >= 0:
        return None
    key = _KEY.match(lined, found + 1)
    if key is None:
        return None
    first = _FIRST.search(lined, key.end())
    if first is None:
        return None
    indent = first.group(1)
    # Nothing but blank and comment lines between the key and the first entry, and
    # no quoted text open before the key (it would hold the key and the list).
    before = lined[:found]
    if _CONTENT.search(lined, key.end(), first.start()) or any(before.count(q) % 2 for q in "\"'"):
        return None
    # The list ends at the next top-level key; every line before it is an entry's
    # first line, deeper, blank or a comment (anything else: not the plain shape).
    stop = _TOP.search(lined, first.end())
    end = len(lined) if stop is None else stop.start() + 1
    n = len(indent)
    if re.compile(rf"\n(?!{indent}- | {{{n + 1}}}|[ \t]*(?:#|\n|\Z))").search(
        lined, first.end(), end - 1
    ):
        return None
    marker = "\n" + indent + "- "
    starts = [first.start()]
    at = lined.find(marker, first.end(), end)
    while at >= 0:
        starts.append(at + 1)
        at = lined.find(marker, at + 1, end)
    starts.append(end)
    line = lined.count("\n", 0, first.start())  # lined has one newline more than text
    entries: list[_Entry] = []
    for a, b in itertools.pairwise(starts):
        chunk = lined[a:b]
        entries.append(_Entry(chunk, line, a - 1, b - 1))
        line += chunk.count("\n")
    return lined.count("\n", 0, found + 1), entries


def _identity(vs: VirtualServer) -> tuple[object, ...]:
    return ("fwmark", vs.family, vs.fwmark) if vs.fwmark else (vs.protocol, vs.address, vs.port)


def _moved(vs: VirtualServer, by: int) -> VirtualServer:
    servers: tuple[RealServer, ...] = tuple(
        replace(rs, line=rs.line + by) for rs in vs.real_servers
    )
    return replace(vs, line=vs.line + by, real_servers=servers)
