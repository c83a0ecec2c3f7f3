"""The health engine's view of a configuration: one ``Pool`` per virtual server.

Owns the mapping from ``agent.config.model`` (virtual servers with their
``health`` policy, real servers with their effective ``checks``) to the
``Pool``/``Member`` values the scheduler and the core read. Pure: it never
probes, never touches IPVS and never reads a file.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from agent.health.config import Check, CheckKey, Member, Pool, Target

if TYPE_CHECKING:
    from agent.config.model import Config


def pools_of(config: Config) -> tuple[Pool, ...]:
    """A pool per virtual server (named by it), in the file's order. Every real
    server is a member, with or without checks: a member without checks is
    always healthy, but it counts towards the pool floor and the quorum.

    The members are those ``agent.health.config.member`` builds; the check part
    of each identity is made once per declared check, not once per real server
    (the loader shares a virtual server's checks among its real servers, and
    ``dataclasses.replace`` on every one made this the slowest part of a reload
    at 10,000 virtual servers).
    """
    bare: dict[int, tuple[Check, Check]] = {}  # id(check) -> (check, its identity part)

    def key(check: Check, address: str, port: int) -> CheckKey:
        found = bare.get(id(check))
        if found is None:
            found = (
                check,  # kept alive here, so its id is not reused meanwhile
                replace(check, connect_address=None, connect_port=0, source_address=None),
            )
            bare[id(check)] = found
        return CheckKey(
            found[1],
            Target(
                check.connect_address or address,
                check.connect_port or port,
                check.source_address,
            ),
        )

    return tuple(
        Pool(
            vs.name,
            tuple(
                Member(
                    rs.address,
                    rs.port,
                    rs.weight,
                    tuple(key(c, rs.address, rs.port) for c in rs.checks),
                )
                for rs in vs.real_servers
            ),
            vs.health,
        )
        for vs in config.virtual_servers
    )


def decided(pool: Pool) -> bool:
    """Whether the pool needs health decisions: it has a check, or something acts on
    its quorum (``PoolPolicy.watches_quorum``). A pool without either is left as
    configured (maintenance aside: ``agent.health.overlay`` drains a flagged server
    of any pool)."""
    return pool.policy.watches_quorum or any(m.checks for m in pool.members)
