import pytest

from agent.status.protocol import (
    SOCKET_NAME,
    BadRequest,
    Request,
    client_paths,
    encode,
    parse_request,
    server_path,
)


def test_requests_parse() -> None:
    assert parse_request(b'{"command": "status"}\n') == Request("status")
    assert parse_request(b'{"command": "failover", "state_dir": "/s"}') == Request("failover", "/s")
    assert parse_request(b'{"command": "failover", "instance": "web"}').instance == "web"
    req = parse_request(
        b'{"command": "maint", "virtual_server": "w", "real_server": "10.0.0.1:80", "on": true}'
    )
    assert (req.virtual_server, req.real_server, req.on) == ("w", "10.0.0.1:80", True)


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b"[1]",
        b'{"command": "reboot"}',
        b'{"command": "failover", "instance": 7}',
        b'{"command": "maint", "virtual_server": "w", "real_server": "x"}',
        b'{"command": "maint", "virtual_server": "", "real_server": "x", "on": false}',
        b'{"command": "status", "state_dir": ""}',
        b"\xff\xfe",
    ],
)
def test_bad_requests_refused(line: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_request(line)


def test_encode_is_one_line() -> None:
    assert encode({"a": "x\ny"}).count(b"\n") == 1


def test_paths() -> None:
    assert server_path("/var/lib/lvs-agent", {}).name == SOCKET_NAME
    assert str(server_path("/var/lib/lvs-agent", {})) == "/var/lib/lvs-agent/agent.sock"
    env = {"RUNTIME_DIRECTORY": "/run/lvs-agent:/run/other"}
    assert str(server_path("/var/lib/lvs-agent", env)) == "/run/lvs-agent/agent.sock"
    assert [str(p) for p in client_paths("/s")] == ["/s/agent.sock", "/run/lvs-agent/agent.sock"]
