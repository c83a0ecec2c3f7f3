"""Connection synchronisation: which IPVS sync daemons should run, and the way there.

Pure decisions, no I/O: from ``ipvs.sync`` and whether this director holds the VIPs
of the instance (or sync group) it names, the daemons wanted; from what the kernel
runs (IPVS_CMD_GET_DAEMON) and what the agent owns, the daemons to stop and start.
The daemon's shell (``agent.daemon.syncd``) reads the kernel and applies the plan.

- Every director runs the backup daemon (it receives the holder's connection table);
  the holder also runs the master daemon (it sends its table). The master daemon
  follows each transition of the instance: started on becoming holder, stopped on
  leaving.
- Ownership. The kernel runs at most one master and one backup daemon per network
  namespace, with one set of settings each: they are singletons, not objects with
  names. With ``ipvs.sync`` configured the agent owns both roles in its namespace:
  a daemon found running in a role (started before a restart, or by hand) is adopted
  as it is when its settings match, and replaced when they differ. Without
  ``ipvs.sync`` the agent touches only the roles it started itself in this process
  (a reload that removes ``ipvs.sync`` stops them); daemons it never started are
  left alone.
- Nothing changed, nothing written: a reload that keeps ``ipvs.sync`` finds the
  kernel's daemons matching and issues no request, so the daemons are not
  restarted and no synchronised state is lost.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass

from agent.config.model import SyncSettings
from agent.ipvs.model import IP_VS_STATE_BACKUP, IP_VS_STATE_MASTER, SyncDaemon

ROLES = (IP_VS_STATE_MASTER, IP_VS_STATE_BACKUP)


def wanted(sync: SyncSettings | None, holder: bool) -> dict[int, SyncDaemon]:
    """The daemons this director should run, by state."""
    if sync is None:
        return {}
    roles = ROLES if holder else (IP_VS_STATE_BACKUP,)
    return {
        state: SyncDaemon(
            state, sync.interface, sync.sync_id, sync.max_len, sync.group, sync.port, sync.ttl
        )
        for state in roles
    }


def matches(want: SyncDaemon, have: SyncDaemon) -> bool:
    """Whether a running daemon is the one wanted. A setting left to the kernel (0, "")
    is not compared; nor is one the kernel does not report (kernels before 4.3)."""
    if (want.state, want.interface, want.sync_id) != (have.state, have.interface, have.sync_id):
        return False
    for mine, theirs in (
        (want.max_len, have.max_len),
        (want.port, have.port),
        (want.ttl, have.ttl),
        (want.group, have.group),
    ):
        if mine and theirs and mine != theirs:
            return False
    return True


@dataclass(frozen=True, slots=True)
class DaemonPlan:
    """Stop these states, then start these daemons (a changed daemon is both)."""

    stop: tuple[int, ...] = ()
    start: tuple[SyncDaemon, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.stop or self.start)

    def describe(self, running: Mapping[int, SyncDaemon]) -> list[str]:
        lines = []
        for state in self.stop:
            d = running.get(state)
            where = f" on {d.interface} (sync id {d.sync_id})" if d is not None else ""
            lines.append(f"stop the {_role(state)} sync daemon{where}")
        for d in self.start:
            lines.append(
                f"start the {d.role} sync daemon on {d.interface} (sync id {d.sync_id}, "
                f"group {d.group or 'default'}, port {d.port or 'default'})"
            )
        return lines


def plan(
    want: Mapping[int, SyncDaemon], running: Mapping[int, SyncDaemon], owned: Set[int]
) -> DaemonPlan:
    """From the kernel's daemons to the wanted ones, touching only owned roles.

    ``owned``: the roles the agent may stop (all of them while ``ipvs.sync`` is
    configured, else those it started). A wanted role is always owned.
    """
    stop: list[int] = []
    start: list[SyncDaemon] = []
    for state in ROLES:
        w, h = want.get(state), running.get(state)
        if w is None:
            if h is not None and state in owned:
                stop.append(state)
        elif h is None:
            start.append(w)
        elif not matches(w, h):
            stop.append(state)
            start.append(w)
    return DaemonPlan(tuple(stop), tuple(start))


def holds(name: str, states: Mapping[str, str], groups: Mapping[str, Set[str]]) -> bool:
    """Whether this director holds the VIPs of instance or sync group ``name``:
    the instance is MASTER, or every member of the group is (``states``: instance
    name -> state name; quorum instances are MASTER only while their lease is held)."""
    members = groups.get(name)
    if members is None:
        return states.get(name) == "MASTER"
    return bool(members) and all(states.get(m) == "MASTER" for m in members)


def _role(state: int) -> str:
    return {IP_VS_STATE_MASTER: "master", IP_VS_STATE_BACKUP: "backup"}.get(state, str(state))
