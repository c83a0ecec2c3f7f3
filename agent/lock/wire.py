"""Wire format of the lock protocol: compact binary datagrams authenticated with HMAC-SHA256.

This module owns the byte layout, the shared-key ring (key ids for rotation) and the
per-sender replay window.  ``WireCodec.decode`` either returns one well-formed, authentic,
fresh ``Message`` addressed to this node, or raises ``WireError`` with a short reason — it
never raises anything else and never changes state for a datagram it refuses.

It must never open files or sockets, read clocks, or decide anything about leases.

Layout (big-endian; ``s8`` = u8 length + UTF-8; ``B`` = ballot = u64 counter, u64
incarnation, s8 node; ``B?`` = u8 flag + ballot if 1)::

    magic "LK" | version u8 | key_id u8 | kind u8
    cluster s8 | timing fingerprint 8 bytes | sender s8 | receiver s8
    sender incarnation u64 | sequence u64 | lease s8
    body:  PREPARE/ACCEPT/ACCEPTED/RELEASE: B
           PROMISE:  B, B? accepted, f64 remaining
           REJECT:   B, B? promised, B? accepted, f64 remaining
           ANNOUNCE: u8 priority, u8 eligible, B? term
    HMAC-SHA256(key[key_id], everything before) 32 bytes

Binding sender, receiver, incarnation and sequence under the MAC is what defeats
reflection (a node's own datagram sent back to it) and replay (docs/lock.md,
"Datagrams").  The replay window accepts each sequence number of a sender
incarnation once, in any order within ``REPLAY_WINDOW`` of the highest seen (a bitmap,
as IPsec's anti-replay window): datagrams reordered on the way (a veth queues each on
the sending CPU's backlog) are delivered, not dropped as replays.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from agent.lock.messages import (
    Accept,
    Accepted,
    Announce,
    Ballot,
    Kind,
    Message,
    Prepare,
    Promise,
    Reject,
    Release,
)

MAGIC: Final = b"LK"
VERSION: Final = 1
MAC_SIZE: Final = 32
KEY_MIN_SIZE: Final = 32
MAX_NAME: Final = 64
MAX_DATAGRAM: Final = 1200
#: sequences this far below a sender's highest are still accepted once (reordering)
REPLAY_WINDOW: Final = 64
_WINDOW_MASK: Final = (1 << REPLAY_WINDOW) - 1
_U64_MAX: Final = 2**64 - 1

_HEAD = struct.Struct(">2sBBB")
_U8 = struct.Struct(">B")
_U64x2 = struct.Struct(">QQ")
_F64 = struct.Struct(">d")


class WireError(Exception):
    """A datagram was refused; ``reason`` is a short metric label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeyFileError(ValueError):
    """The key file is unusable: ``reason``, at ``line`` of the file at ``path``
    (0 and "" when not known or the file as a whole)."""

    def __init__(self, reason: str, line: int = 0, path: str = "") -> None:
        if path:
            place = f"{path}:{line}: " if line else f"{path}: "
        else:
            place = f"line {line}: " if line else ""
        super().__init__(place + reason)
        self.reason = reason
        self.line = line
        self.path = path


@dataclass(frozen=True, slots=True)
class KeyRing:
    """Shared cluster keys: send with ``primary``, accept any of ``keys`` (rotation)."""

    primary: int
    keys: Mapping[int, bytes]

    def __post_init__(self) -> None:
        if self.primary not in self.keys:
            raise KeyFileError("primary key id not in key ring")
        for kid, key in self.keys.items():
            if not 0 <= kid <= 255:
                raise KeyFileError(f"key id {kid} outside 0..255")
            if len(key) < KEY_MIN_SIZE:
                raise KeyFileError(f"key {kid} shorter than {KEY_MIN_SIZE} bytes")

    @classmethod
    def parse(cls, text: str) -> KeyRing:
        """Parse a key file: lines ``<id> <hex key>``; ``#`` comments; first line sends.

        Rotation: add the new key as a second line everywhere, then move it first
        everywhere, then delete the old line.
        """
        keys: dict[int, bytes] = {}
        primary: int | None = None
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 2:
                raise KeyFileError("expected '<id> <hex key>'", lineno)
            try:
                kid = int(parts[0])
                key = bytes.fromhex(parts[1])
            except ValueError:  # not the exception's text: it can quote the key
                raise KeyFileError(
                    "expected '<id> <hex key>': a decimal id, hex digits", lineno
                ) from None
            if kid in keys:
                raise KeyFileError(f"duplicate key id {kid}", lineno)
            if not 0 <= kid <= 255:
                raise KeyFileError(f"key id {kid} outside 0..255", lineno)
            if len(key) < KEY_MIN_SIZE:
                raise KeyFileError(
                    f"key {kid} is {len(key)} bytes, shorter than {KEY_MIN_SIZE}", lineno
                )
            keys[kid] = key
            if primary is None:
                primary = kid
        if primary is None:
            raise KeyFileError("no key in key file")
        return cls(primary=primary, keys=keys)


def _put_str(buf: bytearray, s: str) -> None:
    raw = s.encode()
    if not 0 < len(raw) <= MAX_NAME:
        raise ValueError(f"name {s!r} must be 1..{MAX_NAME} bytes")
    buf += _U8.pack(len(raw))
    buf += raw


def _put_ballot(buf: bytearray, b: Ballot) -> None:
    buf += _U64x2.pack(b.counter, b.incarnation)
    _put_str(buf, b.node)


def _put_opt_ballot(buf: bytearray, b: Ballot | None) -> None:
    if b is None:
        buf += b"\x00"
    else:
        buf += b"\x01"
        _put_ballot(buf, b)


class _Reader:
    """Bounds-checked cursor; every failure is a ``WireError('malformed')``."""

    __slots__ = ("_data", "_end", "pos")

    def __init__(self, data: bytes, start: int, end: int) -> None:
        self._data = data
        self.pos = start
        self._end = end

    def take(self, n: int) -> bytes:
        if self.pos + n > self._end:
            raise WireError("malformed")
        chunk = self._data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u64x2(self) -> tuple[int, int]:
        a, b = _U64x2.unpack(self.take(16))
        return int(a), int(b)

    def f64(self) -> float:
        (v,) = _F64.unpack(self.take(8))
        value = float(v)
        if not math.isfinite(value) or not 0.0 <= value <= 1e6:
            raise WireError("malformed")
        return value

    def name(self) -> str:
        n = self.u8()
        if not 0 < n <= MAX_NAME:
            raise WireError("malformed")
        try:
            return self.take(n).decode()
        except UnicodeDecodeError:
            raise WireError("malformed") from None

    def ballot(self) -> Ballot:
        counter, inc = self.u64x2()
        return Ballot(counter, inc, self.name())

    def opt_ballot(self) -> Ballot | None:
        flag = self.u8()
        if flag == 0:
            return None
        if flag != 1:
            raise WireError("malformed")
        return self.ballot()

    def flag(self) -> bool:
        v = self.u8()
        if v > 1:
            raise WireError("malformed")
        return v == 1

    def done(self) -> None:
        if self.pos != self._end:
            raise WireError("malformed")


class WireCodec:
    """Encoder/decoder for one node.  Holds our send sequence and the replay window."""

    def __init__(
        self,
        cluster: str,
        node_id: str,
        incarnation: int,
        fingerprint: bytes,
        keys: KeyRing,
        peers: Iterable[str],
    ) -> None:
        if len(fingerprint) != 8:
            raise ValueError("fingerprint must be 8 bytes")
        self._cluster = cluster
        self._node = node_id
        self._incarnation = incarnation
        self._fingerprint = fingerprint
        self._keys = keys
        self._peers = frozenset(peers) - {node_id}
        self._seq = 0
        # per sender: incarnation, highest sequence, bit i set = (highest - i) accepted
        self._last: dict[str, tuple[int, int, int]] = {}

    # ------------------------------------------------------------------ encode

    def encode(self, msg: Message) -> bytes:
        """Serialize and MAC ``msg`` with the primary key and the next sequence number."""
        if msg.sender != self._node:
            raise ValueError("can only encode messages sent by this node")
        self._seq += 1
        buf = bytearray(_HEAD.pack(MAGIC, VERSION, self._keys.primary, int(msg.kind)))
        _put_str(buf, self._cluster)
        buf += self._fingerprint
        _put_str(buf, msg.sender)
        _put_str(buf, msg.receiver)
        buf += _U64x2.pack(self._incarnation, self._seq)
        _put_str(buf, msg.lease)
        if isinstance(msg, Promise):
            _put_ballot(buf, msg.ballot)
            _put_opt_ballot(buf, msg.accepted)
            buf += _F64.pack(msg.remaining)
        elif isinstance(msg, Reject):
            _put_ballot(buf, msg.ballot)
            _put_opt_ballot(buf, msg.promised)
            _put_opt_ballot(buf, msg.accepted)
            buf += _F64.pack(msg.remaining)
        elif isinstance(msg, Announce):
            buf += _U8.pack(msg.priority)
            buf += _U8.pack(1 if msg.eligible else 0)
            _put_opt_ballot(buf, msg.term)
        else:
            _put_ballot(buf, msg.ballot)
        buf += hmac.new(self._keys.keys[self._keys.primary], bytes(buf), hashlib.sha256).digest()
        return bytes(buf)

    # ------------------------------------------------------------------ decode

    def decode(self, data: bytes) -> Message:
        """Authenticate and parse one datagram; raise ``WireError`` if it must be dropped."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise WireError("malformed")
        data = bytes(data)
        if len(data) < _HEAD.size + MAC_SIZE or len(data) > MAX_DATAGRAM:
            raise WireError("bad-size")
        magic, version, key_id, kind_code = _HEAD.unpack_from(data)
        if magic != MAGIC:
            raise WireError("bad-magic")
        if version != VERSION:
            raise WireError("bad-version")
        key = self._keys.keys.get(key_id)
        if key is None:
            raise WireError("unknown-key")
        end = len(data) - MAC_SIZE
        expected = hmac.new(key, data[:end], hashlib.sha256).digest()
        if not hmac.compare_digest(expected, data[end:]):
            raise WireError("bad-mac")
        # Authentic from here on; still parse defensively (a peer may run other code).
        try:
            kind = Kind(kind_code)
        except ValueError:
            raise WireError("malformed") from None
        r = _Reader(data, _HEAD.size, end)
        cluster = r.name()
        fingerprint = r.take(8)
        sender = r.name()
        receiver = r.name()
        incarnation, seq = r.u64x2()
        lease = r.name()
        msg = self._body(kind, r, lease, sender, receiver)
        r.done()
        if cluster != self._cluster:
            raise WireError("wrong-cluster")
        if fingerprint != self._fingerprint:
            raise WireError("timing-mismatch")
        if sender == self._node:
            raise WireError("reflected")
        if receiver != self._node:
            raise WireError("not-for-me")
        if sender not in self._peers:
            raise WireError("unknown-sender")
        ballot = getattr(msg, "ballot", None)
        if kind in (Kind.PREPARE, Kind.ACCEPT, Kind.RELEASE) and (
            ballot is None or ballot.node != sender
        ):
            raise WireError("bad-ballot")
        self._last[sender] = _fresh(self._last.get(sender), incarnation, seq)
        return msg

    @staticmethod
    def _body(kind: Kind, r: _Reader, lease: str, sender: str, receiver: str) -> Message:
        if kind is Kind.PREPARE:
            return Prepare(lease, sender, receiver, r.ballot())
        if kind is Kind.ACCEPT:
            return Accept(lease, sender, receiver, r.ballot())
        if kind is Kind.ACCEPTED:
            return Accepted(lease, sender, receiver, r.ballot())
        if kind is Kind.RELEASE:
            return Release(lease, sender, receiver, r.ballot())
        if kind is Kind.PROMISE:
            b = r.ballot()
            acc = r.opt_ballot()
            return Promise(lease, sender, receiver, b, acc, r.f64())
        if kind is Kind.REJECT:
            b = r.ballot()
            promised = r.opt_ballot()
            acc = r.opt_ballot()
            return Reject(lease, sender, receiver, b, promised, acc, r.f64())
        priority = r.u8()
        eligible = r.flag()
        return Announce(lease, sender, receiver, priority, eligible, r.opt_ballot())


def check_u64(value: int) -> int:
    """Validate a value that goes into a u64 field (incarnation, counters)."""
    if not 0 <= value <= _U64_MAX:
        raise ValueError(f"{value} does not fit in u64")
    return value


def _fresh(last: tuple[int, int, int] | None, incarnation: int, seq: int) -> tuple[int, int, int]:
    """The sender's window after accepting ``(incarnation, seq)``; WireError if stale."""
    if last is None or incarnation > last[0]:
        return incarnation, seq, 1
    known, top, seen = last
    if incarnation < known:
        raise WireError("stale-incarnation")
    if seq > top:
        shift = seq - top
        seen = (seen << shift | 1) & _WINDOW_MASK if shift < REPLAY_WINDOW else 1
        return incarnation, seq, seen
    back = top - seq
    if back >= REPLAY_WINDOW or seen >> back & 1:
        raise WireError("replay")
    return incarnation, top, seen | 1 << back
