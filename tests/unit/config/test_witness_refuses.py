"""A witness's file refuses the director's keys it would not use (nothing ignored)."""

from __future__ import annotations

import pytest

from agent.config.loader import WITNESS_REFUSES, parse_config
from agent.config.reader import ConfigError

WITNESS = """\
state_dir: /var/lib/lvs-witness
lock: {cluster: c, listen: "10.0.0.3:6741", key_file: /etc/lvs-agent/c.key,
       peers: {a: "10.0.0.1:6741", b: "10.0.0.2:6741", w: "10.0.0.3:6741"}}
"""

VALUES = {
    "reconcile_interval": "5s",
    "ipvs": "{drain_timeout: 10s}",
    "virtual_servers": "[]",
    "vrrp_instances": "[]",
    "vrrp_sync_groups": "[]",
}


def test_the_plain_witness_file_is_valid() -> None:
    assert len(parse_config(WITNESS, "w.yaml", witness=True).witness) == 1


@pytest.mark.parametrize("key", WITNESS_REFUSES)
def test_a_director_key_in_a_witness_file_is_refused_with_its_line(key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(WITNESS + f"{key}: {VALUES[key]}\n", "w.yaml", witness=True)
    assert f"w.yaml:4: {key}: a witness runs no IPVS or VRRP" in str(caught.value)
