"""Read a YAML document into typed values, collecting every problem with file and line.

This module owns how configuration errors are found and worded:
``config.yaml:14: virtual_servers[1].real_servers[0].port: must be 1..65535``.
It never stops at the first problem: a reader records what is wrong, returns
``None`` for that value and carries on, so one run of ``check-config`` lists
everything. Callers build their section's objects only when the reader reports
no problems, so an invalid file never produces a half-made configuration.

Unknown keys are found without a separate list of allowed keys: a mapping
remembers which keys its section read, and ``finish()`` reports the rest with
a "did you mean" hint drawn from those.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from agent.config.duration import DurationError, parse_duration

T = TypeVar("T")

_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_STR = "tag:yaml.org,2002:str"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
INT_TAG = _INT
BOOL_TAG = _BOOL
STR_TAG = _STR


@functools.cache
def _yaml_rules() -> tuple[dict[str | None, list[tuple[str, Any]]], Any]:
    """PyYAML's implicit type resolvers and safe constructor, loaded on first use."""
    import yaml

    return yaml.resolver.Resolver.yaml_implicit_resolvers, yaml.constructor.SafeConstructor()


# Plain words YAML 1.1 reads as null or a boolean (yaml.resolver's patterns).
_NULL_WORDS = frozenset(("", "~", "null", "Null", "NULL"))
_TRUE_WORDS = frozenset(("yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"))
_FALSE_WORDS = frozenset(("no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"))
_NULL_OR_BOOL_WORDS = _NULL_WORDS | _TRUE_WORDS | _FALSE_WORDS
# First characters for which PyYAML has an implicit resolver (yaml.resolver).
_RESOLVED_FIRST = frozenset("!&*+-.0123456789<=FNOTYfnoty~")
_UNIT_LAST = frozenset("abcdefghijklmnopqrstuvwxy")


class Node:
    """A node of the document: its line (1-based) and what it holds."""

    __slots__ = ("line",)

    def __init__(self, line: int) -> None:
        self.line = line


class ScalarNode(Node):
    """A scalar. Plain scalars get their YAML 1.1 type (int, bool, ...) on demand."""

    __slots__ = ("_tag", "value")

    def __init__(self, line: int, value: str, tag: str | None) -> None:
        self.line = line
        self.value = value
        self._tag = tag  # None: plain, not resolved yet

    @property
    def tag(self) -> str:
        if self._tag is None:
            v = self.value
            first = v[:1]
            # PyYAML's implicit resolvers are keyed by the first character: most
            # values (names, addresses, durations, words) need none of them.
            if v in _TRUE_WORDS or v in _FALSE_WORDS:
                self._tag = _BOOL
                return _BOOL
            if v in _NULL_WORDS:
                self._tag = _NULL
                return _NULL
            if first not in _RESOLVED_FIRST or first.isalpha():
                self._tag = _STR  # letters start only the words above
                return _STR
            if plain_decimal(v):
                self._tag = _INT
                return _INT
            if first.isdigit() and ((v[-1] in _UNIT_LAST and v[:2] != "0x") or v.count(".") > 1):
                self._tag = _STR  # 30s, 100ms, 10.0.0.1: no number or timestamp looks so
                return _STR
            resolvers = _yaml_rules()[0]
            for tag, regexp in resolvers.get(v[:1] if v else "", []) + resolvers.get(None, []):
                if regexp.match(v):
                    self._tag = tag
                    return tag
            self._tag = _STR
        return self._tag


class SequenceNode(Node):
    __slots__ = ("value",)

    def __init__(self, line: int) -> None:
        self.line = line
        self.value: list[Node] = []


class MappingNode(Node):
    __slots__ = ("value",)

    def __init__(self, line: int) -> None:
        self.line = line
        self.value: list[tuple[Node, Node]] = []


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.file}:{self.line}: {where}{self.message}"


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` lists every finding in file order
    (files in the order they were first named: the main file, then what it includes)."""

    def __init__(self, problems: list[Problem]) -> None:
        files = {f: i for i, f in enumerate(dict.fromkeys(p.file for p in problems))}
        self.problems = sorted(problems, key=lambda p: (files[p.file], p.line, p.path))
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(slots=True)
class Problems:
    file: str
    found: list[Problem] = field(default_factory=list)

    def add(self, node: Node | None, path: str, message: str) -> None:
        self.found.append(Problem(self.file, node.line if node is not None else 1, path, message))

    def raise_if_any(self) -> None:
        if self.found:
            raise ConfigError(self.found)


Streamed = Callable[[Node, int], None]


def compose(
    text: str, problems: Problems, stream: dict[str, Streamed] | None = None
) -> Node | None:
    """Parse YAML into line-numbered nodes with libyaml; syntax errors become problems.

    See ``agent.config.composer``, imported on first use: PyYAML is loaded only
    when a file is read.
    """
    from agent.config.composer import compose as libyaml_compose

    return libyaml_compose(text, problems, stream)


_TYPE_NAMES = {
    _INT: "an integer",
    _FLOAT: "a number",
    _STR: "a string",
    _BOOL: "true or false",
    _NULL: "null",
}


def describe(node: Node) -> str:
    if isinstance(node, SequenceNode):
        return "a list"
    if isinstance(node, MappingNode):
        return "a mapping"
    assert isinstance(node, ScalarNode)
    name = _TYPE_NAMES.get(node.tag, "a value")
    return f"{name} ({node.value!r})" if node.tag != _NULL else "null"


def plain_decimal(text: str) -> bool:
    """ASCII digits without a leading zero (YAML 1.1 reads 010 as octal): a plain int."""
    return text.isdigit() and text.isascii() and (text[0] != "0" or text == "0")


def null_or_bool(text: str) -> bool:
    """Whether YAML reads this plain word as null or a boolean rather than a string."""
    return text in _NULL_OR_BOOL_WORDS


def is_null(node: Node) -> bool:
    """A YAML null, told without running the type resolver on every value."""
    if not isinstance(node, ScalarNode):
        return False
    if node._tag is None:
        return node.value in _NULL_WORDS
    return node._tag == _NULL


def scalar(node: ScalarNode) -> Any:
    """The Python value of a scalar node, by the YAML 1.1 rules of the safe loader."""
    import yaml

    return _yaml_rules()[1].construct_object(yaml.ScalarNode(node.tag, node.value), deep=True)


class Item:
    """One value in the document, with its path for error messages.

    The path is spelled out only when a message needs it: a large file has
    hundreds of thousands of values and almost never an error.
    """

    __slots__ = ("_key", "_parent", "node", "problems")

    def __init__(self, node: Node, parent: str, problems: Problems, key: str | int = "") -> None:
        self.node = node
        self._parent = parent
        self._key = key
        self.problems = problems

    @property
    def path(self) -> str:
        key = self._key
        if isinstance(key, int):
            return f"{self._parent}[{key}]"
        if not key:
            return self._parent
        return f"{self._parent}.{key}" if self._parent else key

    def error(self, message: str) -> None:
        self.problems.add(self.node, self.path, message)

    @property
    def line(self) -> int:
        return self.node.line

    @property
    def scalar_tag(self) -> str:
        """The YAML type tag of a scalar value; "" for a list or mapping."""
        return self.node.tag if isinstance(self.node, ScalarNode) else ""

    # -- typed views; each returns None after recording a problem -------------------

    def as_section(self) -> Section | None:
        if not isinstance(self.node, MappingNode):
            self.error(f"must be a mapping, got {describe(self.node)}")
            return None
        return Section(self.node, self.path, self.problems)

    def as_list(self) -> list[Item] | None:
        if is_null(self.node):
            return []
        if not isinstance(self.node, SequenceNode):
            self.error(f"must be a list, got {describe(self.node)}")
            return None
        path, problems = self.path, self.problems
        return [Item(n, path, problems, i) for i, n in enumerate(self.node.value)]

    def as_str(self) -> str | None:
        node = self.node
        if not isinstance(node, ScalarNode):
            self.error(f"must be a string, got {describe(node)}")
            return None
        # Numbers written where text is expected keep their spelling (a name 123,
        # an address 10.0.0.1); only words YAML turns into null or a boolean are
        # refused. Checking those words first avoids resolving every address.
        if node._tag is None and node.value not in _NULL_OR_BOOL_WORDS:
            return node.value
        if node.tag == _NULL:
            self.error(f"must be a string, got {describe(node)}")
            return None
        if node.tag == _BOOL:
            self.error(f"must be a string, got {describe(node)}; quote it")
            return None
        return node.value

    def as_absolute_path(self) -> str | None:
        value = self.as_str()
        if value is not None and not value.startswith("/"):
            self.error(f"must be an absolute path, got {value!r}")
            return None
        return value

    def as_int(self, lo: int, hi: int) -> int | None:
        node = self.node
        text = node.value if isinstance(node, ScalarNode) else ""
        # Plain decimal is the common case and needs no resolver; anything else
        # (0x.., 0o.., 1_000, 1:30, a leading 0 that YAML 1.1 reads as octal)
        # takes the full YAML rules.
        if isinstance(node, ScalarNode) and node._tag in (None, _INT) and plain_decimal(text):
            value: Any = int(text)
        elif not isinstance(node, ScalarNode) or node.tag != _INT:
            self.error(f"must be an integer {lo}..{hi}, got {describe(node)}")
            return None
        else:
            value = scalar(node)
        if not isinstance(value, int) or not lo <= value <= hi:
            self.error(f"must be {lo}..{hi}, got {value}")
            return None
        return value

    def as_bool(self) -> bool | None:
        if not isinstance(self.node, ScalarNode) or self.node.tag != _BOOL:
            self.error(f"must be true or false, got {describe(self.node)}")
            return None
        return self.node.value in _TRUE_WORDS

    def as_duration(
        self, minimum: float = 0.0, maximum: float | None = None, whole_seconds: bool = False
    ) -> float | None:
        if not isinstance(self.node, ScalarNode) or self.node.tag != _STR:
            hint = (
                f"; write it with a unit, like {self.node.value}s"
                if (isinstance(self.node, ScalarNode) and self.node.tag in (_INT, _FLOAT))
                else ""
            )
            self.error(f"must be a duration like 30s, 100ms or 5m, got {describe(self.node)}{hint}")
            return None
        try:
            value = parse_duration(self.node.value)
        except DurationError as exc:
            self.error(str(exc))
            return None
        if value < minimum or (maximum is not None and value > maximum):
            from agent.config.duration import format_duration

            upper = f"..{format_duration(maximum)}" if maximum is not None else " or more"
            self.error(f"must be {format_duration(minimum)}{upper}, got {self.node.value}")
            return None
        if whole_seconds and value != int(value):
            self.error(f"must be whole seconds, got {self.node.value}")
            return None
        return value

    def as_choice(self, choices: tuple[str, ...]) -> str | None:
        value = self.as_str()
        if value is None:
            return None
        if value not in choices:
            hint = difflib.get_close_matches(value, choices, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            self.error(f"must be one of {', '.join(choices)}; got {value!r}{extra}")
            return None
        return value


class Section:
    """A mapping being read. Keys are looked up by name; ``finish()`` reports the rest."""

    __slots__ = ("_keys", "_read", "node", "path", "problems")

    def __init__(self, node: MappingNode, path: str, problems: Problems) -> None:
        self.node = node
        self.path = path
        self.problems = problems
        self._keys: dict[str, tuple[Node, Node]] = {}
        self._read: set[str] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                problems.add(key_node, path, "keys must be plain names")
                continue
            key = str(key_node.value)
            if key in self._keys:
                problems.add(
                    key_node, self._join(key), "duplicate key (YAML would keep only the last)"
                )
                continue
            self._keys[key] = (key_node, value_node)

    def _join(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, message: str, key: str | None = None) -> None:
        if key is not None and key in self._keys:
            self.problems.add(self._keys[key][1], self._join(key), message)
        else:
            self.problems.add(self.node, self.path, message)

    @property
    def line(self) -> int:
        return self.node.line

    def has(self, key: str) -> bool:
        self._read.add(key)
        value = self._keys.get(key)
        return value is not None and not is_null(value[1])

    def item(self, key: str, required: bool = False) -> Item | None:
        """The value under ``key``; None when absent or null (recorded when required)."""
        self._read.add(key)
        found = self._keys.get(key)
        if found is None or is_null(found[1]):
            if required:
                self.error(f"missing required key {key!r}")
            return None
        return Item(found[1], self.path, self.problems, key)

    def get(
        self, key: str, read: Callable[[Item], T | None], default: T, required: bool = False
    ) -> T | None:
        item = self.item(key, required)
        if item is None:
            return None if required else default
        return read(item)

    def section(self, key: str, required: bool = False) -> Section | None:
        item = self.item(key, required)
        return item.as_section() if item is not None else None

    def items(self, key: str) -> Iterator[Item]:
        item = self.item(key)
        if item is not None:
            yield from item.as_list() or []

    def finish(self) -> None:
        """Report keys present in the document that no reader asked for."""
        for key, (key_node, _) in self._keys.items():
            if key in self._read:
                continue
            hint = difflib.get_close_matches(key, sorted(self._read), n=1, cutoff=0.6)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            allowed = ", ".join(sorted(self._read))
            self.problems.add(
                key_node, self._join(key), f"unknown key{extra}; allowed here: {allowed}"
            )
