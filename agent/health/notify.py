"""When a virtual server's ``quorum_up``/``quorum_down`` command runs, and what it is told.

Pure: fed a pool, its previous state and its new decision, it says which command
(if any) runs and with which environment; the daemon's health service runs it
(``agent.vrrp.command``: no shell, a timeout, the whole process tree killed). It
must never run anything, read a clock or keep state.

keepalived's rules (``check/ipwrapper.c``, ``update_quorum_state``), kept here so
an imported configuration behaves the same:

- A command runs on a real change of the quorum: ``quorum_down`` when the healthy
  weight falls below ``quorum - hysteresis``, ``quorum_up`` when it is back at
  ``quorum + hysteresis``.
- At start nothing runs while the quorum is met (met at start only at ``quorum +
  hysteresis``: ``agent.health.core.decide``). With the quorum not met at start
  ``quorum_down`` runs only when a ``sorry_server`` is configured (keepalived's
  "Starting with quorum down", which comes with adding the sorry server); without
  one nothing runs until the quorum is first gained (then ``quorum_up``).
- A reload keeps the pool's quorum state: an unchanged pool runs nothing; a
  reload that changes ``quorum`` or the real servers so that the quorum flips runs
  the command of the new state.

The command gets no arguments of its own; the environment names the virtual
server and the numbers behind the change (``LVS_*`` below).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.health.config import Pool
from agent.health.core import PoolDecision, PoolState
from agent.ipvs.model import PROTOCOL_NAMES

if TYPE_CHECKING:
    from agent.ipvs.model import ServiceKey


def quorum_event(pool: Pool, prev: PoolState, decision: PoolDecision) -> str | None:
    """``"quorum_up"`` or ``"quorum_down"`` when that notification is due now, else None."""
    if prev.quorum_up is None:  # the pool's first decision: start, or new on a reload
        if not decision.quorum_up and pool.policy.sorry_server is not None:
            return "quorum_down"
        return None
    if decision.quorum_up == prev.quorum_up:
        return None
    return "quorum_up" if decision.quorum_up else "quorum_down"


def quorum_command(pool: Pool, event: str) -> tuple[str, ...]:
    """The argv configured for ``event`` (empty: none)."""
    return pool.policy.quorum_up if event == "quorum_up" else pool.policy.quorum_down


def quorum_env(pool: Pool, decision: PoolDecision, service: ServiceKey | None) -> dict[str, str]:
    """The variables a quorum command gets (added to the agent's environment)."""
    policy = pool.policy
    env = {
        "LVS_VIRTUAL_SERVER": pool.name,
        "LVS_QUORUM_STATE": "up" if decision.quorum_up else "down",
        "LVS_QUORUM": str(policy.quorum),
        "LVS_HYSTERESIS": str(policy.hysteresis),
        "LVS_HEALTHY_WEIGHT": str(decision.healthy_weight),
        "LVS_VIRTUAL_ADDRESS": "",
        "LVS_VIRTUAL_PORT": "",
        "LVS_VIRTUAL_PROTOCOL": "",
        "LVS_VIRTUAL_FWMARK": "",
    }
    if service is not None:
        if service.fwmark:
            env["LVS_VIRTUAL_FWMARK"] = str(service.fwmark)
        else:
            env["LVS_VIRTUAL_ADDRESS"] = service.address
            env["LVS_VIRTUAL_PORT"] = str(service.port)
            protocol = PROTOCOL_NAMES.get(service.protocol, str(service.protocol))
            env["LVS_VIRTUAL_PROTOCOL"] = protocol
    return env
