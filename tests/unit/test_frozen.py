"""agent.frozen.fast_init keeps a frozen dataclass's behaviour."""

from __future__ import annotations

import dataclasses

import pytest

from agent.config.model import RealServer, Tunnel
from agent.frozen import fast_init
from agent.ipvs.model import DestKey


def test_same_values_defaults_equality_and_frozenness() -> None:
    rs = RealServer("10.0.0.1", 80)
    assert (rs.weight, rs.forwarding, rs.tunnel, rs.line) == (1, "nat", None, 0)
    assert rs == RealServer(address="10.0.0.1", port=80, weight=1)
    assert hash(rs) == hash(RealServer("10.0.0.1", 80))
    assert RealServer("10.0.0.1", 80, forwarding="tunnel", tunnel=Tunnel()).tunnel == Tunnel()
    with pytest.raises(dataclasses.FrozenInstanceError):
        rs.weight = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        RealServer("10.0.0.1")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        RealServer("10.0.0.1", 80, bogus=1)  # type: ignore[call-arg]
    assert sorted([DestKey(2, "10.0.0.2", 80), DestKey(2, "10.0.0.1", 80)])[0].address == (
        "10.0.0.1"
    )
    assert repr(rs).startswith("RealServer(address='10.0.0.1', port=80")


def test_refuses_what_it_cannot_reproduce() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class WithFactory:
        items: list[int] = dataclasses.field(default_factory=list)

    @dataclasses.dataclass(slots=True)
    class Mutable:
        x: int = 0

    for cls in (WithFactory, Mutable):
        with pytest.raises(TypeError):
            fast_init(cls)


def test_fast_constructor_of_a_named_tuple_key() -> None:
    from agent.frozen import fast_constructor
    from agent.ipvs.model import ServiceKey

    make = fast_constructor(DestKey)
    key = make(2, "10.0.0.1", 80)
    assert type(key) is DestKey and key == DestKey(2, "10.0.0.1", 80)
    assert hash(key) == hash(DestKey(af=2, address="10.0.0.1", port=80))
    assert fast_constructor(ServiceKey)(2, 6, "192.0.2.1", 80, 0) == ServiceKey(
        2, 6, "192.0.2.1", 80
    )
    assert str(key) == "10.0.0.1:80"
