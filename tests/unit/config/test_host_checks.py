"""Host checks of check-config (agent.config.host): key files, state_dir, interfaces,
the programs of track scripts and notify commands."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from agent.config import parse_config
from agent.config.host import Finding, check_host
from agent.config.model import Config

KEY = "1 " + "ab" * 32 + "\n"
PEERS = "{d1: 10.0.0.11:6741, d2: 10.0.0.12:6741, w1: 10.0.0.13:6741}"


def key_file(tmp_path: Path, text: str = KEY, mode: int = 0o600, name: str = "c.key") -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return path


def config(tmp_path: Path, body: str, state_dir: Path | None = None) -> Config:
    text = f"state_dir: {state_dir or tmp_path / 'state'}\n" + body
    return parse_config(text, "config.yaml")


def lock(key: Path | str) -> str:
    return f"lock:\n  cluster: lb\n  listen: 10.0.0.11:6741\n  peers: {PEERS}\n  key_file: {key}\n"


def instance(extra: str = "", interface: str = "lo") -> str:
    return (
        "vrrp_instances:\n"
        "  - name: web\n"
        f"    interface: {interface}\n"
        "    vrid: 51\n"
        "    virtual_ips: [192.0.2.1/24]\n" + extra
    )


def lines(found: list[Finding]) -> list[str]:
    return [str(f) for f in found]


def test_a_good_host_has_nothing_to_say(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    script = tmp_path / "check.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    body = lock(key_file(tmp_path)) + instance(
        f"    track_interfaces: [lo, {{name: lo, weight: 10}}]\n"
        f"    track_scripts: [{{name: s, script: '{script} --quiet'}}]\n"
        f"    notify: {script}\n"
    )
    assert check_host(config(tmp_path, body)) == []


# --- the key file --------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o620, 0o602, 0o604])
def test_key_file_open_to_group_or_others(tmp_path: Path, mode: int) -> None:
    (tmp_path / "state").mkdir()
    key = key_file(tmp_path, mode=mode)
    assert lines(check_host(config(tmp_path, lock(key)))) == [
        f"config.yaml:6: lock.key_file: {key}: must not be accessible by group or others "
        "(chmod 600)"
    ]


def test_key_file_missing_or_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    missing = tmp_path / "nope.key"
    assert lines(check_host(config(tmp_path, lock(missing)))) == [
        f"config.yaml:6: lock.key_file: {missing}: No such file or directory"
    ]
    directory = tmp_path / "keys"
    directory.mkdir(mode=0o700)
    assert lines(check_host(config(tmp_path, lock(directory)))) == [
        f"config.yaml:6: lock.key_file: {directory}: not a regular file"
    ]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (KEY + "2\n", 2, "expected '<id> <hex key>'"),
        ("# rotation\n" + KEY + "2 " + "zz" * 32 + "\n", 3, "expected '<id> <hex key>'"),
        (KEY + "1 " + "cd" * 32 + "\n", 2, "duplicate key id 1"),
        ("7 " + "ab" * 16 + "\n", 1, "key 7 is 16 bytes, shorter than 32"),
        (KEY + "\n\n9 abcd\n", 4, "key 9 is 2 bytes, shorter than 32"),
        ("300 " + "ab" * 32 + "\n", 1, "key id 300 outside 0..255"),
        ("# nothing yet\n", 0, "no key in key file"),
    ],
)
def test_key_file_contents_named_by_the_key_files_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    (tmp_path / "state").mkdir()
    key = key_file(tmp_path, text)
    (found,) = check_host(config(tmp_path, lock(key)))
    if line:
        assert str(found).startswith(f"{key}:{line}: {message}")
        assert str(found).endswith("(the key file of lock.key_file, config.yaml:6)")
    else:
        assert str(found) == f"config.yaml:6: lock.key_file: {key}: {message}"
    assert not found.warning


def test_a_key_written_where_the_id_goes_is_not_quoted(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    secret = "ab" * 32
    key = key_file(tmp_path, f"{secret} 1\n")
    (found,) = check_host(config(tmp_path, lock(key)))
    assert found.line == 1 and secret not in str(found)


def test_run_reads_the_key_file_with_the_same_rules(tmp_path: Path) -> None:
    from agent.lock.transport import load_keyring
    from agent.lock.wire import KeyFileError

    key = key_file(tmp_path, KEY + "9 abcd\n")
    with pytest.raises(KeyFileError) as info:
        load_keyring(key)
    assert str(info.value) == f"{key}:2: key 9 is 2 bytes, shorter than 32"


def test_witness_clusters_key_files_each_at_its_own_key(tmp_path: Path) -> None:
    good = key_file(tmp_path)
    loose = key_file(tmp_path, mode=0o644, name="loose.key")
    text = (
        f"state_dir: {tmp_path}\n"
        + lock(loose)
        + "witness:\n  clusters:\n"
        + f"    - {{cluster: a, listen: 10.0.0.13:6741, key_file: {good}, peers: {PEERS}}}\n"
        + f"    - {{cluster: b, listen: 10.0.0.13:6742, key_file: {tmp_path / 'b.key'},\n"
        + f"       peers: {PEERS.replace('6741', '6742')}}}\n"
    )
    c = parse_config(text, "w.yaml", witness=True)
    assert lines(check_host(c)) == [
        f"w.yaml:6: lock.key_file: {loose}: must not be accessible by group or others (chmod 600)",
        f"w.yaml:10: witness.clusters[1].key_file: {tmp_path / 'b.key'}: No such file or directory",
    ]


# --- state_dir -----------------------------------------------------------------------


def test_state_dir_not_there_yet_is_a_warning(tmp_path: Path) -> None:
    (found,) = check_host(config(tmp_path, "", tmp_path / "a" / "b"))
    assert found.warning
    assert str(found) == (
        f"config.yaml:1: warning: state_dir: {tmp_path / 'a' / 'b'} does not exist yet; "
        "run creates it"
    )
    assert not (tmp_path / "a").exists()  # looked at, not made


def test_state_dir_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    (found,) = check_host(config(tmp_path, "", tmp_path / "f" / "state"))
    assert not found.warning
    assert str(found) == (
        f"config.yaml:1: state_dir: {tmp_path / 'f' / 'state'} cannot be created: "
        f"{tmp_path / 'f'} is not a directory"
    )
    (found,) = check_host(config(tmp_path, "", tmp_path / "f"))
    assert str(found).endswith(f"state_dir: {tmp_path / 'f'} exists and is not a directory")


def test_state_dir_not_writable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "state").mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if "state" in str(p) else real(p, m))
    (found,) = check_host(config(tmp_path, ""))
    assert not found.warning
    assert f"state_dir: {tmp_path / 'state'} is not writable (for uid" in str(found)


def test_the_locks_own_state_dir_is_checked_too(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "f").write_text("")
    body = lock(key_file(tmp_path)) + f"  state_dir: {tmp_path / 'f' / 'lock'}\n"
    (found,) = check_host(config(tmp_path, body))
    assert found.line == 7 and found.path == "lock.state_dir"
    assert "is not a directory" in found.message


# --- interfaces ----------------------------------------------------------------------


def test_absent_interfaces_are_warnings_at_their_keys(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    body = instance(
        "    track_interfaces: [lo, lvsnope1, {name: lvsnope2, weight: -5}]\n", "lvsnope0"
    )
    found = check_host(config(tmp_path, body))
    assert all(f.warning for f in found)
    assert lines(found) == [
        "config.yaml:4: warning: vrrp_instances[0].interface: interface lvsnope0 does not "
        "exist on this host; run refuses to start without it",
        "config.yaml:7: warning: vrrp_instances[0].track_interfaces[1]: interface lvsnope1 "
        "does not exist on this host; run counts it as down until it appears",
        "config.yaml:7: warning: vrrp_instances[0].track_interfaces[2].name: interface "
        "lvsnope2 does not exist on this host; run counts it as down until it appears",
    ]


def test_run_refuses_an_absent_vrrp_interface(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from agent.daemon import Agent
    from agent.metrics import AgentMetrics

    c = config(tmp_path, instance(interface="lvsnope0"))
    agent = Agent("config.yaml", c, None, AgentMetrics())
    with caplog.at_level(logging.ERROR, logger="lvs-agent"):
        asyncio.run(agent._start_vrrp())
    assert agent.exit_code == 1 and agent.vrrp is None and agent.stop.is_set()
    assert (
        "vrrp: cannot start: instance web: interface lvsnope0 does not exist on this host"
        in caplog.messages
    )


# --- track scripts and notify commands -----------------------------------------------


def test_script_and_notify_programs(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    plain = tmp_path / "plain"
    plain.write_text("")
    plain.chmod(0o644)
    absent = tmp_path / "absent.sh"
    body = instance(
        "    track_scripts:\n"
        "      - {name: a, script: pidof haproxy}\n"
        f"      - {{name: b, script: '{absent} --x'}}\n"
        f"      - {{name: c, script: {plain}}}\n"
        f"      - {{name: d, script: '\"{tmp_path}\" x'}}\n"
        "      - {name: e, script: /bin/true}\n"
        "    notify: sh -c 'echo hi'\n"
        "vrrp_sync_groups:\n"
        f"  - {{name: g, instances: [web], notify: {absent}}}\n"
    )
    found = check_host(config(tmp_path, body))
    assert [(f.line, f.path, f.warning) for f in found] == [
        (8, "vrrp_instances[0].track_scripts[0].script", True),
        (9, "vrrp_instances[0].track_scripts[1].script", True),
        (10, "vrrp_instances[0].track_scripts[2].script", False),
        (11, "vrrp_instances[0].track_scripts[3].script", False),
        (13, "vrrp_instances[0].notify", True),
        (15, "vrrp_sync_groups[0].notify", True),
    ]
    messages = [f.message for f in found]
    assert messages[0].startswith("'pidof' is not an absolute path")
    assert messages[1] == f"{absent} does not exist on this host"
    assert messages[2] == f"{plain} is not executable (for uid {os.geteuid()})"
    assert messages[3] == f"{tmp_path} is not a regular file"
    assert messages[4].startswith("'sh' is not an absolute path")


def test_a_command_that_does_not_split_is_refused_by_validation(tmp_path: Path) -> None:
    from agent.config import ConfigError

    with pytest.raises(ConfigError) as info:
        config(tmp_path, instance("    notify: /bin/echo 'unclosed\n"))
    assert "vrrp_instances[0].notify: cannot be split into words" in str(info.value)


# --- line bookkeeping -----------------------------------------------------------------


def test_lines_do_not_make_configurations_differ(tmp_path: Path) -> None:
    body = lock("/etc/c.key") + instance("    notify: /bin/true\n")
    a = config(tmp_path, body)
    b = config(tmp_path, "# moved down a line\n" + body)
    assert a == b
    assert a.lines["vrrp_instances[0].notify"] + 1 == b.lines["vrrp_instances[0].notify"]


def test_a_finding_reads_like_a_validation_problem() -> None:
    assert str(Finding("c.yaml", 3, "a.b", "gone", warning=True)) == "c.yaml:3: warning: a.b: gone"
    assert str(Finding("c.yaml", 3, "a.b", "bad")) == "c.yaml:3: a.b: bad"
    assert str(Finding("c.yaml", 0, "state_dir", "bad")) == "c.yaml: state_dir: bad"
    assert str(Finding("k.key", 2, "", "short")) == "k.key:2: short"


def test_health_check_programs_and_ca_files(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    script = tmp_path / "check.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)  # not executable
    body = (
        "virtual_servers:\n"
        "  - name: web\n"
        "    address: 192.0.2.1\n"
        "    port: 443\n"
        f"    health_checks: [{{type: exec, command: [{script}, --x]}}]\n"
        "    real_servers:\n"
        "      - {address: 10.0.0.1}\n"
        "      - {address: 10.0.0.2}\n"
        f"      - {{address: 10.0.0.3, health_checks: [{{type: https, tls_ca_file: {ca}}}]}}\n"
        f"      - {{address: 10.0.0.4, health_checks: [{{type: https, tls_ca_file: {ca}.gone}}]}}\n"
    )
    found = [str(f) for f in check_host(config(tmp_path, body, tmp_path))]
    assert found == [
        f"config.yaml:8: virtual_servers[0].real_servers[0].health_checks: web: exec check: "
        f"{script} is not executable (for uid {os.geteuid()})",
        f"config.yaml:11: warning: virtual_servers[0].real_servers[3].health_checks: web: "
        f"https check: tls_ca_file {ca}.gone: No such file or directory; the check fails "
        "until it exists",
    ]
