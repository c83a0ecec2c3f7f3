"""Trackers: what turns link states and script results into a priority and a fault flag.

This module owns keepalived's tracking semantics as pure logic:

- a tracker is OK or failing; a script flips only after ``rise`` consecutive
  successes (failing -> OK) or ``fall`` consecutive failures (OK -> failing);
- weight 0: while failing, the instance is in FAULT;
- weight > 0 is added to the priority while OK; weight < 0 is added while failing;
- the effective priority is clamped to 1..254; 255 (address owner) survives only
  when the configured priority is 255 and no tracker takes anything off it.

It never runs scripts, reads links or keeps time: the shell runs each script every
``interval`` (killing it after ``timeout``, which counts as a failure), watches
links, and feeds the results here; ``InstanceTracking.event()`` is then handed
to the machine (or to its sync group).
"""

from __future__ import annotations

from collections.abc import Iterable

from agent.vrrp.config import TrackInterfaceConfig, TrackScriptConfig
from agent.vrrp.machine import TrackingChanged
from agent.vrrp.packet import PRIORITY_OWNER


class ScriptTracker:
    """rise/fall hysteresis over a script's exit statuses."""

    def __init__(self, config: TrackScriptConfig) -> None:
        self.config = config
        self.ok = not config.init_fail
        self._streak = 0  # consecutive results that disagree with ``ok``

    @property
    def timeout(self) -> float:
        return self.config.timeout if self.config.timeout is not None else self.config.interval

    def record(self, success: bool) -> bool:
        """Add one run's result; True when the tracker flipped."""
        if success == self.ok:
            self._streak = 0
            return False
        self._streak += 1
        needed = self.config.rise if success else self.config.fall
        if self._streak >= max(needed, 1):
            self.ok = success
            self._streak = 0
            return True
        return False


class InterfaceTracker:
    """A link that is up (OK) or down (failing); no hysteresis, like keepalived."""

    def __init__(self, config: TrackInterfaceConfig, up: bool = True) -> None:
        self.config = config
        self.ok = up

    def record(self, up: bool) -> bool:
        changed = up != self.ok
        self.ok = up
        return changed


def _contribution(weight: int, ok: bool) -> int:
    if weight > 0 and ok:
        return weight
    if weight < 0 and not ok:
        return weight
    return 0


def effective_priority(base: int, delta: int) -> int:
    """Base priority plus tracker weights, clamped to 1..254 (255 kept only untouched)."""
    if base == PRIORITY_OWNER and delta >= 0:
        return PRIORITY_OWNER
    return max(1, min(PRIORITY_OWNER - 1, base + delta))


class InstanceTracking:
    """All trackers of one instance: its effective priority and whether it is in FAULT."""

    def __init__(
        self,
        base_priority: int,
        interfaces: Iterable[TrackInterfaceConfig] = (),
        scripts: Iterable[TrackScriptConfig] = (),
    ) -> None:
        self.base_priority = base_priority
        self.interfaces = {c.name: InterfaceTracker(c) for c in interfaces}
        self.scripts = {c.name: ScriptTracker(c) for c in scripts}

    def set_link(self, ifname: str, up: bool) -> bool:
        """Record a link state; True when the instance's view changed."""
        tracker = self.interfaces.get(ifname)
        return tracker.record(up) if tracker is not None else False

    def record_script(self, name: str, success: bool) -> bool:
        tracker = self.scripts.get(name)
        return tracker.record(success) if tracker is not None else False

    def _all(self) -> list[tuple[int, bool]]:
        return [(t.config.weight, t.ok) for t in self.interfaces.values()] + [
            (t.config.weight, t.ok) for t in self.scripts.values()
        ]

    @property
    def fault(self) -> bool:
        return any(weight == 0 and not ok for weight, ok in self._all())

    @property
    def priority(self) -> int:
        delta = sum(_contribution(weight, ok) for weight, ok in self._all())
        return effective_priority(self.base_priority, delta)

    def event(self) -> TrackingChanged:
        return TrackingChanged(self.priority, self.fault)
