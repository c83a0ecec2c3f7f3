"""Compare the fast readers with the general ones (used by tests/unit/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.config.model import VirtualServer
from agent.config.reader import (
    Item,
    MappingNode,
    Node,
    Problems,
    ScalarNode,
    SequenceNode,
    compose,
)

Streamed = Callable[[Node, int], None]


def shape(node: Node | None) -> Any:
    """A comparable picture of a node tree: kinds, lines, values, plain or quoted."""
    if node is None:
        return None
    if isinstance(node, ScalarNode):
        return ("scalar", node.line, node.value, node._tag)
    if isinstance(node, MappingNode):
        return ("map", node.line, [(shape(k), shape(v)) for k, v in node.value])
    assert isinstance(node, SequenceNode)
    return ("seq", node.line, [shape(n) for n in node.value])


def both_readers(text: str, keys: tuple[str, ...] = ()) -> tuple[Any, Any, bool]:
    """(subset's picture, libyaml's picture, libyaml found a problem); streamed entries
    are part of each picture."""
    from agent.config import subset

    real = getattr(subset.compose_subset, "__wrapped__", subset.compose_subset)

    def recorder(into: list[Any]) -> dict[str, Streamed]:
        return {k: (lambda n, i, k=k: into.append((k, i, shape(n)))) for k in keys}

    fast_items: list[Any] = []
    slow_items: list[Any] = []
    fast = real(text, recorder(fast_items))
    problems = Problems("t.yaml")
    slow = compose(text, problems, recorder(slow_items))
    fast_shape = None if fast is None else (shape(fast), fast_items)
    return fast_shape, (shape(slow), slow_items), bool(problems.found)


def checked_subset(real: Callable[..., Node | None]) -> Callable[..., Node | None]:
    def compose_subset(text: str, stream: dict[str, Streamed] | None = None) -> Node | None:
        fast, slow, broken = both_readers(text, tuple(stream or {}))
        if fast is not None:
            assert not broken, f"subset read a document libyaml refuses:\n{text}"
            assert fast == slow, f"subset and libyaml differ on:\n{text}"
        return real(text, stream)

    compose_subset.__wrapped__ = real  # type: ignore[attr-defined]
    return compose_subset


def general_virtual_server(node: Node) -> tuple[VirtualServer | None, list[str]]:
    from agent.config.loader import _read_virtual_server

    problems = Problems("t.yaml")
    section = Item(node, "virtual_servers", problems, 0).as_section()
    vs = _read_virtual_server(section) if section is not None else None
    return vs, [str(p) for p in problems.found]


def checked_quick(real: Callable[[Node], VirtualServer | None]) -> Callable[..., Any]:
    def virtual_server(node: Node) -> VirtualServer | None:
        fast = real(node)
        if fast is not None:
            slow, problems = general_virtual_server(node)
            assert not problems, f"quick accepted an entry the general reader refuses: {problems}"
            assert fast == slow, (fast, slow)
        return fast

    return virtual_server
