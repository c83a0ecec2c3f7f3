"""Re-capture the keepalived golden packets used by tests/unit/vrrp/test_packet.py.

Run as root: ``.venv/bin/python -m tests.netns.vrrp.capture_golden`` (from the repo
root). For each config it runs keepalived 2.2.7 (``-n -l -D -P``) in a netns on a
bridge, captures with tcpdump on another node for ~6 s, stops keepalived with
SIGTERM (priority 0 advert), and prints the IP packets of the first advert and of
the priority-0 advert as hex. Addresses differ from the stored ones (this lab
numbers its nodes differently), so compare fields, not bytes.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from agent.lab.capture import Capture
from agent.lab.keepalived import Keepalived, keepalived_conf
from agent.lab.topology import Lab

CONFIGS = {
    "V2": dict(version=2, vrid=51, priority=150, interval=1, vips=["192.0.2.100/24"]),
    "V2_AUTH": dict(
        version=2, vrid=52, priority=100, interval=1, vips=["192.0.2.101/24"], auth_pass="s3cret"
    ),
    "V3_V4": dict(
        version=3, vrid=53, priority=200, interval=0.5, vips=["192.0.2.102/24", "192.0.2.103/24"]
    ),
    "V3_V6": dict(version=3, vrid=54, priority=120, interval=1, vips=["2001:db8::100/64"]),
}


def main() -> None:
    from scapy.all import rdpcap  # lazy: only this script needs scapy

    with (
        Lab(forwarding="dr", directors=1, real_servers=0, vip_on_director=False) as lab,
        tempfile.TemporaryDirectory() as tmp,
    ):
        work = Path(tmp)
        for name, kw in CONFIGS.items():
            cap = Capture(lab, lab.client, work / f"{name}.pcap", "ip proto 112 or ip6 proto 112")
            ka = Keepalived(lab, lab.director(1), keepalived_conf(**kw), work, tag=name)  # type: ignore[arg-type]
            time.sleep(6)
            ka.terminate()
            frames = rdpcap(str(cap.stop()))
            for label, frame in (("", frames[0]), ("_STOP", frames[-1])):
                print(f"GOLDEN_{name}{label} = {bytes(frame)[14:].hex()!r}")


if __name__ == "__main__":
    main()
