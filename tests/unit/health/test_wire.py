"""The probes' protocol parsing on bytes: HTTP responses and DNS messages."""

from __future__ import annotations

import struct

import pytest

from agent.health.wire import (
    HEADER_LIMIT,
    ProtocolError,
    ResponseReader,
    dns_query,
    dns_reply,
    request,
    status_matches,
)


def feed_all(reader: ResponseReader, data: bytes, step: int) -> bool:
    done = False
    for i in range(0, len(data), step):
        done = reader.feed(data[i : i + step])
        if done:
            break
    return done


@pytest.mark.parametrize("step", [1, 3, 7, 1000])
def test_content_length_body_in_any_split(step: int) -> None:
    r = ResponseReader(want_body=True)
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhelloEXTRA"
    assert feed_all(r, data, step)
    assert r.status == 200
    assert r.reason == "OK"
    assert r.headers["x-a"] == "b"
    assert bytes(r.body) == b"hello"


@pytest.mark.parametrize("step", [1, 2, 5, 1000])
def test_chunked_body_in_any_split(step: int) -> None:
    r = ResponseReader(want_body=True)
    data = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nTrailer: x\r\n\r\n"
    )
    assert feed_all(r, data, step)
    assert bytes(r.body) == b"hello, world"


def test_body_until_close() -> None:
    r = ResponseReader(want_body=True)
    assert not r.feed(b"HTTP/1.0 200 OK\r\n\r\npart one ")
    assert not r.feed(b"part two")
    r.eof()
    assert r.done
    assert bytes(r.body) == b"part one part two"


def test_status_only_stops_after_the_status_line() -> None:
    r = ResponseReader(want_body=False)
    assert not r.feed(b"HTTP/1.1 503 Service")
    assert r.feed(b" Unavailable\r\nContent-Le")
    assert r.status == 503
    with pytest.raises(ProtocolError):
        ResponseReader(want_body=False).feed(b"SSH-2.0-OpenSSH_9.2\r\n")


def test_endless_body_is_bounded() -> None:
    r = ResponseReader(want_body=True, body_limit=1000)
    assert not r.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    done = False
    for _ in range(100):
        done = r.feed(b"100\r\n" + b"x" * 256 + b"\r\n")
        if done:
            break
    assert done and r.truncated
    assert len(r.body) == 1000


def test_endless_headers_are_refused() -> None:
    r = ResponseReader(want_body=True)
    r.feed(b"HTTP/1.1 200 OK\r\n")
    with pytest.raises(ProtocolError):
        for _ in range(HEADER_LIMIT // 8 + 10):
            r.feed(b"X-A: b\r\n")


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x01garbage bytes here\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
    ],
)
def test_garbage_is_a_protocol_error(data: bytes) -> None:
    r = ResponseReader(want_body=True)
    with pytest.raises(ProtocolError):
        r.feed(data)


def test_bad_chunk_and_early_close() -> None:
    r = ResponseReader(want_body=True)
    with pytest.raises(ProtocolError):
        r.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    r = ResponseReader(want_body=True)
    r.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    with pytest.raises(ProtocolError):
        r.eof()
    r = ResponseReader(want_body=False)
    r.feed(b"HTTP/1.1 200 OK")
    with pytest.raises(ProtocolError):
        r.eof()


def test_head_and_204_have_no_body() -> None:
    r = ResponseReader(want_body=True, head=True)
    assert r.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n")
    r = ResponseReader(want_body=True)
    assert r.feed(b"HTTP/1.1 204 No Content\r\n\r\n")


def test_request_and_status_ranges() -> None:
    assert request("GET", "/healthz", "example.org") == (
        b"GET /healthz HTTP/1.1\r\nHost: example.org\r\nUser-Agent: lvs-agent-health\r\n"
        b"Accept: */*\r\nConnection: close\r\n\r\n"
    )
    assert status_matches(204, ((200, 299),))
    assert not status_matches(302, ((200, 299),))
    assert status_matches(302, ((200, 200), (301, 302)))


def test_dns_query_bytes() -> None:
    q = dns_query(0x1234, "www.example.org.", 1)
    assert q[:12] == struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    assert q[12:] == b"\x03www\x07example\x03org\x00\x00\x01\x00\x01"
    assert dns_query(1, ".", 2)[12:] == b"\x00\x00\x02\x00\x01"
    with pytest.raises(ValueError):
        dns_query(1, "a" * 64 + ".org", 1)


def reply(qid: int, flags: int, answers: int) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, 1, answers, 0, 0) + b"\x00\x00\x01\x00\x01"


def test_dns_reply_rcode_and_answers() -> None:
    assert dns_reply(reply(7, 0x8180, 2), 7) == (0, 2)
    assert dns_reply(reply(7, 0x8182, 0), 7) == (2, 0)  # SERVFAIL
    assert dns_reply(reply(7, 0x8183, 0), 7) == (3, 0)  # NXDOMAIN
    with pytest.raises(ProtocolError):
        dns_reply(reply(8, 0x8180, 1), 7)  # another query's id
    with pytest.raises(ProtocolError):
        dns_reply(reply(7, 0x0100, 0), 7)  # a query, not a reply
    with pytest.raises(ProtocolError):
        dns_reply(b"\x00\x07", 7)
