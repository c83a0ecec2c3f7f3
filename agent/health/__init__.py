"""Health checking: probes against real servers, rise/fall, and the weights they imply.

The component's surface, for the configuration loader, the daemon and ``check-health``:

- ``Check``, ``PoolPolicy``, ``MinHealthy``, ``SorryServer``, ``Member``, ``Pool``
  and ``member()`` (``config``): what the loader builds from ``health_checks`` and
  the per-virtual-server keys.
- ``Scheduler`` (``scheduler``): runs the checks on the loop; ``decision(name)``
  gives a virtual server's weights, held servers and quorum, ``weight(name, key)``
  one real server's weight, ``on_change`` says which virtual servers changed.
- ``check_once`` (``scheduler``): every check once, for ``check-health``.
- ``pools_of`` (``pools``): a configuration's virtual servers as pools.
- ``HealthCollector`` (``metrics``): the Prometheus view of a scheduler.

Modules: ``config`` (values), ``core`` (the pure decision), ``wire`` (protocol
parsing, sans I/O), ``probes`` (sockets and processes), ``syn`` (connect checks
as raw SYNs), ``scheduler`` (time and concurrency), ``metrics`` (export),
``pools`` (configuration to pools). Importing the package is cheap: each name
loads its module on first use.
"""

from typing import TYPE_CHECKING

from agent.lazy import lazy_names

if TYPE_CHECKING:
    from agent.health.config import (
        Check,
        CheckKey,
        Member,
        MinHealthy,
        Pool,
        PoolPolicy,
        SorryServer,
        Target,
        check_key,
        member,
    )
    from agent.health.core import CheckState, MemberHealth, PoolDecision, Result
    from agent.health.pools import pools_of
    from agent.health.scheduler import OnceResult, Scheduler, check_once

# Imported on first use: the configuration loader needs the value types of
# ``config`` only, not the probes, the scheduler and what they import.
__getattr__ = lazy_names(
    __name__,
    {
        **dict.fromkeys(
            (
                "Check",
                "CheckKey",
                "Member",
                "MinHealthy",
                "Pool",
                "PoolPolicy",
                "SorryServer",
                "Target",
                "check_key",
                "member",
            ),
            "config",
        ),
        **dict.fromkeys(("CheckState", "MemberHealth", "PoolDecision", "Result"), "core"),
        "pools_of": "pools",
        **dict.fromkeys(("OnceResult", "Scheduler", "check_once"), "scheduler"),
    },
)

__all__ = [
    "Check",
    "CheckKey",
    "CheckState",
    "Member",
    "MemberHealth",
    "MinHealthy",
    "OnceResult",
    "Pool",
    "PoolDecision",
    "PoolPolicy",
    "Result",
    "Scheduler",
    "SorryServer",
    "Target",
    "check_key",
    "check_once",
    "member",
    "pools_of",
]
