"""The lock section, election: quorum on VRRP instances, and witness files."""

from __future__ import annotations

import textwrap

import pytest

from agent.config import ConfigError, parse_config

LOCK = """\
lock:
  cluster: lb-prod-1
  listen: 10.0.0.11:6741
  peers: {director1: 10.0.0.11:6741, director2: 10.0.0.12:6741, witness1: 10.0.0.13:6741}
  key_file: /etc/lvs-agent/cluster.key
  lease: 1s
"""

INSTANCES = """\
vrrp_instances:
  - {name: web, interface: eth0, vrid: 1, virtual_ips: [192.0.2.1], election: quorum}
  - {name: gw, interface: eth1, vrid: 2, virtual_ips: [10.0.1.1], election: quorum}
  - {name: plain, interface: eth0, vrid: 3, virtual_ips: [192.0.2.3]}
"""


def errors(text: str, *, witness: bool = False) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), "config.yaml", witness=witness)
    return [str(p) for p in info.value.problems]


def test_issue_example_with_quorum_instances() -> None:
    c = parse_config(LOCK + INSTANCES)
    assert c.lock is not None
    assert c.lock.cluster == "lb-prod-1" and c.lock.node_id == "director1"
    assert c.lock.lease == 1.0 and str(c.lock.key_file) == "/etc/lvs-agent/cluster.key"
    assert str(c.lock.state_dir) == "/var/lib/lvs-agent"  # the agent's own state_dir
    assert c.lock.leases == ("web", "gw")
    web, _gw, plain = c.vrrp.vrrp_instances
    assert (web.election, web.lease) == ("quorum", "web")
    assert (plain.election, plain.lease) == ("vrrp", "")


def test_sync_group_is_one_lease_named_after_the_group() -> None:
    c = parse_config(
        LOCK + INSTANCES + "vrrp_sync_groups:\n  - {name: site, instances: [web, gw]}\n"
    )
    assert c.lock is not None and c.lock.leases == ("site",)
    assert [i.lease for i in c.vrrp.vrrp_instances] == ["site", "site", ""]


def test_no_lock_section_no_lock() -> None:
    c = parse_config(INSTANCES.replace(", election: quorum", ""))
    assert c.lock is None


def test_quorum_without_lock_section() -> None:
    first, second = errors(INSTANCES)
    assert first.startswith("config.yaml:2: vrrp_instances[0].election:")
    assert second.startswith("config.yaml:3: vrrp_instances[1].election:")
    assert "needs a 'lock' section" in first


def test_unknown_election_with_hint() -> None:
    (problem,) = errors(LOCK + INSTANCES.replace("election: quorum}", "election: qorum}", 1))
    assert "vrrp_instances[0].election" in problem and "did you mean 'quorum'" in problem


def test_mixed_sync_group() -> None:
    text = LOCK + INSTANCES + "vrrp_sync_groups:\n  - {name: site, instances: [web, plain]}\n"
    (problem,) = errors(text)
    assert "vrrp_sync_groups[0].instances" in problem and "mixes election" in problem


@pytest.mark.parametrize(
    ("edit", "replacement", "where", "words"),
    [
        ("  lease: 1s\n", "  leese: 1s\n", "lock.leese", "did you mean 'lease'"),
        ("  lease: 1s\n", "  lease: 10ms\n", "lock.lease", "must be 200ms..1h"),
        ("  listen: 10.0.0.11:6741\n", "  listen: lb1:6741\n", "lock.listen", "IP address"),
        ("  listen: 10.0.0.11:6741\n", "  listen: 10.0.0.99:6741\n", "lock.listen", "node_id"),
        ("/etc/lvs-agent/cluster.key", "cluster.key", "lock.key_file", "absolute path"),
        ("  cluster: lb-prod-1\n", "  cluster: 'lb prod'\n", "lock.cluster", "letters"),
        ("director2: 10.0.0.12:6741", "director2: 10.0.0.11", "lock.peers.director2", "also"),
        ("director2: 10.0.0.12:6741", "director2: {}", "lock.peers.director2", "string"),
        ("  lease: 1s\n", "  lease: 1s\n  guard: 2s\n", "lock.guard", "guard must be in"),
        ("  lease: 1s\n", "  node_id: nobody\n", "lock.node_id", "not in peers"),
    ],
)
def test_bad_lock_values(edit: str, replacement: str, where: str, words: str) -> None:
    found = errors(LOCK.replace(edit, replacement) + INSTANCES)
    assert any(where + ":" in p and words in p for p in found), found
    assert all(p.startswith("config.yaml:") for p in found)


def test_missing_lock_keys_all_reported() -> None:
    found = errors("lock: {cluster: c}\n")
    text = "\n".join(found)
    for key in ("listen", "peers", "key_file"):
        assert f"missing required key {key!r}" in text


def test_witness_file_with_several_clusters() -> None:
    text = """\
    witness:
      clusters:
        - cluster: lb-prod-1
          listen: 10.0.0.13:6741
          peers: {d1: 10.0.0.11:6741, d2: 10.0.0.12:6741, w: 10.0.0.13:6741}
          key_file: /etc/lvs-agent/prod1.key
        - cluster: lb-prod-2
          listen: 10.0.0.13:6742
          node_id: w
          peers: {d1: 10.0.2.11:6741, d2: 10.0.2.12:6741, w: 10.0.0.13:6742}
          key_file: /etc/lvs-agent/prod2.key
          lease: 200ms
    """
    c = parse_config(textwrap.dedent(text), "w.yaml", witness=True)
    assert [w.cluster for w in c.witness] == ["lb-prod-1", "lb-prod-2"]
    assert c.witness[1].lease == 0.2 and c.witness[0].node_id == "w"


def test_witness_file_needs_a_cluster() -> None:
    (problem,) = errors("state_dir: /tmp/x\n", witness=True)
    assert "a witness needs" in problem


def test_witness_key_only_for_witness() -> None:
    (problem,) = errors("witness: {clusters: []}\n")
    assert "witness" in problem and "unknown key" in problem
