"""Property tests of the IPVS diff against an in-memory kernel model.

Applying the planned operations to the model gives the desired table; planning
again gives nothing; services the agent does not own are never touched.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.ipvs.model import (
    AF_INET,
    AF_INET6,
    DesiredService,
    DesiredTable,
    Dest,
    DestKey,
    KernelDest,
    KernelService,
    KernelTable,
    Service,
    ServiceKey,
)
from agent.ipvs.plan import Ownership, plan
from tests.unit.ipvs.fake_kernel import FakeKernel

DRAIN = 300.0

service_keys = st.one_of(
    st.builds(
        ServiceKey,
        st.just(AF_INET),
        st.sampled_from([6, 17, 132]),
        st.sampled_from(["192.0.2.1", "192.0.2.2", "198.51.100.7"]),
        st.sampled_from([80, 443]),
    ),
    st.builds(ServiceKey, st.just(AF_INET6), st.just(6), st.just("2001:db8::1"), st.just(80)),
    st.builds(
        ServiceKey,
        st.sampled_from([AF_INET, AF_INET6]),
        st.just(0),
        st.just(""),
        st.just(0),
        st.integers(1, 3),
    ),
)


def services(key: ServiceKey) -> st.SearchStrategy[Service]:
    return st.builds(
        Service,
        st.just(key),
        st.sampled_from(["rr", "wlc", "sh", "mh"]),
        st.sampled_from([0, 1, 4, 8, 0x18]),
        st.sampled_from([0, 300]),
        st.sampled_from([0xFFFFFFFF, 0xFFFFFF00]),
    )


dest_keys = st.builds(
    DestKey,
    st.just(AF_INET),
    st.sampled_from(["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]),
    st.sampled_from([80, 8080]),
)


def dests(key: DestKey) -> st.SearchStrategy[Dest]:
    return st.builds(
        Dest,
        st.just(key),
        st.sampled_from([0, 2, 3]),
        st.integers(0, 3),
        st.sampled_from([0, 100]),
        st.sampled_from([0, 10]),
    )


@st.composite
def desired_tables(draw: st.DrawFn) -> DesiredTable:
    table: DesiredTable = {}
    for key in draw(st.sets(service_keys, max_size=4)):
        svc = draw(services(key))
        ds = {k: draw(dests(k)) for k in draw(st.sets(dest_keys, max_size=4))}
        table[key] = DesiredService(svc, ds, "vs")
    return table


@st.composite
def kernel_tables(draw: st.DrawFn, busy: bool) -> KernelTable:
    table: KernelTable = {}
    for key in draw(st.sets(service_keys, max_size=4)):
        svc = draw(services(key))
        ds = {}
        for k in draw(st.sets(dest_keys, max_size=4)):
            conns = draw(st.integers(0, 3)) if busy else 0
            ds[k] = KernelDest(
                draw(dests(k)),
                active_conns=conns,
                inactive_conns=draw(st.integers(0, 1)) if busy else 0,
            )
        table[key] = KernelService(svc, ds)
    return table


def assert_desired(kernel: KernelTable, desired: DesiredTable, draining_ok: bool) -> None:
    for key, want in desired.items():
        have = kernel[key]
        assert have.service == want.service
        for dkey, d in want.dests.items():
            assert have.dests[dkey].dest == d
        for dkey in have.dests.keys() - want.dests.keys():
            assert draining_ok, f"unwanted real server {dkey} left in {key}"
            left = have.dests[dkey]
            assert left.dest.weight == 0
            assert left.active_conns + left.inactive_conns > 0


@settings(max_examples=400, deadline=None)
@given(desired_tables(), kernel_tables(busy=False), st.data())
def test_idle_table_converges_in_one_plan(
    desired: DesiredTable, initial: KernelTable, data: st.DataObject
) -> None:
    owned_keys = data.draw(st.sets(st.sampled_from(sorted(initial)) if initial else st.nothing()))
    foreign = {k: v for k, v in initial.items() if k not in owned_keys and k not in desired}
    kernel = FakeKernel(initial)
    p = plan(desired, kernel.dump(), Ownership(frozenset(owned_keys)), 1000.0, DRAIN)
    assert all(r is None for r in kernel.apply(p.ops))
    assert_desired(kernel.table, desired, draining_ok=False)
    # Owned services the config dropped are gone; foreign ones are untouched.
    assert set(kernel.table) == set(desired) | set(foreign)
    for key, svc in foreign.items():
        assert kernel.table[key] == svc
    assert p.ownership.services == frozenset(desired)
    again = plan(desired, kernel.dump(), p.ownership, 1001.0, DRAIN)
    assert again.steps == ()


@settings(max_examples=400, deadline=None)
@given(desired_tables(), kernel_tables(busy=True), st.data())
def test_busy_real_servers_drain_then_go(
    desired: DesiredTable, initial: KernelTable, data: st.DataObject
) -> None:
    owned_keys = data.draw(st.sets(st.sampled_from(sorted(initial)) if initial else st.nothing()))
    kernel = FakeKernel(initial)
    p = plan(desired, kernel.dump(), Ownership(frozenset(owned_keys)), 1000.0, DRAIN)
    assert all(r is None for r in kernel.apply(p.ops))
    assert_desired(kernel.table, desired, draining_ok=True)
    # Nothing left to do while the drains run.
    again = plan(desired, kernel.dump(), p.ownership, 1000.0 + DRAIN / 2, DRAIN)
    assert again.steps == ()
    # After the drain timeout everything converges exactly.
    late = plan(desired, kernel.dump(), again.ownership, 1000.0 + DRAIN + 1, DRAIN)
    assert all(r is None for r in kernel.apply(late.ops))
    assert_desired(kernel.table, desired, draining_ok=False)
    assert set(kernel.table) - set(desired) == set(initial) - set(desired) - set(owned_keys)
    assert not late.ownership.drains
    assert plan(desired, kernel.dump(), late.ownership, 2000.0 + DRAIN, DRAIN).steps == ()


@settings(max_examples=200, deadline=None)
@given(desired_tables(), kernel_tables(busy=True), st.data())
def test_connections_closing_ends_the_drain(
    desired: DesiredTable, initial: KernelTable, data: st.DataObject
) -> None:
    owned_keys = data.draw(st.sets(st.sampled_from(sorted(initial)) if initial else st.nothing()))
    kernel = FakeKernel(initial)
    p = plan(desired, kernel.dump(), Ownership(frozenset(owned_keys)), 1000.0, DRAIN)
    kernel.apply(p.ops)
    # Every connection closes.
    for svc in kernel.table.values():
        for k, d in svc.dests.items():
            svc.dests[k] = replace(d, active_conns=0, inactive_conns=0)
    q = plan(desired, kernel.dump(), p.ownership, 1001.0, DRAIN)
    assert all(r is None for r in kernel.apply(q.ops))
    assert_desired(kernel.table, desired, draining_ok=False)
    assert not q.ownership.drains
