"""`lvs-agent plan/apply` against the real kernel, with ipvsadm as the referee."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import load_config
from agent.config.model import SCHEDULERS
from agent.ipvs.desired import desired_table
from agent.ipvs.kernel import IpvsKernel
from agent.ipvs.model import EditDest, KernelTable, Op
from agent.ipvs.reconciler import reconcile
from agent.ipvs.state import OwnershipStore
from agent.lab import netns
from tests.kernel.conftest import ipvsadm, require_schedulers

DATA = Path(__file__).parent / "data"


def write_config(tmp_path: Path, text: str | None = None) -> Path:
    text = text if text is not None else (DATA / "every-option.yaml").read_text()
    path = tmp_path / "config.yaml"
    path.write_text(text.replace("/STATE_DIR", str(tmp_path / "state")))
    return path


def cli(ns: str, *args: str) -> int:
    with netns.entered(ns):
        return main(list(args))


class CountingKernel:
    """Wraps IpvsKernel to count the operations a reconcile hands to the kernel."""

    def __init__(self, kernel: IpvsKernel) -> None:
        self.kernel = kernel
        self.ops: list[Op] = []
        self.messages = 0  # netlink messages the apply calls sent

    def dump(self) -> KernelTable:
        return self.kernel.dump()

    def get_timeouts(self):  # type: ignore[no-untyped-def]
        return self.kernel.get_timeouts()

    def apply(self, ops: Sequence[Op]):  # type: ignore[no-untyped-def]
        self.ops.extend(ops)
        before = self.kernel.counters.messages_sent
        try:
            return self.kernel.apply(ops)
        finally:
            self.messages += self.kernel.counters.messages_sent - before


def reconcile_in(ns: str, config_path: Path) -> tuple[CountingKernel, object, int]:
    config = load_config(str(config_path))
    with netns.entered(ns):
        kernel = IpvsKernel()
    with kernel:
        counting = CountingKernel(kernel)
        outcome = reconcile(
            counting,
            OwnershipStore(Path(config.state_dir) / "ipvs-state.json"),
            desired_table(config.virtual_servers),
            config.ipvs,
        )
    return counting, outcome, counting.messages


@pytest.mark.usefixtures("every_option_schedulers")
def test_every_option_round_trips_through_ipvsadm(
    ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LVS_AGENT_CACHE_DIR", "")  # every command reads the file
    config = write_config(tmp_path)
    assert cli(ns, "plan", "-c", str(config)) == 2
    assert cli(ns, "apply", "-c", str(config)) == 0
    assert ipvsadm(ns, "-S", "-n") == (DATA / "every-option.ipvsadm").read_text()
    assert "Timeout (tcp tcpfin udp): 900 60 120" in ipvsadm(ns, "-L", "-n", "--timeout")
    # ipvsadm -S does not save thresholds; --thresholds lists them.
    thresholds = ipvsadm(ns, "-L", "-n", "--thresholds")
    assert re.search(r"10\.0\.1\.22:8080\s+200\s+100", thresholds), thresholds
    assert re.search(r"10\.0\.4\.11:2905\s+1000\s+800", thresholds), thresholds
    assert re.search(r"10\.0\.7\.7:80\s+5\s+0", thresholds), thresholds
    with netns.entered(ns):
        for key in ("expire_nodest_conn", "expire_quiescent_template"):
            assert Path(f"/proc/sys/net/ipv4/vs/{key}").read_text().strip() == "1"
    # Nothing left to do: plan says so, and a second apply writes nothing.
    assert cli(ns, "plan", "-c", str(config)) == 0
    counting, _outcome, sent = reconcile_in(ns, config)
    assert counting.ops == [] and sent == 0
    assert ipvsadm(ns, "-S", "-n") == (DATA / "every-option.ipvsadm").read_text()


@pytest.mark.usefixtures("every_option_schedulers")
def test_cached_configuration_programs_exactly_what_the_file_says(
    ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("LVS_AGENT_CACHE_DIR", str(cache))
    expected = (DATA / "every-option.ipvsadm").read_text()
    config = write_config(tmp_path)
    assert cli(ns, "apply", "-c", str(config)) == 0  # read, validated, applied, cached
    assert len(list(cache.glob("*.ipvs"))) == 1
    # From here the file is not read: an emptied table, other timeouts and a reset
    # sysctl are put back from the entry.
    ipvsadm(ns, "-C")
    ipvsadm(ns, "--set", "11", "12", "13")
    with netns.entered(ns):
        Path("/proc/sys/net/ipv4/vs/expire_nodest_conn").write_text("0\n")
    assert cli(ns, "plan", "-c", str(config)) == 2
    assert cli(ns, "apply", "-c", str(config)) == 0
    assert ipvsadm(ns, "-S", "-n") == expected
    assert "Timeout (tcp tcpfin udp): 900 60 120" in ipvsadm(ns, "-L", "-n", "--timeout")
    with netns.entered(ns):
        assert Path("/proc/sys/net/ipv4/vs/expire_nodest_conn").read_text().strip() == "1"
    assert cli(ns, "plan", "-c", str(config)) == 0
    assert len(list(cache.glob("*.ipvs"))) == 1
    # Other bytes are another entry; the old bytes find theirs again.
    original = config.read_text()
    config.write_text(original.replace("port: 8080, weight: 50,", "port: 8080, weight: 75,"))
    assert cli(ns, "plan", "-c", str(config)) == 2
    assert len(list(cache.glob("*.ipvs"))) == 2
    config.write_text(original)
    assert cli(ns, "plan", "-c", str(config)) == 0
    # An invalid file is never cached and changes nothing.
    config.write_text(original.replace("scheduler: wlc", "scheduler: nope", 1))
    assert cli(ns, "apply", "-c", str(config)) == 1
    assert len(list(cache.glob("*.ipvs"))) == 2
    assert ipvsadm(ns, "-S", "-n") == expected


def test_largest_timeouts_the_config_takes_round_trip(
    ns: str, tmp_path: Path, available_schedulers: frozenset[str]
) -> None:
    require_schedulers(available_schedulers, ["wlc"])
    # Larger ones the kernel refuses (connection timeouts) or wraps (persistence).
    config = tmp_path / "config.yaml"
    config.write_text(
        f"state_dir: {tmp_path}/state\n"
        "ipvs: {timeouts: {tcp: 2147483s, tcp_fin: 2147483s, udp: 2147483s}}\n"
        "virtual_servers:\n  - name: p\n    address: 192.0.2.1\n    port: 80\n"
        "    persistence: {timeout: 31d}\n"
        "    real_servers: [{address: 10.0.0.1, port: 80}]\n"
    )
    assert cli(ns, "apply", "-c", str(config)) == 0
    assert "-A -t 192.0.2.1:80 -s wlc -p 2678400" in ipvsadm(ns, "-S", "-n")
    timeouts = ipvsadm(ns, "-L", "-n", "--timeout")
    assert "Timeout (tcp tcpfin udp): 2147483 2147483 2147483" in timeouts
    assert cli(ns, "plan", "-c", str(config)) == 0


@pytest.mark.usefixtures("every_option_schedulers")
def test_hand_made_service_survives_every_apply(ns: str, tmp_path: Path) -> None:
    ipvsadm(ns, "-A", "-t", "203.0.113.5:22", "-s", "rr")
    ipvsadm(ns, "-a", "-t", "203.0.113.5:22", "-r", "10.9.9.9:22", "-m", "-w", "7")
    hand_made = [line for line in ipvsadm(ns, "-S", "-n").splitlines() if "203.0.113.5" in line]
    config = write_config(tmp_path)
    assert cli(ns, "apply", "-c", str(config)) == 0
    # Drop every configured service: ours go, the hand-made one stays.
    config.write_text(config.read_text().split("virtual_servers:")[0] + "virtual_servers: []\n")
    assert cli(ns, "apply", "-c", str(config)) == 0
    assert ipvsadm(ns, "-S", "-n").splitlines() == hand_made


@pytest.mark.usefixtures("every_option_schedulers")
def test_weight_change_is_one_operation(ns: str, tmp_path: Path) -> None:
    config = write_config(tmp_path)
    assert cli(ns, "apply", "-c", str(config)) == 0
    text = config.read_text().replace("port: 8080, weight: 50,", "port: 8080, weight: 75,")
    config.write_text(text)
    counting, _outcome, sent = reconcile_in(ns, config)
    assert len(counting.ops) == 1 and isinstance(counting.ops[0], EditDest)
    assert counting.ops[0].dest.weight == 75
    assert sent == 1, f"{sent} netlink messages for one weight change"
    assert "-r 10.0.1.22:8080 -m -w 75" in ipvsadm(ns, "-S", "-n")


@pytest.mark.usefixtures("every_option_schedulers")
def test_restart_cleans_up_what_config_dropped_and_restores_weights(
    ns: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path)
    assert cli(ns, "apply", "-c", str(config)) == 0
    # A drain (or a crashed health check) left a configured server at weight 0 ...
    ipvsadm(ns, "-e", "-t", "192.0.2.100:80", "-r", "10.0.1.21:8080", "-m", "-w", "0")
    # ... and the "dns" service left the configuration while the agent was down.
    text = config.read_text()
    start = text.index("  - name: udp-one-packet")
    end = text.index("  - name: fwmark-gue")
    config.write_text(text[:start] + text[end:])
    assert cli(ns, "apply", "-c", str(config)) == 0  # a new process: ownership from disk
    saved = ipvsadm(ns, "-S", "-n")
    assert "192.0.2.53:53" not in saved
    assert "-r 10.0.1.21:8080 -m -w 100" in saved


def test_kernel_errors_name_errno_and_object_and_the_rest_applies(
    ns: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    available_schedulers: frozenset[str],
) -> None:
    # A scheduler the configuration accepts and this kernel cannot load (Debian's 6.1
    # has no ip_vs_twos). Allowed to skip (tests/skips-allowed.txt) on a kernel that
    # has them all; test_ipvs_netlink.py checks the refusal with a made-up name.
    absent = sorted(set(SCHEDULERS) - available_schedulers)
    if not absent:
        pytest.skip("this kernel has every scheduler the configuration accepts")
    require_schedulers(available_schedulers, ["wlc"])
    config = write_config(
        tmp_path,
        f"""\
state_dir: {tmp_path / "state"}
virtual_servers:
  - name: wants-twos
    address: 192.0.2.1
    port: 80
    scheduler: {absent[0]}
    real_servers: [{{address: 10.0.0.1, port: 80}}]
  - name: fine
    address: 192.0.2.2
    port: 80
    real_servers: [{{address: 10.0.0.2, port: 80}}]
""",
    )
    assert cli(ns, "apply", "-c", str(config)) == 1
    err = capsys.readouterr().err
    assert "192.0.2.1:80" in err and absent[0] in err, err
    assert re.search(r"E[A-Z]+ \(", err), err  # the errno's name, e.g. ENOENT (...)
    saved = ipvsadm(ns, "-S", "-n")
    assert "-a -t 192.0.2.2:80 -r 10.0.0.2:80 -m -w 1" in saved
    # The next reconcile retries only what failed.
    assert cli(ns, "plan", "-c", str(config)) == 2
    pending = capsys.readouterr().out.splitlines()
    assert pending and all("192.0.2.1:80" in line for line in pending), pending


@pytest.mark.usefixtures("every_option_schedulers")
def test_status_lists_what_ipvsadm_lists(
    ns: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    assert cli(ns, "apply", "-c", str(config)) == 0
    ipvsadm(ns, "-A", "-t", "203.0.113.5:22", "-s", "rr")
    capsys.readouterr()
    assert cli(ns, "status", "-c", str(config)) == 0
    ours = capsys.readouterr().out.splitlines()[2:]

    def blocks(lines: list[str], owner: bool) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        head = ""
        for line in lines:
            words = line.split()
            if words[0] == "->":
                out[head].append(" ".join(words))
            else:
                head = " ".join(words[:-1] if owner else words)
                out[head] = []
        return {k: sorted(v) for k, v in out.items()}

    theirs = blocks(ipvsadm(ns, "-L", "-n").splitlines()[3:], owner=False)
    assert blocks(ours, owner=True) == theirs
    assert [line.split()[-1] for line in ours if "203.0.113.5" in line] == ["other"]
