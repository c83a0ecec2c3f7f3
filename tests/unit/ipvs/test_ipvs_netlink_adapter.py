"""kernel.IpvsKernel where the running kernel has no IPVS (the development host).

Generic netlink families are global, not per namespace, so a kernel with IPVS is
made to look like one without by asking for a family that no kernel registers.
"""

from __future__ import annotations

import pytest

from agent.ipvs import kernel
from agent.ipvs.kernel import IpvsKernel, IpvsUnavailable


def test_missing_ipvs_is_one_clear_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel, "IPVS_GENL_NAME", "NoSuchIPVS")
    with pytest.raises(IpvsUnavailable) as exc:
        IpvsKernel()
    text = str(exc.value)
    assert "modprobe ip_vs" in text and "no IPVS" in text
    assert text.count(". ") == 0 and "\n" not in text
