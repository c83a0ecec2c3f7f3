"""The Prometheus view of a health ``Scheduler``: a collector, registered by its caller.

This module owns the health metric names and labels. It only reads the
scheduler's plain counters and decisions at scrape time; it must never change
them, probe, or register itself anywhere (the daemon decides that).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the daemon registers the collector before any check is configured
    from agent.health.scheduler import Scheduler

from agent.histogram import add_to

PREFIX = "lvs_agent_health"


class HealthCollector:
    """Yields per real server health and weight, probe counters and the scheduler's lateness."""

    def __init__(self, scheduler: Scheduler | None = None) -> None:
        self.scheduler = scheduler
        #: ``metrics.per_real_server``: ``full`` exports the per real server series;
        #: ``aggregate`` and ``off`` only the per-pool ones.
        self.per_real_server = "full"

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        rs_labels = ["virtual_server", "remote_address", "remote_port"]
        healthy = GaugeMetricFamily(
            f"{PREFIX}_real_server_up",
            "1 when every check of the real server passes.",
            labels=rs_labels,
        )
        weight = GaugeMetricFamily(
            f"{PREFIX}_real_server_effective_weight",
            "Weight health implies (-1: out of the table).",
            labels=rs_labels,
        )
        held = GaugeMetricFamily(
            f"{PREFIX}_real_server_held",
            "1 when a failing real server is kept in by the pool floor (min_healthy).",
            labels=rs_labels,
        )
        floor = GaugeMetricFamily(
            f"{PREFIX}_pool_floor",
            "Real servers min_healthy keeps in the pool.",
            labels=["virtual_server"],
        )
        floor_held = GaugeMetricFamily(
            f"{PREFIX}_pool_floor_held",
            "Failing real servers held in by the floor.",
            labels=["virtual_server"],
        )
        healthy_weight = GaugeMetricFamily(
            f"{PREFIX}_pool_healthy_weight",
            "Summed weight of healthy real servers.",
            labels=["virtual_server"],
        )
        members_up = GaugeMetricFamily(
            f"{PREFIX}_pool_real_servers_up",
            "Real servers of the pool whose every check passes.",
            labels=["virtual_server"],
        )
        members = GaugeMetricFamily(
            f"{PREFIX}_pool_real_servers",
            "Real servers of the pool.",
            labels=["virtual_server"],
        )
        quorum = GaugeMetricFamily(
            f"{PREFIX}_pool_quorum_up",
            "1 while the quorum is met (else the sorry server).",
            labels=["virtual_server"],
        )
        probes = CounterMetricFamily(
            f"{PREFIX}_probes",
            "Probes finished, by check type and result.",
            labels=["type", "result"],
        )
        failures = CounterMetricFamily(
            f"{PREFIX}_probe_failures",
            "Failed probes, by check type and reason.",
            labels=["type", "reason"],
        )
        transitions = CounterMetricFamily(
            f"{PREFIX}_transitions",
            "Check state changes, by check type and state entered.",
            labels=["type", "state"],
        )
        durations = HistogramMetricFamily(
            f"{PREFIX}_probe_duration_seconds",
            "Probe durations, by check type.",
            labels=["type"],
        )
        lateness = HistogramMetricFamily(
            f"{PREFIX}_schedule_lateness_seconds",
            "How late probes started against their schedule (overload stretches intervals).",
            labels=[],
        )
        inconclusive = CounterMetricFamily(
            f"{PREFIX}_probes_inconclusive",
            "Timeouts not counted against the target: the checker's loop stalled meanwhile.",
            labels=["type"],
        )
        loop_lag = HistogramMetricFamily(
            f"{PREFIX}_loop_lag_seconds",
            "How late the scheduler's timer fired (the loop's own responsiveness).",
            labels=[],
        )
        in_flight = GaugeMetricFamily(f"{PREFIX}_probes_in_flight", "Probes running now.")
        oldest = GaugeMetricFamily(
            f"{PREFIX}_oldest_due_seconds",
            "How overdue the most overdue unstarted check is (grows when the loop stalls).",
        )
        s = self.scheduler
        if s is not None:
            states = s.states()
            per_real_server = self.per_real_server == "full"
            from agent.health.core import member_health

            for name, d in s.decisions().items():
                pool = s.pool(name)
                if pool is None:
                    continue
                held_set = set(d.held)
                up = 0
                for m in pool.members:
                    labels = [name, m.address, str(m.port)]
                    h = member_health(m, states)
                    up += h.up
                    if not per_real_server:
                        continue
                    healthy.add_metric(labels, 1.0 if h.up else 0.0)
                    w = d.weights.get(m.key)
                    weight.add_metric(labels, -1.0 if w is None else float(w))
                    held.add_metric(labels, 1.0 if m.key in held_set else 0.0)
                members_up.add_metric([name], up)
                members.add_metric([name], len(pool.members))
                floor.add_metric([name], d.floor)
                floor_held.add_metric([name], len(d.held))
                healthy_weight.add_metric([name], d.healthy_weight)
                quorum.add_metric([name], 1.0 if d.quorum_up else 0.0)
            st = s.stats
            for (t, ok), n in st.probes.items():
                probes.add_metric([t, "pass" if ok else "fail"], n)
            for (t, reason), n in st.failures.items():
                failures.add_metric([t, reason], n)
            for (t, state), n in st.transitions.items():
                transitions.add_metric([t, state], n)
            for t, hist in st.durations.items():
                add_to(durations, [t], hist)
            add_to(lateness, [], st.lateness)
            add_to(loop_lag, [], st.loop_lag)
            for t, n in st.inconclusive.items():
                inconclusive.add_metric([t], n)
            in_flight.add_metric([], s.in_flight)
            oldest.add_metric([], s.oldest_due())
        yield from (
            healthy,
            weight,
            held,
            floor,
            floor_held,
            healthy_weight,
            members_up,
            members,
            quorum,
            probes,
            failures,
            transitions,
            inconclusive,
            durations,
            lateness,
            loop_lag,
            in_flight,
            oldest,
        )
