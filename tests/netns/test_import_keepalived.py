"""The keepalived files the importer is tested with are ones keepalived itself accepts.

Each of tests/data/keepalived/*.conf passes ``keepalived -t`` (both config ids the
files use) inside a network namespace holding the interfaces they name; the
import of each is checked in tests/unit/importer.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.check_skips import skip_or_fail

DATA = Path(__file__).resolve().parents[1] / "data" / "keepalived"
FILES = sorted(DATA.glob("*.conf"))
# veth pairs: the interfaces the files name (and their peers)
LINKS = [("veth-front", "veth-back"), ("veth-legacy", "veth-legacy-p")]


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    if shutil.which("keepalived") is None:
        skip_or_fail("keepalived is not installed")
    name = f"h15-kat-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        for a, b in LINKS:
            subprocess.run(
                ["ip", "-n", name, "link", "add", a, "type", "veth", "peer", "name", b],
                check=True,
                timeout=10,
            )
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=10)


@pytest.mark.parametrize("config_id", ["lb1", "lb2"])
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_keepalived_accepts_the_file(netns: str, path: Path, config_id: str) -> None:
    done = subprocess.run(
        ["ip", "netns", "exec", netns, "keepalived", "-t", "-f", str(path), "-i", config_id],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
