"""metrics.per_real_server: what each mode exports, and the IPVS statistics' age."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from agent.config.loader import parse_config
from agent.config.reader import ConfigError
from agent.ipvs.model import (
    AF_INET,
    Dest,
    DestKey,
    KernelDest,
    KernelService,
    Service,
    ServiceKey,
    Stats,
)
from agent.metrics import AgentMetrics


def table() -> dict[ServiceKey, KernelService]:
    tcp = ServiceKey(AF_INET, 6, "192.0.2.100", 80)
    mark = ServiceKey(AF_INET, 0, "", 0, 10)
    d1 = Dest(DestKey(AF_INET, "10.0.1.21", 8080), weight=5)
    d2 = Dest(DestKey(AF_INET, "10.0.1.22", 8080), weight=3)
    return {
        tcp: KernelService(
            Service(tcp, "rr"),
            {
                d1.key: KernelDest(d1, 3, 4, 0, Stats(1, 2, 3, 4, 5)),
                d2.key: KernelDest(d2, 7, 1, 0, Stats(1, 2, 3, 4, 5)),
            },
            Stats(10, 20, 30, 40, 50),
        ),
        mark: KernelService(Service(mark, "sh"), {d1.key: KernelDest(d1)}),
    }


def families(text: str) -> set[str]:
    """Metric families with at least one sample."""
    return {m.group(1) for m in re.finditer(r"^(lvs_agent_[a-z_]+)[{ ]", text, re.M)}


TCP = 'local_address="192.0.2.100",local_mark="",local_port="80",proto="TCP"'


def scrape(mode: str) -> str:
    metrics = AgentMetrics()
    metrics.ipvs.table = table()
    metrics.set_per_real_server(mode)
    return metrics.exposition().decode()


def test_full_exports_every_real_server_and_the_service_sums() -> None:
    text = scrape("full")
    assert 'remote_address="10.0.1.22"' in text
    assert f"lvs_agent_ipvs_service_connections_active{{{TCP}}} 10.0" in text
    assert f"lvs_agent_ipvs_service_connections_inactive{{{TCP}}} 5.0" in text
    assert f"lvs_agent_ipvs_service_weight{{{TCP}}} 8.0" in text
    assert f"lvs_agent_ipvs_service_real_servers{{{TCP}}} 2.0" in text


def test_aggregate_keeps_the_service_sums_only() -> None:
    full, aggregate = families(scrape("full")), families(scrape("aggregate"))
    backend = {n for n in full if n.startswith("lvs_agent_ipvs_backend_")}
    assert len(backend) == 8  # 5 counters (as _total), active, inactive, weight
    assert aggregate == full - backend
    assert f"lvs_agent_ipvs_service_weight{{{TCP}}} 8.0" in scrape("aggregate")


def test_off_keeps_the_kernels_service_counters_only() -> None:
    off = families(scrape("off"))
    assert not {n for n in off if n.startswith("lvs_agent_ipvs_backend_")}
    assert "lvs_agent_ipvs_service_weight" not in off
    assert "lvs_agent_ipvs_service_real_servers" not in off
    assert "lvs_agent_ipvs_service_connections_total" in off
    assert "lvs_agent_ipvs_services" in off


def test_the_stats_age_counts_from_the_reconcile_that_read_them() -> None:
    now = [100.0]
    metrics = AgentMetrics()
    metrics.ipvs.clock = lambda: now[0]
    assert "\nlvs_agent_ipvs_stats_age_seconds " not in metrics.exposition().decode()

    outcome = SimpleNamespace(  # the parts observe_reconcile reads
        kernel=table(),
        failures=[],
        sysctl_errors=[],
        ok=True,
        plan=SimpleNamespace(draining=0),
        ops_by_kind=dict,
    )
    metrics.observe_reconcile(outcome, 2.5)  # type: ignore[arg-type]
    now[0] = 130.0
    assert "\nlvs_agent_ipvs_stats_age_seconds 32.5" in metrics.exposition().decode()


def test_health_follows_the_mode() -> None:
    from agent.health.config import Check, MinHealthy, Pool, PoolPolicy, member
    from agent.health.scheduler import Scheduler

    check = Check("tcp")

    pool = Pool(
        "web",
        tuple(member(f"10.0.1.{i}", 80, 3, (check,)) for i in (1, 2)),
        PoolPolicy(min_healthy=MinHealthy(1)),
    )
    metrics = AgentMetrics()
    metrics.health.scheduler = Scheduler([pool])
    full = metrics.exposition().decode()
    assert "lvs_agent_health_real_server_up{" in full
    assert 'lvs_agent_health_pool_real_servers{virtual_server="web"} 2.0' in full
    metrics.set_per_real_server("aggregate")
    aggregate = metrics.exposition().decode()
    assert "lvs_agent_health_real_server_up{" not in aggregate
    assert 'lvs_agent_health_pool_real_servers{virtual_server="web"} 2.0' in aggregate
    assert 'lvs_agent_health_pool_real_servers_up{virtual_server="web"}' in aggregate


BASE = "virtual_servers: []\n"


@pytest.mark.parametrize("mode", ["full", "aggregate", "off"])
def test_the_key_reads_each_mode(mode: str) -> None:
    config = parse_config(f"metrics: {{per_real_server: {mode}}}\n{BASE}")
    assert config.metrics_per_real_server == mode


def test_the_default_is_full_and_a_typo_is_refused() -> None:
    assert parse_config(BASE).metrics_per_real_server == "full"
    with pytest.raises(ConfigError) as caught:
        parse_config(f"metrics: {{per_real_server: aggregated}}\n{BASE}")
    assert "metrics.per_real_server" in str(caught.value)


def test_a_witness_refuses_it() -> None:
    doc = (
        "metrics: {per_real_server: off}\n"
        "lock: {cluster: c1, listen: '10.0.0.13:6741', key_file: /etc/k,\n"
        "       peers: {d1: '10.0.0.11:6741', d2: '10.0.0.12:6741', w: '10.0.0.13:6741'}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(doc, witness=True)
    assert "a witness exports no real servers" in str(caught.value)
