"""``check-health`` in-process on loopback: selection, one probe per identity, the lines,
the JSON, exit codes, and that it leaves nothing behind (no state_dir)."""

from __future__ import annotations

import io
import json
import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import parse_config
from agent.config.model import Config
from agent.health import Check, check_key
from agent.health.once import EXIT_ERROR, EXIT_HEALTHY, EXIT_UNHEALTHY, describe, main


@pytest.fixture
def listener() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@pytest.fixture
def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()  # bound, never listened: a connect is refused
    return port


def config(text: str, state_dir: Path) -> Config:
    return parse_config(f"state_dir: {state_dir}\n" + textwrap.dedent(text), "c.yaml")


def check(cfg: Config, *args: str | None, as_json: bool = False) -> tuple[int, str]:
    out = io.StringIO()
    code = main(cfg, args[0] if args else None, as_json, out)
    return code, out.getvalue()


def test_healthy_unhealthy_selection_and_one_probe_per_identity(
    tmp_path: Path, listener: int, closed_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    cfg = config(
        f"""\
        virtual_servers:
          - name: up
            address: 192.0.2.1
            port: 80
            health_checks: [{{type: tcp}}]
            real_servers: [{{address: 127.0.0.1, port: {listener}}}]
          - name: same
            address: 192.0.2.2
            port: 80
            health_checks: [{{type: tcp}}]
            real_servers: [{{address: 127.0.0.1, port: {listener}}}]
          - name: down
            address: 192.0.2.3
            port: 80
            health_checks: [{{type: tcp}}]
            real_servers:
              - {{address: 127.0.0.1, port: {closed_port}}}
              - {{address: 127.0.0.1, port: {listener}, health_checks: []}}
        """,
        state,
    )
    code, out = check(cfg)
    assert code == EXIT_UNHEALTHY
    rows = [line.split() for line in out.splitlines()]
    assert [(r[0], r[1]) for r in rows] == [("ok", "up"), ("ok", "same"), ("FAIL", "down")]
    assert rows[2][2:6] == [
        f"127.0.0.1:{closed_port}",
        "tcp",
        f"127.0.0.1:{closed_port}",
        "refused",
    ]
    err = capsys.readouterr().err
    assert "3 checks (2 probes): 2 passed, 1 failed; 1 real server without checks" in err

    assert check(cfg, "up")[0] == EXIT_HEALTHY
    code, out = check(cfg, "down", as_json=True)
    assert code == EXIT_UNHEALTHY
    [record] = json.loads(out)
    assert record["virtual_server"] == "down" and record["reason"] == "refused"
    assert record["ok"] is False and record["duration"] >= 0
    assert check(cfg, "nope")[0] == EXIT_ERROR
    assert "no virtual server 'nope' (it has: up, same, down)" in capsys.readouterr().err
    assert not state.exists()  # it changes nothing


def test_exec_dynamic_weight_is_shown(tmp_path: Path) -> None:
    cfg = config(
        """\
        virtual_servers:
          - name: x
            address: 192.0.2.1
            port: 80
            real_servers:
              - address: 10.0.0.1
                weight: 10
                health_checks:
                  - {type: exec, command: [/bin/sh, -c, exit 7], dynamic_weight: true}
              - address: 10.0.0.2
                health_checks: [{type: exec, command: [/bin/sh, -c, exit 2]}]
        """,
        tmp_path,
    )
    code, out = check(cfg)
    assert code == EXIT_UNHEALTHY
    first, second = out.splitlines()
    assert first.startswith("ok ") and "exit 7 (weight 5 of 10)" in first
    assert second.startswith("FAIL ") and "exec /bin/sh -c exit 2  exit 2  " in second


def test_describe() -> None:
    assert describe(check_key(Check("http", path="/hz"), "10.0.0.1", 80)) == "http 10.0.0.1:80/hz"
    assert describe(check_key(Check("tcp", connect_port=81), "fd00::1", 80)) == "tcp [fd00::1]:81"
    assert (
        describe(check_key(Check("dns", query_name="example.org"), "10.0.0.1", 53))
        == "dns 10.0.0.1:53 example.org A"
    )
    assert describe(check_key(Check("exec", command=("/bin/x", "-v")), "10.0.0.1", 1)) == (
        "exec /bin/x -v"
    )
