"""Hold the configuration readers' fast paths to the general ones (used by
tests/unit/conftest.py and test_fast_readers.py).

- ``agent.config.composer`` composes libyaml's events into the reader's
  line-numbered nodes; the Python values of that tree must be what
  ``yaml.safe_load`` (with libyaml: ``CSafeLoader``) reads from the same document.
- ``agent.config.quick`` must build the general reader's virtual server whenever
  it does not decline.
"""

from __future__ import annotations

import math
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
    scalar,
)

Streamed = Callable[[Node, int], None]


def as_python(node: Node | None) -> Any:
    """The tree's values as the safe loader builds them."""
    if node is None:
        return None
    if isinstance(node, ScalarNode):
        return scalar(node)
    if isinstance(node, SequenceNode):
        return [as_python(n) for n in node.value]
    assert isinstance(node, MappingNode)
    return {as_python(k): as_python(v) for k, v in node.value}


def comparable(value: Any) -> Any:
    """NaN equal to itself, so that `.nan` compares."""
    if isinstance(value, float) and math.isnan(value):
        return ("nan",)
    if isinstance(value, list):
        return [comparable(v) for v in value]
    if isinstance(value, dict):
        return {comparable(k): comparable(v) for k, v in value.items()}
    return value


def safe_load_agrees(text: str) -> None:
    """The composer reads ``text`` as yaml.safe_load does: the same values, or
    both refuse it (a document safe_load cannot build is left to the reader's
    own checks)."""
    import yaml

    from agent.config import composer

    compose = getattr(composer.compose, "__wrapped__", composer.compose)  # not the check
    problems = Problems("t.yaml")
    tree = compose(text, problems)
    try:
        # safe_load on libyaml's parser, the one the composer reads: the pure-Python
        # parser differs from libyaml on a few documents (a tab inside a plain scalar).
        expected = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.constructor.ConstructorError:
        return  # a tag or key shape safe_load will not build: the reader refuses those itself
    except yaml.YAMLError:
        assert problems.found, f"the composer read a document safe_load refuses:\n{text}"
        return
    except ValueError:
        return  # a value its explicit tag cannot build (!!int x): refused by the reader too
    assert not problems.found, (text, problems.found)
    try:
        got = as_python(tree)
    except TypeError:  # an unhashable key that safe_load took as a merge or a string
        raise AssertionError(f"the composer's tree does not build:\n{text}") from None
    assert comparable(got) == comparable(expected), text


def checked_compose(real: Callable[..., Node | None]) -> Callable[..., Node | None]:
    def compose(text: str, problems: Problems, stream: dict[str, Streamed] | None = None) -> Any:
        safe_load_agrees(text)
        return real(text, problems, stream)

    compose.__wrapped__ = real  # type: ignore[attr-defined]
    return compose


def general_virtual_server(node: Node) -> tuple[VirtualServer | None, list[str]]:
    from agent.config.loader import _read_virtual_server

    problems = Problems("t.yaml")
    section = Item(node, "virtual_servers", problems, 0).as_section()
    vs = _read_virtual_server(section) if section is not None else None
    return vs, [str(p) for p in problems.found]


def checked_quick(real: Callable[..., VirtualServer | None]) -> Callable[..., Any]:
    def virtual_server(node: Node, *args: Any) -> VirtualServer | None:
        fast = real(node, *args)
        if fast is not None:
            slow, problems = general_virtual_server(node)
            assert not problems, f"quick accepted an entry the general reader refuses: {problems}"
            assert fast == slow, (fast, slow)
        return fast

    return virtual_server
