"""libyaml's event stream composed into the reader's line-numbered nodes.

How ``agent.config.reader.compose`` reads every configuration file. It reads a
document as ``yaml.safe_load`` does (tests/unit/config/test_fast_readers.py
holds it to that), in about a third of the time PyYAML's own composer takes
to build the same tree (bench/speed_layers).
"""

from __future__ import annotations

from typing import Any

import yaml

from agent.config.reader import (
    MappingNode,
    Node,
    Problem,
    Problems,
    ScalarNode,
    SequenceNode,
    Streamed,
)

_STR = "tag:yaml.org,2002:str"


def compose(
    text: str, problems: Problems, stream: dict[str, Streamed] | None = None
) -> Node | None:
    """Parse YAML into line-numbered nodes; syntax errors become problems.

    Built on libyaml's event stream rather than PyYAML's composer: that one
    resolves the type of every scalar (keys included) in Python and keeps two
    Mark objects per node, which made a 10,000-service file take ~9 s to read.
    Here types are resolved only for the values a reader asks about. Anchors,
    aliases and merge keys (``<<: *defaults``) work as in YAML.

    ``stream``: for a top-level key whose value is a list, a function called with
    each entry (and its index) as soon as it is composed; the entries are then
    not kept in the tree (the list node stays, empty), so their nodes can go.
    """
    try:
        return _compose(text, stream or {})
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problems.found.append(
            Problem(problems.file, line, "", f"YAML syntax error: {exc.problem or exc}")
        )
    except yaml.YAMLError as exc:
        problems.found.append(Problem(problems.file, 1, "", f"YAML error: {exc}"))
    return None


def _compose(text: str, stream: dict[str, Streamed]) -> Node | None:
    loader = getattr(yaml, "CBaseLoader", yaml.BaseLoader)(text)
    try:
        return _Composer(loader.get_event, stream).document()
    finally:
        loader.dispose()


_ev = yaml.events


class _Composer:
    """Recursive descent over libyaml's events into line-numbered nodes."""

    def __init__(self, get_event: Any, stream: dict[str, Streamed]) -> None:
        self.get = get_event
        self.anchors: dict[str, Node] = {}
        self.stream = stream

    def document(self) -> Node | None:
        get = self.get
        get()  # StreamStart
        event = get()
        if type(event) is _ev.StreamEndEvent:
            return None
        root = self.node(get(), top=True)  # after DocumentStart
        get()  # DocumentEnd
        event = get()
        if type(event) is not _ev.StreamEndEvent:
            raise yaml.composer.ComposerError(
                None, None, "expected a single document, found another one", event.start_mark
            )
        return root

    def node(self, event: Any, top: bool = False) -> Node:
        cls = type(event)
        node: Node
        if cls is _ev.ScalarEvent:
            tag = event.tag
            if tag is None or tag == "!":
                # libyaml marks plain style with '', the pure-Python parser with None
                tag = None if (event.implicit[0] and not event.style) else _STR
            node = ScalarNode(event.start_mark.line + 1, event.value, tag)
        elif cls is _ev.MappingStartEvent:
            mapping = MappingNode(event.start_mark.line + 1)
            append = mapping.value.append
            get = self.get
            merge = False
            while True:
                key_event = get()
                if type(key_event) is _ev.MappingEndEvent:
                    break
                key = self.node(key_event)
                value_event = get()
                streamed = (
                    self.stream.get(key.value) if top and isinstance(key, ScalarNode) else None
                )
                if streamed is not None and type(value_event) is _ev.SequenceStartEvent:
                    append((key, self.streamed_sequence(value_event, streamed)))
                else:
                    append((key, self.node(value_event)))
                if not merge and isinstance(key, ScalarNode) and key.value == "<<":
                    merge = key._tag is None
            if merge:
                _merge_keys(mapping)
            node = mapping
        elif cls is _ev.SequenceStartEvent:
            sequence = SequenceNode(event.start_mark.line + 1)
            append_item = sequence.value.append
            get = self.get
            while True:
                item_event = get()
                if type(item_event) is _ev.SequenceEndEvent:
                    break
                append_item(self.node(item_event))
            node = sequence
        elif cls is _ev.AliasEvent:
            found = self.anchors.get(event.anchor)
            if found is None:
                raise yaml.composer.ComposerError(
                    None, None, f"found undefined alias {event.anchor!r}", event.start_mark
                )
            return found
        else:
            raise yaml.composer.ComposerError(
                None, None, f"unexpected {cls.__name__}", event.start_mark
            )
        if event.anchor is not None:
            self.anchor(event, node)
        return node

    def anchor(self, event: Any, node: Node) -> None:
        """Name ``node``; a name given twice is refused, as PyYAML's composer does."""
        if event.anchor in self.anchors:
            raise yaml.composer.ComposerError(
                None, None, f"found duplicate anchor {event.anchor!r}", event.start_mark
            )
        self.anchors[event.anchor] = node

    def streamed_sequence(self, event: Any, each: Streamed) -> SequenceNode:
        sequence = SequenceNode(event.start_mark.line + 1)
        get = self.get
        index = 0
        while True:
            item_event = get()
            if type(item_event) is _ev.SequenceEndEvent:
                break
            each(self.node(item_event), index)
            index += 1
        if event.anchor is not None:
            self.anchor(event, sequence)
        return sequence


def _merge_keys(mapping: MappingNode) -> None:
    """YAML merge keys: ``<<: *a`` or ``<<: [*a, *b]`` add the keys not already set."""
    merged: list[tuple[Node, Node]] = []
    own: list[tuple[Node, Node]] = []
    for key, value in mapping.value:
        if isinstance(key, ScalarNode) and key.value == "<<" and key._tag is None:
            sources = value.value if isinstance(value, SequenceNode) else [value]
            for source in sources:
                if isinstance(source, MappingNode):
                    merged.extend(source.value)
                else:
                    own.append((key, value))  # not mergeable: left for the reader to report
                    break
        else:
            own.append((key, value))
    # Always rebuilt: ``<<: []`` merges nothing, and its key goes too (as in PyYAML).
    names = {k.value for k, _ in own if isinstance(k, ScalarNode)}
    extra: list[tuple[Node, Node]] = []
    for key, value in merged:
        if isinstance(key, ScalarNode) and key.value not in names:
            names.add(key.value)
            extra.append((key, value))
    mapping.value = own + extra
