"""A line-at-a-time reader for the plain subset of YAML that configuration files use.

Block mappings and sequences indented with spaces, ``- {address: 10.0.1.21, port: 80}``
flow collections on one line, plain scalars and quoted scalars without escapes, and
comments: a generated 10,000-service file is nothing else. For that subset this
reader builds the same line-numbered node tree as the libyaml composer in
``agent.config.reader`` — same values, plain or quoted, same lines — in a fraction
of the time, because it matches one regular expression per line instead of
creating libyaml's event objects one by one (under software emulation the
difference is most of ``lvs-agent apply``'s start-up).

Anything outside the subset — anchors, tags, block scalars, multi-line scalars,
escapes, tabs, a null written as an empty value, or any error — makes it decline
(return ``None``) and the caller reads the file with libyaml instead, so this
reader never decides what a document means where the two could differ.
tests/unit/config/test_subset.py holds it to the libyaml composer on every
configuration in the tests and on generated and mutated documents.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from agent.config.reader import STR_TAG, MappingNode, Node, ScalarNode, SequenceNode

Streamed = Callable[[Node, int], None]


class Declined(Exception):
    """The document is not in the subset: read it with libyaml."""


# A content line: indentation, an optional "- ", an optional "key:" (followed by
# spaces or the end of the line), and the rest.
_LINE: Final = re.compile(r"( *)(- +)?(?:([A-Za-z_][A-Za-z0-9_-]*):(?: +|$))?(.*)$")
# Plain scalars: no YAML indicator at the start (a "-" only before a digit, a ":"
# only before what continues an IPv6 address), no "#", no flow indicators.
_PLAIN_BLOCK: Final = re.compile(
    r"(?:[A-Za-z0-9_./~]|-(?=[0-9])|:(?=[0-9A-Fa-f:]))[A-Za-z0-9_./:~+@ -]*"
)
_PLAIN_FLOW: Final = re.compile(r"(?:[A-Za-z0-9_./~]|-(?=[0-9]))[A-Za-z0-9_./:~+@ -]*")
_DOUBLE: Final = re.compile(r'"([^"\\\x00-\x1f\x7f]*)"(?: +#.*| *)$')
_SINGLE: Final = re.compile(r"'([^'\x00-\x1f\x7f]*)'(?: +#.*| *)$")
_FLOW_QUOTED: Final = re.compile(
    r"\"([^\"\\\x00-\x1f\x7f,\[\]{}]*)\"|'([^'\x00-\x1f\x7f,\[\]{}]*)'"
)
_FLOW_PAIR: Final = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*): +(.*)$")
# The usual flow mapping, {address: 10.0.1.21, port: 8080}: plain values without
# spaces, where a ":" is always followed by more of the value. Read in one pass.
_KEY = r"[A-Za-z_][A-Za-z0-9_-]*"
_WORD = r"(?:[A-Za-z0-9_./~]|-(?=[0-9]))(?:[A-Za-z0-9_./~+@-]|:(?=[A-Za-z0-9_./~+@:-]))*"
_SIMPLE_FLOW_MAP: Final = re.compile(rf" *{_KEY}: +{_WORD} *(?:, *{_KEY}: +{_WORD} *)*")
_SIMPLE_PAIR: Final = re.compile(rf"({_KEY}): +({_WORD})")
# What libyaml refuses or reads as a line break, and the byte-order mark.
_CONTROL: Final = re.compile(
    r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufeff\ufffe\uffff\u2028\u2029\ud800-\udfff]"
)


def compose_subset(text: str, stream: dict[str, Streamed] | None = None) -> Node | None:
    """The document's node tree, or None when it is not in the subset.

    ``stream`` as in ``agent.config.reader.compose``: entries of those top-level
    lists are handed over one by one and not kept. When this returns None some
    entries may already have been handed over: the caller starts again.
    """
    if _CONTROL.search(text):
        return None
    try:
        return _Reader(text, stream or {}).document()
    except Declined:
        return None


class _Reader:
    __slots__ = ("i", "lines", "stream")

    def __init__(self, text: str, stream: dict[str, Streamed]) -> None:
        # (line number, indent, dash, key, rest) for each line with content.
        self.lines: list[tuple[int, int, int, str | None, str]] = []
        self.stream = stream
        self.i = 0
        match = _LINE.match
        append = self.lines.append
        first = True
        for number, raw in enumerate(text.split("\n"), 1):
            if raw.endswith("\r"):
                raw = raw[:-1]
            stripped = raw.lstrip(" ")
            if not stripped or stripped[0] == "#":
                continue
            if "\t" in raw or "\r" in raw:
                raise Declined
            if first:
                first = False
                if raw == "---":
                    continue
            m = match(raw)
            assert m is not None  # every line matches: all parts are optional
            indent, dash, key, rest = m.groups()
            if rest.startswith("#"):
                rest = ""
            append((number, len(indent), len(dash) if dash else 0, key, rest))

    def document(self) -> Node | None:
        if not self.lines:
            raise Declined  # empty: libyaml's reading (no document) is the reference
        _, indent, dash, key, _ = self.lines[0]
        if indent != 0 or dash or key is None:
            raise Declined
        root = self.mapping(0, top=True)
        if self.i != len(self.lines):
            raise Declined
        return root

    def mapping(self, indent: int, top: bool = False) -> MappingNode:
        lines = self.lines
        node = MappingNode(lines[self.i][0])
        append = node.value.append
        n = len(lines)
        while self.i < n:
            number, ind, dash, key, rest = lines[self.i]
            if ind < indent:
                break
            if ind > indent or dash or key is None:
                raise Declined
            key_node = ScalarNode(number, key, None)
            self.i += 1
            if rest:
                value = self.inline(number, rest)
                each = self.stream.get(key) if top else None
                if each is not None and isinstance(value, SequenceNode):
                    for index, entry in enumerate(value.value):
                        each(entry, index)
                    value.value = []
                append((key_node, value))
                continue
            # The value is on the lines below: deeper, or a "- " list at this indent.
            if self.i == n:
                raise Declined  # null value
            _, nind, ndash, _, _ = lines[self.i]
            each = self.stream.get(key) if top else None
            if nind > indent:
                if ndash:
                    append((key_node, self.sequence(nind, each)))
                else:
                    append((key_node, self.mapping(nind)))
            elif nind == indent and ndash:
                append((key_node, self.sequence(nind, each)))
            else:
                raise Declined  # null value
        return node

    def sequence(self, indent: int, each: Streamed | None = None) -> SequenceNode:
        lines = self.lines
        node = SequenceNode(lines[self.i][0])
        n = len(lines)
        index = 0
        while self.i < n:
            number, ind, dash, key, rest = lines[self.i]
            if ind < indent or (ind == indent and not dash):
                break
            if ind > indent or not dash:
                raise Declined
            item: Node
            if key is not None:
                # "- key: value": a mapping whose keys line up with this first one.
                lines[self.i] = (number, ind + dash, 0, key, rest)
                item = self.mapping(ind + dash)
            elif rest:
                self.i += 1
                item = self.inline(number, rest)
                if self.i < n and lines[self.i][1] > indent:
                    raise Declined  # a continuation line, or a nested block after a scalar
            else:
                raise Declined  # "-" alone, or "- - x"
            if each is not None:
                each(item, index)
            else:
                node.value.append(item)
            index += 1
        return node

    def inline(self, number: int, rest: str) -> Node:
        """A value on the line it starts: a scalar or a one-line flow collection."""
        first = rest[0]
        if first == '"':
            m = _DOUBLE.match(rest)
            if m is None:
                raise Declined
            return ScalarNode(number, m.group(1), STR_TAG)
        if first == "'":
            m = _SINGLE.match(rest)
            if m is None:
                raise Declined
            return ScalarNode(number, m.group(1), STR_TAG)
        cut = rest.find(" #")
        text = (rest[:cut] if cut >= 0 else rest).rstrip(" ")
        if first == "{":
            if not text.endswith("}"):
                raise Declined
            return self.flow_mapping(number, text[1:-1])
        if first == "[":
            if not text.endswith("]"):
                raise Declined
            return self.flow_sequence(number, text[1:-1])
        if _PLAIN_BLOCK.fullmatch(text) is None or ": " in text or text.endswith(":"):
            raise Declined
        return ScalarNode(number, text, None)

    def flow_mapping(self, number: int, inner: str) -> MappingNode:
        node = MappingNode(number)
        if not inner.strip(" "):
            return node
        append = node.value.append
        if _SIMPLE_FLOW_MAP.fullmatch(inner) is not None:
            for key, value in _SIMPLE_PAIR.findall(inner):
                append((ScalarNode(number, key, None), ScalarNode(number, value, None)))
            return node
        for part in inner.split(","):
            m = _FLOW_PAIR.match(part.strip(" "))
            if m is None:
                raise Declined
            append((ScalarNode(number, m.group(1), None), _flow_scalar(number, m.group(2))))
        return node

    def flow_sequence(self, number: int, inner: str) -> SequenceNode:
        node = SequenceNode(number)
        if not inner.strip(" "):
            return node
        node.value = [_flow_scalar(number, part.strip(" ")) for part in inner.split(",")]
        return node


def _flow_scalar(number: int, text: str) -> ScalarNode:
    if not text:
        raise Declined
    if text[0] in "\"'":
        m = _FLOW_QUOTED.fullmatch(text)
        if m is None:
            raise Declined
        value = m.group(1) if m.group(1) is not None else m.group(2)
        return ScalarNode(number, value, STR_TAG)
    if (
        _PLAIN_FLOW.fullmatch(text) is None
        or ": " in text
        or text.endswith(":")
        or " #" in text
        or "{" in text
    ):
        raise Declined
    return ScalarNode(number, text, None)
