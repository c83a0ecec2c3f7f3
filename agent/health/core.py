"""The health decision, pure: rise/fall per check, health per real server, weights per pool.

This module owns every rule that turns probe results into what the kernel should
carry: HAProxy's rise/fall counting and its three intervals, dynamic weights,
"healthy only when every check passes", ``on_failure``, the slow-start ramp, the
pool floor, and keepalived's quorum with hysteresis (lost below ``quorum -
hysteresis``, regained at ``quorum + hysteresis``, and at start met only at
``quorum + hysteresis``, as keepalived's ``set_quorum_states`` does). It is fed results and
``now`` (a monotonic time in seconds) and returns new frozen values; it must
never do I/O, read a clock, log, or keep mutable state of its own, so the
scheduler, ``check-health`` and the tests drive it alike.

Rise/fall (HAProxy, ``doc/configuration.txt`` 5.2): a check that is up goes down
after ``fall`` consecutive failures, one that is down goes up after ``rise``
consecutive successes; a result that agrees with the state resets the count.
The next probe comes after ``interval`` when settled up, ``down_interval`` when
settled down, ``fast_interval`` while a transition is under way (either way).
keepalived's ``retry`` is not this: one success brings its DOWN server straight back.

Dynamic weights are a function of the last answer, never accumulated
(keepalived #2720: ``misc_dynamic`` weights grew after timeouts): exec exit
status 2..255 is the weight ``status - 2``; an agent's ``75%`` is 75 % of the
configured weight, ``drain`` weight 0 while up. A failed probe keeps the weight
of the last answer until ``fall`` takes the check down.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from agent.health.config import Check, CheckKey, Member, Pool

AGENT_WORDS: Final = ("up", "ready", "down", "drain", "maint", "stopped", "fail")
RAMP_STEP: Final = 1.0  # seconds between two slow-start weight changes, at least


@dataclass(frozen=True, slots=True)
class DynamicWeight:
    """A weight reported by the real server itself (exec exit status, agent answer)."""

    absolute: int | None = None  # exec: exit status - 2
    percent: int | None = None  # agent: "75%" of the configured weight
    drain: bool = False  # agent: up, weight 0
    maint: bool = False  # agent: out at once, whatever rise/fall say

    def apply(self, configured: int) -> int:
        if self.drain:
            return 0
        if self.absolute is not None:
            return self.absolute
        if self.percent is not None:
            return (configured * self.percent + 50) // 100  # HAProxy rounds to nearest
        return configured


@dataclass(frozen=True, slots=True)
class Result:
    """One probe's outcome: pass or fail, a short reason, how long it took."""

    ok: bool
    reason: str
    duration: float = 0.0
    weight: DynamicWeight | None = None


def exec_result(status: int, *, dynamic: bool, duration: float = 0.0) -> Result:
    """An exec check's exit status as a result (keepalived's ``misc_dynamic`` when asked)."""
    if status == 0:
        return Result(True, "exit 0", duration)
    if dynamic and status == 1:
        return Result(False, "exit 1", duration)
    if dynamic and 2 <= status <= 255:
        return Result(True, f"exit {status}", duration, DynamicWeight(absolute=status - 2))
    return Result(False, f"exit {status}", duration)


def agent_result(line: bytes, duration: float = 0.0) -> Result:
    """HAProxy's agent-check answer (one line of words) as a result.

    ``75%`` sets the weight, ``up``/``ready`` pass (``ready`` also clears a
    drain or maint), ``down``/``stopped``/``fail`` fail (counted by rise/fall),
    ``drain`` passes at weight 0, ``maint`` takes the server out at once. Words
    may be combined (``up 50%``); unknown words are ignored, as HAProxy does. An
    answer with no word the agent understands fails with reason ``agent: ...``.
    """
    words = line.decode("ascii", "replace").replace(",", " ").lower().split()
    percent: int | None = None
    state: str | None = None
    for w in words:
        if w.endswith("%") and w[:-1].isdigit():
            percent = min(int(w[:-1]), 256)  # HAProxy caps relative weights at 256 %
        elif w in AGENT_WORDS:
            state = w
    if percent is None and state is None:
        return Result(False, f"agent: {line[:40].decode('ascii', 'replace').strip()!r}", duration)
    if state in ("down", "stopped", "fail"):
        return Result(False, f"agent {state}", duration)
    if state == "maint":
        return Result(True, "agent maint", duration, DynamicWeight(percent=percent, maint=True))
    if state == "drain":
        return Result(True, "agent drain", duration, DynamicWeight(drain=True))
    reason = f"agent {percent}%" if percent is not None else f"agent {state}"
    return Result(True, reason, duration, DynamicWeight(percent=percent))


@dataclass(frozen=True, slots=True)
class CheckState:
    """One check's rise/fall state.

    ``streak`` counts consecutive results that disagree with ``up``;
    ``changed_at`` is when ``up`` last flipped (None: it never did, the state is
    the initial one, and recovery from it is not slow-started). ``last`` and
    ``probes`` are the last result and the count of results that were not a
    plain success of a settled-up check: that common case returns the same
    state object, so it costs no allocation.
    """

    up: bool
    streak: int = 0
    changed_at: float | None = None
    last: Result | None = None
    weight: DynamicWeight | None = None
    probes: int = 0


def initial_state(up: bool) -> CheckState:
    return CheckState(up=up)


def observe(state: CheckState, check: Check, result: Result, now: float) -> CheckState:
    """The state after ``result``: HAProxy's consecutive rise/fall count."""
    ok = result.ok
    if ok and state.up and not state.streak and result.weight == state.weight:
        return state  # the common case, settled up: nothing to record
    weight = result.weight if ok else state.weight
    probes = state.probes + 1
    if ok == state.up:
        return CheckState(state.up, 0, state.changed_at, result, weight, probes)
    streak = state.streak + 1
    if streak >= (check.rise if result.ok else check.fall):
        return CheckState(result.ok, 0, now, result, weight, probes)
    return CheckState(state.up, streak, state.changed_at, result, weight, probes)


def next_interval(state: CheckState, check: Check) -> float:
    """Seconds until the next probe: ``fast_interval`` while changing, else by state."""
    if state.streak:
        return check.fast
    return check.interval if state.up else check.down


def carry_over(
    old: Mapping[CheckKey, CheckState], wanted: Iterable[tuple[CheckKey, bool]]
) -> dict[CheckKey, CheckState]:
    """States for a reloaded set of checks: unchanged identities keep theirs, in O(n).

    ``wanted`` pairs each check's identity with its initial state (up or not)
    for a check the old set did not have.
    """
    out: dict[CheckKey, CheckState] = {}
    for key, up in wanted:
        if key not in out:
            have = old.get(key)
            out[key] = have if have is not None else CheckState(up=up)
    return out


@dataclass(frozen=True, slots=True)
class MemberHealth:
    """A real server's health from all its checks: healthy only when all pass."""

    up: bool
    since: float | None  # when it became what it is; None: since start (initial state)
    weight: int  # its weight when in the pool, dynamic weights applied, before slow start
    maint: bool = False
    reason: str = ""


def member_health(member: Member, states: Mapping[CheckKey, CheckState]) -> MemberHealth:
    up = True
    maint = False
    weight = member.weight
    up_since: float | None = None
    down_since: float | None = None
    reasons: list[str] = []
    for key in member.checks:
        s = states.get(key)
        if s is None:
            continue
        if s.weight is not None:
            maint = maint or s.weight.maint
            weight = min(weight, s.weight.apply(member.weight)) if s.up else weight
        if s.up:
            if s.changed_at is not None and (up_since is None or s.changed_at > up_since):
                up_since = s.changed_at
        else:
            up = False
            if s.last is not None:
                reasons.append(f"{key.type}: {s.last.reason}")
            if s.changed_at is not None and (down_since is None or s.changed_at < down_since):
                down_since = s.changed_at
    if maint:
        reasons.append("maint")
    if up and not maint:
        return MemberHealth(True, up_since, weight)
    return MemberHealth(False, down_since, weight, maint, "; ".join(reasons))


@dataclass(frozen=True, slots=True)
class PoolState:
    """What a pool remembers between decisions (quorum has hysteresis)."""

    quorum_up: bool | None = None  # None: no decision yet
    held: frozenset[tuple[str, int]] = frozenset()


@dataclass(frozen=True, slots=True)
class PoolDecision:
    """The weights a virtual server's real servers should carry now, and why.

    ``weights[key]`` is None for a real server that must be out of the table
    (``on_failure: remove``); ``held`` lists failing servers kept in by the
    floor; ``next_change`` is when a slow-start ramp changes a weight next.
    """

    weights: dict[tuple[str, int], int | None]
    healthy: frozenset[tuple[str, int]]
    held: tuple[tuple[str, int], ...]
    floor: int
    healthy_weight: int
    quorum_up: bool
    sorry: bool
    events: tuple[str, ...]
    next_change: float | None
    state: PoolState


def ramp(
    weight: int, since: float | None, slow_start: float, now: float
) -> tuple[int, float | None]:
    """A recovered server's weight during slow start, and when it next changes.

    Linear over ``slow_start`` seconds from ``since``, at least 1 (HAProxy's
    ``slowstart``); a server up since start (``since`` None) is not ramped.
    """
    if slow_start <= 0 or since is None or weight <= 0:
        return weight, None
    elapsed = now - since
    if elapsed >= slow_start:
        return weight, None
    current = max(1, math.ceil(weight * max(elapsed, 0.0) / slow_start))
    if current >= weight:
        return weight, since + slow_start
    step = since + slow_start * current / weight  # weight is ``current`` up to here
    if step <= now:
        step = since + slow_start * (current + 1) / weight
    # no faster than one weight change a second per server (the kernel sees each one)
    return current, min(max(step, now + RAMP_STEP), since + slow_start)


def decide(
    pool: Pool, health: Mapping[tuple[str, int], MemberHealth], prev: PoolState, now: float
) -> PoolDecision:
    """The pool's weights from its members' health, its policy and its previous state."""
    policy = pool.policy
    failed_weight: int | None = None if policy.on_failure == "remove" else 0
    weights: dict[tuple[str, int], int | None] = {}
    healthy: set[tuple[str, int]] = set()
    failing: list[tuple[float, int, Member, MemberHealth]] = []
    healthy_weight = 0
    next_change: float | None = None
    for i, m in enumerate(pool.members):
        h = health.get(m.key) or MemberHealth(True, None, m.weight)
        if h.up:
            healthy.add(m.key)
            healthy_weight += h.weight
            w, change = ramp(h.weight, h.since, policy.slow_start, now)
            weights[m.key] = w
            if change is not None and (next_change is None or change < next_change):
                next_change = change
        else:
            weights[m.key] = failed_weight
            if not h.maint:  # an operator's (or agent's) maintenance is never held
                failing.append((-math.inf if h.since is None else h.since, i, m, h))
    floor = policy.min_healthy.floor(len(pool.members)) if policy.min_healthy else 0
    held: list[tuple[str, int]] = []
    if len(healthy) < floor and failing:
        # PyBal's depool threshold: the servers that failed last stay in, so the
        # first to fail are the ones drained.
        failing.sort(key=lambda f: (-f[0], f[1]))
        for _, _, m, h in failing[: floor - len(healthy)]:
            weights[m.key] = h.weight
            held.append(m.key)
    events: list[str] = []
    held_set = frozenset(held)
    if held_set and not prev.held:
        events.append("floor_held")
    elif prev.held and not held_set:
        events.append("floor_released")
    if prev.quorum_up is None:
        # keepalived's start (``set_quorum_states``): met only at ``quorum + hysteresis``
        quorum_up = healthy_weight >= policy.quorum + policy.hysteresis
        if not quorum_up:
            events.append("quorum_down")
    elif prev.quorum_up:
        quorum_up = healthy_weight >= policy.quorum - policy.hysteresis
        if not quorum_up:
            events.append("quorum_down")
    else:
        quorum_up = healthy_weight >= policy.quorum + policy.hysteresis
        if quorum_up:
            events.append("quorum_up")
    return PoolDecision(
        weights=weights,
        healthy=frozenset(healthy),
        held=tuple(held),
        floor=floor,
        healthy_weight=healthy_weight,
        quorum_up=quorum_up,
        sorry=not quorum_up and policy.sorry_server is not None,
        events=tuple(events),
        next_change=next_change,
        state=PoolState(quorum_up, held_set),
    )
