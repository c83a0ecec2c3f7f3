"""What health does to the IPVS table, pure: the configured table in, the health-adjusted one out.

This module owns the one rule that turns pool decisions (``core.decide``, kept by
the scheduler) and the operator's maintenance flags into the real servers the
kernel should carry. It must never do I/O, read a clock or keep state: the
daemon's health service calls it for each change and for every reconcile, so the
periodic reconcile programs exactly what the checker decided and never undoes it.

- A failed real server gets the decision's weight: 0 (``on_failure: drain``) or
  out of the table (``remove``; the planner then drains it like any real server the
  configuration dropped). A recovered one gets its configured weight, ramped over
  ``slow_start`` (the ramp and dynamic weights are in the decision: a weight is a
  function of the last answer, never accumulated here).
- Held by the pool floor: the decision keeps its weight.
- Quorum lost with a ``sorry_server`` (keepalived's ``update_quorum_state``): the
  sorry server is added as a real server and every other real server is taken out
  as a failure would be, until quorum is back. Exception: while the pool floor
  holds failing servers, the floor wins and no sorry server is added; the floor
  says the checks are not to be trusted below it (a director whose own link to the
  real servers is cut must not send everything to the sorry server either).
- Maintenance (``lvs-agent maint``): weight 0 whatever the checks say, like drain.
- A virtual server with no decision and no maintenance flag is left as configured
  (the same object: no copy, nothing to compare).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace

from agent.health.config import PoolPolicy
from agent.health.core import PoolDecision
from agent.ipvs.model import AF_INET, AF_INET6, DesiredService, DesiredTable, Dest, DestKey

RsKey = tuple[str, int]
MaintKey = tuple[str, RsKey]


def adjust_service(
    ds: DesiredService,
    decision: PoolDecision | None,
    policy: PoolPolicy | None,
    maint: Collection[RsKey] = (),
) -> DesiredService:
    """One virtual service as health wants it (``ds`` itself when health changes nothing)."""
    if decision is None and not maint:
        return ds
    sorry = (
        decision is not None
        and decision.sorry
        and not decision.held
        and policy is not None
        and policy.sorry_server is not None
    )
    out_weight: int | None = None if policy is not None and policy.on_failure == "remove" else 0
    dests: dict[DestKey, Dest] = {}
    changed = False
    for key, dest in ds.dests.items():
        rs = (key.address, key.port)
        weight: int | None = dest.weight
        if decision is not None:
            weight = decision.weights.get(rs, dest.weight)
            if sorry and weight is not None:
                weight = out_weight
        if rs in maint:
            weight = 0  # even under ``remove``: maintenance drains, it never deletes
        if weight is None:
            changed = True
            continue
        if weight != dest.weight:
            dest = replace(dest, weight=weight)
            changed = True
        dests[key] = dest
    if sorry:
        assert policy is not None and policy.sorry_server is not None
        s = policy.sorry_server
        key = DestKey(AF_INET6 if ":" in s.address else AF_INET, s.address, s.port)
        have = ds.dests.get(key)
        template = have or next(iter(ds.dests.values()), None)
        fwd = template.fwd if template is not None else 0
        dests[key] = Dest(key, fwd=fwd, weight=s.weight)
        changed = True
    if not changed:
        return ds
    return DesiredService(ds.service, dests, ds.name)


def adjust_table(
    desired: DesiredTable,
    decisions: Mapping[str, PoolDecision],
    policies: Mapping[str, PoolPolicy],
    maintenance: Collection[MaintKey] = frozenset(),
) -> DesiredTable:
    """The whole table as health wants it; ``desired`` itself when nothing applies.

    Only the services named by a decision or a maintenance flag are looked at
    (found through ``DesiredService.name``); the others are shared, not copied.
    """
    if not decisions and not maintenance:
        return desired
    maint: dict[str, set[RsKey]] = {}
    for vs, rs in maintenance:
        maint.setdefault(vs, set()).add(rs)
    out: DesiredTable | None = None
    for skey, ds in desired.items():
        d = decisions.get(ds.name)
        m = maint.get(ds.name)
        if d is None and not m:
            continue
        new = adjust_service(ds, d, policies.get(ds.name), m or ())
        if new is not ds:
            if out is None:
                out = dict(desired)
            out[skey] = new
    return desired if out is None else out
