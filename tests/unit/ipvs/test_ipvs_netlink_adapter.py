"""kernel.IpvsKernel where the running kernel has no IPVS (the development host)."""

from __future__ import annotations

import os

import pytest

from agent.ipvs.kernel import IpvsKernel, IpvsUnavailable


@pytest.mark.skipif(os.path.exists("/proc/net/ip_vs"),
                    reason="this kernel has IPVS loaded; covered by tests/kernel instead")
def test_missing_ipvs_is_one_clear_sentence() -> None:
    with pytest.raises(IpvsUnavailable) as exc:
        IpvsKernel()
    text = str(exc.value)
    assert "modprobe ip_vs" in text and "no IPVS" in text
    assert text.count(". ") == 0 and "\n" not in text
