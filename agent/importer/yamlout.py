"""A small YAML document model with comments, and its writer.

Owns how the importer's output is spelled: block style, every string double
quoted (JSON escapes are valid YAML), a trailing or leading comment on each entry.
Never decides what goes into the document.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

Scalar = str | int | float | bool | None


@dataclass
class Entry:
    key: str
    value: Value
    comment: str = ""  # one line at the end of the entry's line
    notes: list[str] = field(default_factory=list)  # comment lines before the entry


@dataclass
class Map:
    entries: list[Entry] = field(default_factory=list)

    def add(
        self, key: str, value: Value, comment: str = "", notes: list[str] | None = None
    ) -> None:
        self.entries.append(Entry(key, value, comment, list(notes or [])))

    def replace(self, key: str, value: Value, comment: str = "") -> None:
        """``add``, dropping an entry of the same key first (a later keyword wins)."""
        self.entries = [e for e in self.entries if e.key != key]
        self.add(key, value, comment)

    def get(self, key: str) -> Value | None:
        for entry in self.entries:
            if entry.key == key:
                return entry.value
        return None

    def has(self, key: str) -> bool:
        return any(e.key == key for e in self.entries)


@dataclass
class Element:
    value: Value
    comment: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class Seq:
    elements: list[Element] = field(default_factory=list)

    def add(self, value: Value, comment: str = "", notes: list[str] | None = None) -> None:
        self.elements.append(Element(value, comment, list(notes or [])))


Value = Scalar | Map | Seq


def scalar(value: Scalar) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)


def _tail(comment: str) -> str:
    return f"  # {comment}" if comment else ""


def dump(document: Map, header: list[str] | None = None) -> str:
    out = [f"# {h}" if h else "#" for h in header or []]
    _map(document, 0, out)
    return "\n".join(out) + "\n"


def _notes(notes: list[str], pad: str, out: list[str]) -> None:
    out.extend(f"{pad}# {n}" for n in notes)


def _map(m: Map, indent: int, out: list[str], first_prefix: str | None = None) -> None:
    pad = " " * indent
    for i, e in enumerate(m.entries):
        lead = first_prefix if (i == 0 and first_prefix is not None) else pad
        if e.notes:
            if i == 0 and first_prefix is not None:
                _notes(e.notes, first_prefix.replace("-", " ").rstrip() + " ", out)
            else:
                _notes(e.notes, pad, out)
        _value(f"{lead}{e.key}:", e.value, indent, e.comment, out)


def _value(prefix: str, value: Value, indent: int, comment: str, out: list[str]) -> None:
    if isinstance(value, Map):
        if not value.entries:
            out.append(f"{prefix} {{}}{_tail(comment)}")
            return
        out.append(prefix + _tail(comment))
        _map(value, indent + 2, out)
    elif isinstance(value, Seq):
        if not value.elements:
            out.append(f"{prefix} []{_tail(comment)}")
            return
        out.append(prefix + _tail(comment))
        _seq(value, indent + 2, out)
    else:
        out.append(f"{prefix} {scalar(value)}{_tail(comment)}")


def _seq(s: Seq, indent: int, out: list[str]) -> None:
    pad = " " * indent
    for e in s.elements:
        _notes(e.notes, pad, out)
        if isinstance(e.value, Map) and e.value.entries:
            if e.comment:
                out.append(f"{pad}# {e.comment}")
            _map(e.value, indent + 2, out, first_prefix=f"{pad}- ")
        elif isinstance(e.value, Seq) and e.value.elements:
            out.append(f"{pad}-" + _tail(e.comment))
            _seq(e.value, indent + 2, out)
        else:
            text = "{}" if isinstance(e.value, Map) else "[]" if isinstance(e.value, Seq) else None
            out.append(f"{pad}- {text or scalar(e.value)}{_tail(e.comment)}")  # type: ignore[arg-type]
