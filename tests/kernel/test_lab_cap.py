"""`lvs-agent lab --election quorum` as a test: split brain with VRRP, none with the lock.

The same cut (the master cut off from the other directors, the client still reaching
it) is made with ``election: vrrp`` and with ``election: quorum``; then the quorum
holder is killed with SIGKILL. Checked from netlink address events and from requests
pinned to each director, as the lab reports them; the plot is a real PNG.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.lab.cap import run_cap_lab


def test_the_lock_prevents_the_split_brain_vrrp_shows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "cap.png"
    code = run_cap_lab(str(png))
    out = capsys.readouterr().out
    assert code == 0, out
    rows = {
        cells[0]: cells[1:]
        for cells in (re.split(r"\s{2,}", line.strip()) for line in out.splitlines())
        if len(cells) == 3
    }
    vrrp_double, quorum_double = (float(c.split()[0]) for c in rows["both directors held the VIP"])
    assert vrrp_double > 0, out  # VRRP alone: both held the VIP during the cut
    assert quorum_double == 0, out  # the lock: never two holders
    assert rows["isolated master gave the VIP up"][1] != "never", out
    assert "its fence removed the VIP" in out, out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
