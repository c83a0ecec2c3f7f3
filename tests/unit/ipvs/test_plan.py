"""Table-driven cases of the IPVS diff that users will hit by name."""

from __future__ import annotations

from dataclasses import replace

from agent.ipvs.model import (
    AF_INET,
    AF_INET6,
    AddDest,
    AddService,
    DelDest,
    DelService,
    DesiredService,
    Dest,
    DestKey,
    EditDest,
    EditService,
    KernelDest,
    KernelService,
    Service,
    ServiceKey,
    SetTimeouts,
    Timeouts,
)
from agent.ipvs.plan import Ownership, plan

K = ServiceKey(AF_INET, 6, "192.0.2.100", 80)
SVC = Service(K, "wlc")
A = Dest(DestKey(AF_INET, "10.0.1.21", 8080), weight=100)
B = Dest(DestKey(AF_INET, "10.0.1.22", 8080), weight=100)


def desired(*ds: Dest, svc: Service = SVC) -> dict[ServiceKey, DesiredService]:
    return {svc.key: DesiredService(svc, {d.key: d for d in ds}, "web")}


def kernel(*ds: KernelDest, svc: Service = SVC) -> dict[ServiceKey, KernelService]:
    return {svc.key: KernelService(svc, {d.dest.key: d for d in ds})}


OWNED = Ownership(frozenset({K}))


def test_empty_kernel_adds_service_then_dests() -> None:
    p = plan(desired(A, B), {}, Ownership(), 0, 300)
    assert p.ops == [AddService(SVC), AddDest(K, A), AddDest(K, B)]
    assert p.ownership.services == {K}


def test_unchanged_is_zero_ops() -> None:
    assert plan(desired(A, B), kernel(KernelDest(A), KernelDest(B)), OWNED, 0, 300).ops == []


def test_weight_change_is_one_set() -> None:
    p = plan(desired(replace(A, weight=5), B), kernel(KernelDest(A), KernelDest(B)), OWNED, 0, 300)
    assert p.ops == [EditDest(K, replace(A, weight=5))]
    assert "weight 100 -> 5" in p.steps[0].text


def test_scheduler_change_is_one_edit() -> None:
    p = plan(desired(A, svc=replace(SVC, scheduler="rr")), kernel(KernelDest(A)), OWNED, 0, 300)
    assert p.ops == [EditService(replace(SVC, scheduler="rr"))]


def test_forwarding_change_is_edited_in_place() -> None:
    p = plan(desired(replace(A, fwd=3)), kernel(KernelDest(A)), OWNED, 0, 300)
    assert p.ops == [EditDest(K, replace(A, fwd=3))]


def test_weight_zero_left_by_earlier_run_is_restored() -> None:
    p = plan(desired(A), kernel(KernelDest(replace(A, weight=0))), OWNED, 0, 300)
    assert p.ops == [EditDest(K, A)]


def test_idle_removed_real_server_is_deleted_at_once() -> None:
    p = plan(desired(A), kernel(KernelDest(A), KernelDest(B)), OWNED, 0, 300)
    assert p.ops == [DelDest(K, B.key)]


def test_busy_removed_real_server_drains_then_goes() -> None:
    busy = KernelDest(B, active_conns=1)
    p = plan(desired(A), kernel(KernelDest(A), busy), OWNED, 10, 300)
    assert p.ops == [EditDest(K, replace(B, weight=0))]
    assert p.ownership.drains == {(K, B.key): 10}
    # Still busy: nothing more to do, drain start kept.
    drained = KernelDest(replace(B, weight=0), active_conns=1)
    q = plan(desired(A), kernel(KernelDest(A), drained), p.ownership, 100, 300)
    assert q.ops == [] and q.ownership.drains == {(K, B.key): 10}
    # Only inactive connections left still counts as busy.
    r = plan(
        desired(A),
        kernel(KernelDest(A), replace(drained, active_conns=0, inactive_conns=2)),
        q.ownership,
        200,
        300,
    )
    assert r.ops == []
    # Connections closed: deleted.
    s = plan(
        desired(A), kernel(KernelDest(A), KernelDest(replace(B, weight=0))), r.ownership, 250, 300
    )
    assert s.ops == [DelDest(K, B.key)] and not s.ownership.drains


def test_drain_timeout_deletes_busy_real_server() -> None:
    drained = KernelDest(replace(B, weight=0), active_conns=3)
    owned = Ownership(frozenset({K}), {(K, B.key): 10})
    p = plan(desired(A), kernel(KernelDest(A), drained), owned, 310, 300)
    assert p.ops == [DelDest(K, B.key)]
    assert "drain timeout" in p.steps[0].text


def test_readded_while_draining_gets_weight_back() -> None:
    drained = KernelDest(replace(B, weight=0), active_conns=3)
    owned = Ownership(frozenset({K}), {(K, B.key): 10})
    p = plan(desired(A, B), kernel(KernelDest(A), drained), owned, 20, 300)
    assert p.ops == [EditDest(K, B)] and not p.ownership.drains


def test_foreign_service_is_never_touched() -> None:
    other = ServiceKey(AF_INET, 6, "203.0.113.9", 22)
    foreign = {other: KernelService(Service(other, "rr"), {A.key: KernelDest(A)})}
    assert plan({}, foreign, Ownership(), 0, 300).ops == []
    assert plan(desired(A), {**foreign, **kernel(KernelDest(A))}, OWNED, 0, 300).ops == []


def test_owned_service_removed_from_config_is_deleted() -> None:
    p = plan({}, kernel(KernelDest(A), KernelDest(B)), OWNED, 0, 300)
    assert p.ops == [DelService(K)]
    assert p.ownership.services == frozenset()


def test_owned_service_with_busy_dests_drains_before_deletion() -> None:
    p = plan({}, kernel(KernelDest(A, active_conns=2), KernelDest(B)), OWNED, 0, 300)
    assert p.ops == [EditDest(K, replace(A, weight=0)), DelDest(K, B.key)]
    assert K in p.ownership.services
    q = plan({}, kernel(KernelDest(replace(A, weight=0))), p.ownership, 5, 300)
    assert q.ops == [DelService(K)]


def test_owned_service_gone_from_kernel_is_forgotten() -> None:
    p = plan({}, {}, OWNED, 0, 300)
    assert p.ops == [] and p.ownership.services == frozenset()


def test_matching_foreign_service_named_by_config_is_adopted() -> None:
    p = plan(desired(A), kernel(KernelDest(A)), Ownership(), 0, 300)
    assert p.ops == [] and p.ownership.services == {K}


def test_timeouts_only_differences_are_sent() -> None:
    p = plan({}, {}, Ownership(), 0, 300, Timeouts(900, 60, 300), Timeouts(900, 120, 300))
    assert p.ops == [SetTimeouts(Timeouts(0, 60, 0))]
    assert (
        plan({}, {}, Ownership(), 0, 300, Timeouts(900, 120, 300), Timeouts(900, 120, 300)).ops
        == []
    )


def test_lines_speak_the_configuration_s_words() -> None:
    k6 = ServiceKey(AF_INET6, 6, "2001:db8::100", 443)
    sh = Service(k6, "sh", flags=0x1 | 0x8 | 0x10, timeout=300, netmask=64)
    udp = Service(ServiceKey(AF_INET, 17, "192.0.2.60", 5060), "sed", 0x1 | 0x4, 60, pe_name="sip")
    v4 = Service(K, "wrr", flags=0x1, timeout=60, netmask=0xFFFFFF00)
    gue = Dest(
        DestKey(AF_INET, "10.0.3.11", 80),
        fwd=2,
        tun_type=1,
        tun_port=6080,
        tun_flags=1,
        u_threshold=10,
        l_threshold=5,
    )
    texts = [
        s.text
        for svc, dests in ((sh, ()), (udp, ()), (v4, (gue,)))
        for s in plan(desired(*dests, svc=svc), {}, Ownership(), 0, 300).steps
    ]
    assert texts == [
        "add service tcp [2001:db8::100]:443 (web) scheduler=sh "
        "scheduler_flags=sh-fallback,sh-port persistence=300s netmask=64",
        "add service udp 192.0.2.60:5060 (web) scheduler=sed persistence=60s engine=sip one_packet",
        "add service tcp 192.0.2.100:80 (web) scheduler=wrr persistence=60s netmask=255.255.255.0",
        "add real server tcp 192.0.2.100:80 (web) -> 10.0.3.11:80 forwarding=tunnel weight=1 "
        "upper_threshold=10 lower_threshold=5 tunnel_type=gue tunnel_port=6080 "
        "tunnel_checksum=csum",
    ]
    edit = plan(
        desired(
            replace(gue, fwd=3, tun_type=0, tun_port=0, tun_flags=0),
            svc=replace(v4, scheduler="mh", flags=0x14, timeout=0, netmask=0xFFFFFFFF),
        ),
        kernel(KernelDest(gue), svc=v4),
        OWNED,
        0,
        300,
    )
    assert [s.text for s in edit.steps] == [
        "edit service tcp 192.0.2.100:80 (web) scheduler wrr -> mh, scheduler_flags none -> "
        "mh-port, persistence 60s -> off, netmask 255.255.255.0 -> 255.255.255.255, "
        "one_packet off -> on",
        "edit real server tcp 192.0.2.100:80 (web) -> 10.0.3.11:80 forwarding tunnel -> dr, "
        "tunnel_type gue -> ipip, tunnel_port 6080 -> 0, tunnel_checksum csum -> nocsum",
    ]
