"""The health engine's view of a configuration: one ``Pool`` per virtual server.

Owns the mapping from ``agent.config.model`` (virtual servers with their
``health`` policy, real servers with their effective ``checks``) to the
``Pool``/``Member`` values the scheduler and the core read. Pure: it never
probes, never touches IPVS and never reads a file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.health.config import Pool, member

if TYPE_CHECKING:
    from agent.config.model import Config


def pools_of(config: Config) -> tuple[Pool, ...]:
    """A pool per virtual server (named by it), in the file's order. Every real
    server is a member, with or without checks: a member without checks is
    always healthy, but it counts towards the pool floor and the quorum."""
    return tuple(
        Pool(
            vs.name,
            tuple(member(rs.address, rs.port, rs.weight, rs.checks) for rs in vs.real_servers),
            vs.health,
        )
        for vs in config.virtual_servers
    )
