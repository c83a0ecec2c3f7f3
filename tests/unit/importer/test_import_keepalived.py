"""import-keepalived: the reader, the translation, the YAML it writes and the command.

The keepalived files are tests/data/keepalived/*.conf (``keepalived -t`` accepts each:
tests/netns/test_import_keepalived.py). Every import must give YAML the loader
accepts, health checks included.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config.loader import parse_config
from agent.importer import KeepalivedSyntaxError, import_keepalived
from agent.importer.parser import Statement, parse_file

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "tests" / "data" / "keepalived"
FILES = sorted(DATA.glob("*.conf"))
# Every keyword the importer translates, and a file that shows it.
TRANSLATED = [
    "global_defs",
    "router_id",
    "vrrp_rt_priority",
    "checker_rt_priority",
    "lvs_timeouts",
    "vrrp_version",
    "vrrp_garp_master_delay",
    "vrrp_garp_master_repeat",
    "vrrp_garp_master_refresh",
    "vrrp_garp_lower_prio_repeat",
    "vrrp_garp_lower_prio_delay",
    "vrrp_script",
    "script",
    "interval",
    "timeout",
    "weight",
    "rise",
    "fall",
    "init_fail",
    "vrrp_instance",
    "interface",
    "virtual_router_id",
    "priority",
    "advert_int",
    "nopreempt",
    "preempt_delay",
    "unicast_peer",
    "authentication",
    "auth_type",
    "auth_pass",
    "virtual_ipaddress",
    "track_interface",
    "track_script",
    "notify",
    "garp_master_delay",
    "garp_master_repeat",
    "garp_master_refresh",
    "garp_lower_prio_repeat",
    "garp_lower_prio_delay",
    "version",
    "vrrp_sync_group",
    "group",
    "sync_group_tracking_weight",
    "virtual_server",
    "virtual_server_group",
    "lb_algo",
    "lb_kind",
    "persistence_timeout",
    "persistence_granularity",
    "protocol",
    "ops",
    "sorry_server",
    "quorum",
    "hysteresis",
    "alpha",
    "inhibit_on_failure",
    "delay_loop",
    "sh-port",
    "sh-fallback",
    "mh-port",
    "real_server",
    "weight",
    "uthreshold",
    "lthreshold",
    "TCP_CHECK",
    "HTTP_GET",
    "SSL_GET",
    "DNS_CHECK",
    "UDP_CHECK",
    "MISC_CHECK",
    "misc_path",
    "misc_timeout",
    "misc_dynamic",
    "connect_timeout",
    "retry",
    "delay_before_retry",
    "connect_port",
    "connect_ip",
    "bindto",
    "url",
    "path",
    "status_code",
    "regex",
    "virtualhost",
    "enable_sni",
    "type",
    "name",
    "payload",
    "require_reply",
]


def _keywords(statements: list[Statement]) -> set[str]:
    found: set[str] = set()
    for s in statements:
        found.add(s.keyword)
        found |= _keywords(s.children)
    return found


def checked(text: str) -> None:
    """The import passes the loader (what check-config runs before the host checks)."""
    parse_config(text, "imported.yaml")


@pytest.mark.parametrize("config_id", ["lb1", "lb2"])
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_file_imports_and_passes_the_loader(path: Path, config_id: str) -> None:
    result = import_keepalived(str(path), config_id)
    document = yaml.safe_load(result.yaml)
    assert isinstance(document, dict) and document
    checked(result.yaml)
    for skipped in result.skipped:
        assert skipped.why in ("not supported", "no equivalent", "differs")
        assert skipped.line > 0 and skipped.file


def test_the_files_cover_every_translated_keyword() -> None:
    seen: set[str] = set()
    for path in FILES:
        for config_id in ("lb1", "lb2"):
            seen |= _keywords(parse_file(str(path), config_id).statements)
    assert set(TRANSLATED) - seen == set()


def test_each_entry_names_its_keepalived_line() -> None:
    text = import_keepalived(str(DATA / "nat_web.conf"), "lb1").yaml
    entries = [line for line in text.splitlines() if re.match(r"\s*(- )?[a-z_]+: \S", line)]
    assert len(entries) > 40
    assert all(re.search(r"  # nat_web\.conf:\d+$", line) for line in entries)
    assert 'name: "tcp-10.90.0.100-80"  # nat_web.conf:12' in text
    assert "weight: 3  # nat_web.conf:26" in text


def _vs(path: str, config_id: str = "lb1") -> list[dict[str, Any]]:
    servers: list[dict[str, Any]] = yaml.safe_load(import_keepalived(path, config_id).yaml)[
        "virtual_servers"
    ]
    return servers


def test_virtual_server_translation() -> None:
    (vs,) = _vs(str(DATA / "nat_web.conf"))
    assert vs["protocol"] == "tcp" and vs["scheduler"] == "wrr" and vs["forwarding"] == "nat"
    assert vs["persistence"] == {"timeout": "2m", "netmask": "255.255.255.0"}
    assert vs["sorry_server"] == {"address": "10.90.1.99", "port": 8080}
    assert (vs["quorum"], vs["hysteresis"], vs["initial"], vs["on_failure"]) == (
        2,
        1,
        "down",
        "drain",
    )
    first, second, third = vs["real_servers"]
    assert first["weight"] == 3 and first["upper_threshold"] == 500
    # retry 2, delay_before_retry 1, delay_loop 3, connect_timeout 2
    assert first["health_checks"] == [
        {
            "type": "tcp",
            "interval": "3s",
            "timeout": "2s",
            "rise": 1,
            "fall": 3,
            "fast_interval": "1s",
            "down_interval": "3s",
        }
    ]
    healthz, ready = second["health_checks"]
    assert healthz["path"] == "/healthz" and healthz["expect_status"] == ["200-299", 304]
    assert ready["expect_body"] == "ok" and healthz["host"] == "web.example.org"
    assert healthz["connect_port"] == 8080 and healthz["fall"] == 4
    assert healthz["fast_interval"] == "500ms"
    (misc,) = third["health_checks"]
    assert misc["command"] == ["/bin/sh", "-c", "exit 0"] and misc["dynamic_weight"] is True
    assert misc["fall"] == 1 and misc["timeout"] == "2s"


def test_mixed_file_translation() -> None:
    fwmark, dns, https, v6 = _vs(str(DATA / "dr_mixed.conf"))
    assert fwmark["fwmark"] == 7 and fwmark["forwarding"] == "dr"
    assert fwmark["scheduler_flags"] == ["sh-port", "sh-fallback"]
    assert fwmark["on_failure"] == "remove"  # keepalived's default without inhibit_on_failure
    check = fwmark["real_servers"][0]["health_checks"][0]
    assert check["connect_address"] == "10.91.1.11" and check["source_address"] == "10.91.1.1"
    assert fwmark["real_servers"][1]["health_checks"][0]["interval"] == "2s"
    assert dns["protocol"] == "udp" and dns["one_packet"] is True
    assert dns["real_servers"][0]["health_checks"][0]["query_type"] == "A"
    assert dns["real_servers"][1]["health_checks"][0]["send"] == "ping"
    assert dns["real_servers"][1]["health_checks"][0]["expect"] == "^pong"
    tls = https["real_servers"][0]["health_checks"][0]
    assert tls["type"] == "https" and tls["tls_verify"] is False
    assert tls["host"] == "secure.example.org" and "tls_server_name" not in tls
    assert v6["address"] == "2001:db8:91::100" and v6["scheduler_flags"] == ["mh-port"]


def test_layered_file_reads_includes_variables_and_conditionals() -> None:
    servers = _vs(str(DATA / "layered.conf"), "lb1")
    assert [vs["address"] for vs in servers] == [
        "10.92.0.10",
        "10.92.0.11",
        "10.92.0.12",
        "10.92.0.20",
    ]
    assert [rs["address"] for rs in servers[0]["real_servers"]] == ["10.92.1.11", "10.92.1.12"]
    assert servers[0]["real_servers"][1]["weight"] == 4
    assert servers[0]["real_servers"][0]["port"] == 8080
    assert "persistence" not in servers[3]
    lb1 = yaml.safe_load(import_keepalived(str(DATA / "layered.conf"), "lb1").yaml)
    lb2 = yaml.safe_load(import_keepalived(str(DATA / "layered.conf"), "lb2").yaml)
    assert lb1["node"]["name"] == "lb1" and lb2["node"]["name"] == "lb2"
    assert _vs(str(DATA / "layered.conf"), "lb2")[3]["persistence"]["timeout"] == "30s"


def test_vrrp_translation() -> None:
    doc = yaml.safe_load(import_keepalived(str(DATA / "vrrp_pair.conf"), "lb1").yaml)
    front, back = doc["vrrp_instances"]
    assert front["version"] == 2  # keepalived's default, where the agent's is 3
    assert (front["vrid"], front["priority"], front["preempt"]) == (61, 150, False)
    assert front["auth_pass"] == "s3cret" and front["notify"] == "/bin/true"
    assert front["virtual_ips"] == ["10.93.0.100/24", "10.93.0.101/24"]
    assert front["track_interfaces"] == [{"name": "veth-back", "weight": -30}]
    script = front["track_scripts"][0]
    assert script == {
        "name": "check_web",
        "script": "/bin/true",
        "interval": "2s",
        "timeout": "1s",
        "rise": 2,
        "fall": 3,
        "init_fail": True,
        "weight": -20,
    }
    assert front["garp"] == {
        "repeat": 4,
        "delay": "2s",
        "refresh": "1m",
        "lower_prio_repeat": 1,
        "lower_prio_delay": "10s",
    }
    assert back["unicast_peers"] == ["10.93.1.3"] and back["preempt_delay"] == "5s"
    assert back["advert_interval"] == "2s" and back["track_scripts"][0]["weight"] == 10
    assert back["garp"]["repeat"] == 2 and back["garp"]["delay"] == "3s"
    assert doc["vrrp_sync_groups"] == [
        {"name": "lvs_pair", "instances": ["front", "back"], "notify": "/bin/true"}
    ]


def test_sync_group_without_tracking_weight_makes_tracker_weights_zero(tmp_path: Path) -> None:
    text = (DATA / "vrrp_pair.conf").read_text().replace("    sync_group_tracking_weight\n", "")
    (tmp_path / "k.conf").write_text(text)
    front, back = yaml.safe_load(import_keepalived(str(tmp_path / "k.conf"), "x").yaml)[
        "vrrp_instances"
    ]
    assert front["track_interfaces"][0]["weight"] == 0
    assert front["track_scripts"][0]["weight"] == 0 and back["track_scripts"][0]["weight"] == 0


def test_refused_keywords_are_listed_with_line_and_reason() -> None:
    result = import_keepalived(str(DATA / "refused.conf"), "lb1")
    got = {(s.keyword.split()[0], s.why) for s in result.skipped}
    for expected in [
        ("lvs_flush", "differs"),
        ("smtp_server", "no equivalent"),
        ("static_ipaddress", "not supported"),
        ("state", "differs"),
        ("notify_master", "differs"),
        ("auth_type", "not supported"),
        ("digest", "not supported"),
        ("SMTP_CHECK", "not supported"),
        ("warmup", "differs"),
        ("inhibit_on_failure", "differs"),
        ("10.94.0.100/24", "not supported"),
        ("10.94.0.102/24", "differs"),
    ]:
        assert expected in got
    state = next(s for s in result.skipped if s.keyword == "state")
    assert str(state).startswith("refused.conf:") and state.line == 20
    checked(result.yaml)


def test_quorum_commands_are_translated_as_command_lines(tmp_path: Path) -> None:
    conf = tmp_path / "k.conf"
    check = "    TCP_CHECK {\n    }\n"
    conf.write_text(
        "virtual_server 192.0.2.1 80 {\n"
        '  quorum_up "/usr/local/bin/up vs1"\n'
        "  quorum_down /usr/local/bin/down now\n"
        f"  real_server 10.0.0.1 80 {{\n{check}  }}\n"
        "}\n"
        "virtual_server 192.0.2.2 80 {\n"
        "  quorum_up /usr/local/bin/up\n"
        "  real_server 10.0.0.1 80 {\n  }\n"
        "}\n"
    )
    result = import_keepalived(str(conf), "x")
    first, second = yaml.safe_load(result.yaml)["virtual_servers"]
    assert first["quorum_up"] == "/usr/local/bin/up vs1"
    assert first["quorum_down"] == "/usr/local/bin/down now"
    assert "quorum_up" not in second  # no checker: the quorum never changes
    (skip,) = [s for s in result.skipped if s.keyword.startswith("quorum_up")]
    assert skip.why == "no equivalent" and "no checker" in str(skip)
    checked(result.yaml)


def test_real_time_priorities_become_the_loops(tmp_path: Path) -> None:
    """vrrp_rt_priority and checker_rt_priority: the agent runs both on one loop, so the
    higher one is its node.realtime_priority, whichever comes first."""
    conf = tmp_path / "k.conf"
    for first, second in (("vrrp", "checker"), ("checker", "vrrp")):
        conf.write_text(
            f"global_defs {{\n  {first}_rt_priority 20\n  {second}_rt_priority 5\n"
            "  router_id lb1\n}\n"
        )
        result = import_keepalived(str(conf), "x")
        assert yaml.safe_load(result.yaml)["node"] == {"name": "lb1", "realtime_priority": 20}
        (skip,) = result.skipped
        assert skip.keyword.startswith(f"{second}_rt_priority") and skip.why == "differs"
        checked(result.yaml)
    conf.write_text("global_defs {\n  vrrp_rt_priority 100\n}\n")
    (skip,) = import_keepalived(str(conf), "x").skipped
    assert skip.why == "not supported" and "1..99" in str(skip)


def test_without_checkers_only_what_acts_is_written(tmp_path: Path) -> None:
    """keepalived adds the sorry server of a virtual server without real servers (or
    whose weights miss quorum + hysteresis) at start and runs quorum_down; without a
    sorry server nor a checker, quorum, hysteresis, the commands and alpha do nothing."""
    conf = tmp_path / "k.conf"
    keys = "  quorum 2\n  hysteresis 1\n  alpha\n  quorum_down /bin/down\n"
    conf.write_text(
        "virtual_server 192.0.2.1 80 {\n  protocol TCP\n  sorry_server 10.0.9.9 80\n"
        f"{keys}}}\n"
        f"virtual_server 192.0.2.2 80 {{\n  protocol TCP\n{keys}"
        "  real_server 10.0.0.1 80 {\n  }\n}\n"
    )
    result = import_keepalived(str(conf), "x")
    sorry, bare = yaml.safe_load(result.yaml)["virtual_servers"]
    assert sorry["sorry_server"] == {"address": "10.0.9.9", "port": 80}
    assert (sorry["quorum"], sorry["hysteresis"], sorry["quorum_down"]) == (2, 1, "/bin/down")
    assert sorry["on_failure"] == "remove" and sorry["real_servers"] == []
    assert not {"quorum", "hysteresis", "quorum_down", "initial", "on_failure"} & set(bare)
    skipped = sorted((s.line, s.keyword, s.why) for s in result.skipped)
    assert skipped == [
        (6, "alpha", "no equivalent"),  # no checker: nothing starts down
        (11, "quorum", "no equivalent"),
        (12, "hysteresis", "no equivalent"),
        (13, "alpha", "no equivalent"),
        (14, "quorum_down", "no equivalent"),
    ], skipped
    checked(result.yaml)


def test_protocol_defaults_to_udp_as_keepalived_does(tmp_path: Path) -> None:
    conf = tmp_path / "k.conf"
    conf.write_text("virtual_server 192.0.2.1 53 {\n  real_server 10.0.0.1 53 {\n  }\n}\n")
    (vs,) = _vs(str(conf))
    assert vs["protocol"] == "udp" and vs["name"] == "udp-192.0.2.1-53"


def test_reader_rules(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.conf").write_text("include ../b.conf\n")
    (tmp_path / "b.conf").write_text('vrrp_instance "v 1" { ! comment { \n}\n')
    (tmp_path / "main.conf").write_text(
        "$X=1 # comment\n$Y=${X}0\n@me a $Y\n@^me b ${Y}\ninclude sub/*.conf\n"
        'c "quoted # not a comment" d\n'
    )
    statements = parse_file(str(tmp_path / "main.conf"), "me").statements
    assert [(s.keyword, s.args, s.file, s.line) for s in statements] == [
        ("a", ["10"], "main.conf", 3),
        ("vrrp_instance", ["v 1"], "b.conf", 1),
        ("c", ["quoted # not a comment", "d"], "main.conf", 6),
    ]
    other = parse_file(str(tmp_path / "main.conf"), "you").statements
    assert [s.keyword for s in other] == ["b", "vrrp_instance", "c"]


@pytest.mark.parametrize(
    "text",
    ["a {\n", "}\n", 'a "open\n', "include nowhere/*.conf extra\n"],
)
def test_invalid_input_raises(tmp_path: Path, text: str) -> None:
    conf = tmp_path / "k.conf"
    conf.write_text(text)
    with pytest.raises(KeepalivedSyntaxError):
        import_keepalived(str(conf), "x")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )


def test_command_exit_codes_and_output(tmp_path: Path) -> None:
    out = tmp_path / "out.yaml"
    left_out = run(
        "import-keepalived", str(DATA / "refused.conf"), "-o", str(out), "--config-id", "lb1"
    )
    assert left_out.returncode == 2 and left_out.stdout == ""
    assert "refused.conf:20: state: differs:" in left_out.stderr
    checked(out.read_text())
    check = run("check-config", "-c", str(out))
    assert check.returncode == 0 and "valid (1 virtual server, 2 real servers)" in check.stdout
    full = tmp_path / "full.conf"
    full.write_text(
        "virtual_server 192.0.2.1 80 {\n  protocol TCP\n  lb_algo rr\n"
        "  real_server 10.0.0.1 80 {\n    weight 2\n  }\n}\n"
    )
    done = run("import-keepalived", str(full))
    assert done.returncode == 0 and done.stderr == ""
    assert yaml.safe_load(done.stdout)["virtual_servers"][0]["real_servers"][0]["weight"] == 2
    twice = tmp_path / "twice.conf"
    twice.write_text(full.read_text() * 2)
    refused = run("import-keepalived", str(twice))
    assert refused.returncode == 1 and "duplicate virtual server" in refused.stderr
    missing = run("import-keepalived", str(tmp_path / "nope.conf"))
    assert missing.returncode == 1 and "cannot read" in missing.stderr
    assert "import-keepalived" in run("--help").stdout


def test_keepalived_corrections_are_carried_over(tmp_path: Path) -> None:
    conf = tmp_path / "k.conf"
    conf.write_text(
        "virtual_server 192.0.2.1 80 {\n  protocol TCP\n  ops\n  quorum 2\n  hysteresis 5\n"
        "  real_server 10.0.0.1 80 {\n    weight 2\n    TCP_CHECK {\n    }\n  }\n}\n"
    )
    result = import_keepalived(str(conf), "x")
    (vs,) = yaml.safe_load(result.yaml)["virtual_servers"]
    assert vs["hysteresis"] == 1 and "one_packet" not in vs
    assert [(s.keyword, s.why) for s in result.skipped] == [("ops", "differs")]
    checked(result.yaml)


def test_a_reversed_script_weight_is_not_tracked(tmp_path: Path) -> None:
    conf = tmp_path / "k.conf"
    conf.write_text(
        'vrrp_script chk {\n  script "/bin/true"\n  weight 10 reverse\n}\n'
        "vrrp_instance v {\n  interface eth0\n  virtual_router_id 9\n"
        "  virtual_ipaddress {\n    192.0.2.9/24\n  }\n  track_script {\n    chk\n  }\n}\n"
    )
    result = import_keepalived(str(conf), "x")
    (instance,) = yaml.safe_load(result.yaml)["vrrp_instances"]
    assert "track_scripts" not in instance
    assert [(s.line, s.why) for s in result.skipped] == [(3, "not supported")]
    checked(result.yaml)
