"""Helpers shared by the netns test packages (vrrp/, lock/)."""

from __future__ import annotations

import time
from collections.abc import Callable

from agent.lab.agents import metric_values


def wait_until(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample of ``name`` whose labels include ``labels``."""
    for have, value in metric_values(text, name).items():
        if set(labels.items()) <= set(have):
            return value
    return None
