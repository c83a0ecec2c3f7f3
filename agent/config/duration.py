"""Durations as written in the configuration: ``100ms``, ``2s``, ``5m``, ``1h30m``."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


class DurationError(ValueError):
    pass


def parse_duration(text: str) -> float:
    """Seconds in ``text``; raises DurationError with a hint on anything else."""
    s = text.strip()
    if not s:
        raise DurationError("empty duration; write it like 30s, 100ms or 5m")
    pos, total = 0, 0.0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            raise DurationError(
                f"{text!r} is not a duration; write it like 30s, 100ms, 5m or 1h30m"
            )
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return total


def format_duration(seconds: float) -> str:
    """Shortest exact spelling: 0.1 -> '100ms', 300 -> '5m', 90 -> '90s'."""
    ms = round(seconds * 1000)
    if ms % 1000:
        return f"{ms}ms"
    s = ms // 1000
    for unit, size in (("h", 3600), ("m", 60)):
        if s and s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"
