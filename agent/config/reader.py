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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import yaml

from agent.config.duration import DurationError, parse_duration

T = TypeVar("T")

_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_STR = "tag:yaml.org,2002:str"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"

_constructor = yaml.constructor.SafeConstructor()


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
    """The configuration is invalid; ``problems`` lists every finding in file order."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.line, p.path))
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(slots=True)
class Problems:
    file: str
    found: list[Problem] = field(default_factory=list)

    def add(self, node: yaml.Node | None, path: str, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 1
        self.found.append(Problem(self.file, line, path, message))

    def raise_if_any(self) -> None:
        if self.found:
            raise ConfigError(self.found)


def compose(text: str, problems: Problems) -> yaml.Node | None:
    """Parse YAML into nodes (which keep line numbers); syntax errors become problems."""
    loader_cls = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.compose(text, Loader=loader_cls)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problems.found.append(
            Problem(problems.file, line, "", f"YAML syntax error: {exc.problem or exc}")
        )
    except yaml.YAMLError as exc:
        problems.found.append(Problem(problems.file, 1, "", f"YAML error: {exc}"))
    return None


_TYPE_NAMES = {
    _INT: "an integer",
    _FLOAT: "a number",
    _STR: "a string",
    _BOOL: "true or false",
    _NULL: "null",
    "seq": "a list",
    "map": "a mapping",
}


def describe(node: yaml.Node) -> str:
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    name = _TYPE_NAMES.get(node.tag, "a value")
    return f"{name} ({node.value!r})" if node.tag != _NULL else "null"


def scalar(node: yaml.Node) -> Any:
    """The Python value of a scalar node, by the YAML 1.1 rules of the safe loader."""
    return _constructor.construct_object(node, deep=True)


class Item:
    """One value in the document, with its path for error messages."""

    __slots__ = ("node", "path", "problems")

    def __init__(self, node: yaml.Node, path: str, problems: Problems) -> None:
        self.node = node
        self.path = path
        self.problems = problems

    def error(self, message: str) -> None:
        self.problems.add(self.node, self.path, message)

    @property
    def line(self) -> int:
        return int(self.node.start_mark.line) + 1

    # -- typed views; each returns None after recording a problem -------------------

    def as_section(self) -> Section | None:
        if not isinstance(self.node, yaml.MappingNode):
            self.error(f"must be a mapping, got {describe(self.node)}")
            return None
        return Section(self.node, self.path, self.problems)

    def as_list(self) -> list[Item] | None:
        if isinstance(self.node, yaml.ScalarNode) and self.node.tag == _NULL:
            return []
        if not isinstance(self.node, yaml.SequenceNode):
            self.error(f"must be a list, got {describe(self.node)}")
            return None
        return [Item(n, f"{self.path}[{i}]", self.problems) for i, n in enumerate(self.node.value)]

    def as_str(self) -> str | None:
        if not isinstance(self.node, yaml.ScalarNode) or self.node.tag == _NULL:
            self.error(f"must be a string, got {describe(self.node)}")
            return None
        # Numbers and booleans written where text is expected keep their spelling
        # (e.g. an address 10.0.0.1 is a str already; a name 123 is fine).
        if self.node.tag in (_BOOL,):
            self.error(f"must be a string, got {describe(self.node)}; quote it")
            return None
        value: str = self.node.value
        return value

    def as_int(self, lo: int, hi: int) -> int | None:
        if not isinstance(self.node, yaml.ScalarNode) or self.node.tag != _INT:
            self.error(f"must be an integer {lo}..{hi}, got {describe(self.node)}")
            return None
        value = scalar(self.node)
        if not isinstance(value, int) or not lo <= value <= hi:
            self.error(f"must be {lo}..{hi}, got {value}")
            return None
        return value

    def as_bool(self) -> bool | None:
        if not isinstance(self.node, yaml.ScalarNode) or self.node.tag != _BOOL:
            self.error(f"must be true or false, got {describe(self.node)}")
            return None
        return bool(scalar(self.node))

    def as_duration(
        self, minimum: float = 0.0, maximum: float | None = None, whole_seconds: bool = False
    ) -> float | None:
        if not isinstance(self.node, yaml.ScalarNode) or self.node.tag != _STR:
            hint = (
                f"; write it with a unit, like {self.node.value}s"
                if (isinstance(self.node, yaml.ScalarNode) and self.node.tag in (_INT, _FLOAT))
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

    def __init__(self, node: yaml.MappingNode, path: str, problems: Problems) -> None:
        self.node = node
        self.path = path
        self.problems = problems
        self._keys: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        self._read: set[str] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
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
        return int(self.node.start_mark.line) + 1

    def has(self, key: str) -> bool:
        self._read.add(key)
        value = self._keys.get(key)
        return value is not None and not (
            isinstance(value[1], yaml.ScalarNode) and value[1].tag == _NULL
        )

    def item(self, key: str, required: bool = False) -> Item | None:
        """The value under ``key``; None when absent or null (recorded when required)."""
        self._read.add(key)
        found = self._keys.get(key)
        if found is None or (isinstance(found[1], yaml.ScalarNode) and found[1].tag == _NULL):
            if required:
                self.error(f"missing required key {key!r}")
            return None
        return Item(found[1], self._join(key), self.problems)

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
