"""The command line: help, exit codes, check-config output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )


def test_help_names_every_command() -> None:
    out = run("--help").stdout
    for command in (
        "check-config",
        "check-health",
        "plan",
        "apply",
        "run",
        "status",
        "failover",
        "maint",
        "witness",
        "lab",
    ):
        assert command in out


def test_check_config_valid_and_invalid(tmp_path: Path) -> None:
    ok = run("check-config", "-c", str(ROOT / "config.example.yaml"))
    assert ok.returncode == 0 and "valid" in ok.stdout
    one = tmp_path / "one.yaml"
    one.write_text(
        "virtual_servers:\n  - {name: x, address: 192.0.2.1, port: 80, "
        "real_servers: [{address: 10.0.0.1}]}\n"
    )
    assert "valid (1 virtual server, 1 real server)" in run("check-config", "-c", str(one)).stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("virtual_servers:\n  - name: x\n    address: 192.0.2.1\n    port: 99999\n")
    proc = run("check-config", "-c", str(bad))
    assert proc.returncode == 1
    assert f"{bad}:4: virtual_servers[0].port: must be 1..65535, got 99999" in proc.stderr
    assert "nothing was changed" in proc.stderr


def test_missing_config_file_is_one_line(tmp_path: Path) -> None:
    proc = run("check-config", "-c", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 1
    assert (
        proc.stderr.strip()
        == f"lvs-agent: cannot read {tmp_path / 'nope.yaml'}: No such file or directory"
    )


def test_check_config_has_no_side_effects(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\nvirtual_servers: []\n")
    assert run("check-config", "-c", str(config)).returncode == 0
    assert not (tmp_path / "state").exists()


def test_witness_check(tmp_path: Path) -> None:
    peers = "{d1: 127.0.0.2:6741, d2: 127.0.0.3:6741, w1: 127.0.0.1:6741}"
    key = tmp_path / "lb-1.key"
    key.write_text("1 " + "ab" * 32 + "\n")
    key.chmod(0o600)
    good = tmp_path / "witness.yaml"
    good.write_text(
        f"state_dir: {tmp_path}\nwitness:\n  clusters:\n"
        f"    - {{cluster: lb-1, listen: 127.0.0.1:6741, key_file: {key}, peers: {peers}}}\n"
    )
    proc = run("witness", "--check", "-c", str(good))
    assert proc.returncode == 0, proc.stderr
    assert "valid witness file (1 cluster(s): lb-1)" in proc.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("listen:", "lissten:"))
    proc = run("witness", "--check", "-c", str(bad))
    assert proc.returncode == 1
    assert "unknown key (did you mean 'listen'?)" in proc.stderr


def test_file_that_is_not_utf8_is_one_problem_naming_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"node: {name: a}\n# caf\xe9\nvirtual_servers: []\n")
    for command in ("check-config", "plan", "apply"):
        r = run(command, "-c", str(bad))
        assert r.returncode == 1, (command, r.stderr)
        assert f"{bad}:2: not UTF-8 text: byte(s) e9 at column 6" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr


def test_windows_line_ends_read_like_unix_ones(tmp_path: Path) -> None:
    text = (ROOT / "config.example.yaml").read_text()
    crlf = tmp_path / "crlf.yaml"
    crlf.write_bytes(text.replace("\n", "\r\n").encode())
    assert run("check-config", "-c", str(crlf)).returncode == 0


def test_apply_and_plan_output_with_one_failing_operation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import errno

    from agent.cli import main
    from agent.ipvs.model import AddDest, Op
    from tests.unit.ipvs.fake_kernel import FakeError, FakeKernel

    class Kernel(FakeKernel):  # the kernel refuses one real server
        def close(self) -> None:
            pass

        def __enter__(self) -> Kernel:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def _one(self, op: Op) -> FakeError | None:
            if isinstance(op, AddDest) and op.dest.key.address == "10.0.1.22":
                return FakeError(errno.ENOENT, "add dest")
            return super()._one(op)

    kernel = Kernel()
    monkeypatch.setattr("agent.ipvs.kernel.IpvsKernel", lambda: kernel)
    config = tmp_path / "c.yaml"
    config.write_text(
        f"state_dir: {tmp_path}/state\nvirtual_servers:\n  - name: web\n"
        "    address: 192.0.2.1\n    port: 80\n    real_servers:\n"
        + "".join(f"      - {{address: 10.0.1.2{i}, port: 80}}\n" for i in (1, 2, 3))
    )
    assert main(["apply", "-c", str(config)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "applied: add service tcp 192.0.2.1:80 (web) scheduler=wlc",
        "applied: add real server tcp 192.0.2.1:80 (web) -> 10.0.1.21:80 forwarding=nat weight=1",
        "applied: add real server tcp 192.0.2.1:80 (web) -> 10.0.1.23:80 forwarding=nat weight=1",
    ]
    assert err.splitlines() == [
        "failed: add real server tcp 192.0.2.1:80 (web) -> 10.0.1.22:80 forwarding=nat "
        "weight=1: add dest: ENOENT",
        "3 applied, 1 failed",
    ]
    assert main(["plan", "-c", str(config)]) == 2
    out, err = capsys.readouterr()
    assert out == (
        "add real server tcp 192.0.2.1:80 (web) -> 10.0.1.22:80 forwarding=nat weight=1\n"
    )
    assert err == "1 operation pending\n"


def test_check_config_warnings_keep_exit_0_and_strict_makes_them_errors(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        "vrrp_instances:\n"
        "  - {name: web, interface: lvsnope0, vrid: 51, virtual_ips: [192.0.2.1/24]}\n"
    )
    proc = run("check-config", "-c", str(config))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{config}: valid (0 virtual servers, 0 real servers); 2 warnings\n"
    assert proc.stderr.splitlines() == [
        f"{config}:1: warning: state_dir: {tmp_path / 'state'} does not exist yet; run creates it",
        f"{config}:3: warning: vrrp_instances[0].interface: interface lvsnope0 does not exist "
        "on this host; run refuses to start without it",
    ]
    strict = run("check-config", "--strict", "-c", str(config))
    assert strict.returncode == 1
    assert strict.stdout == ""
    assert strict.stderr.splitlines() == [
        line.replace(": warning:", ":") for line in proc.stderr.splitlines()
    ] + [f"{config}: valid, but not on this host (2 problems); nothing was changed"]
    assert not (tmp_path / "state").exists()


def test_check_config_host_errors_exit_1(tmp_path: Path) -> None:
    key = tmp_path / "c.key"
    key.write_text("1 " + "ab" * 32 + "\n")
    key.chmod(0o644)
    config = tmp_path / "c.yaml"
    config.write_text(
        f"state_dir: {tmp_path}\n"
        "lock:\n  cluster: lb\n  listen: 10.0.0.11:6741\n"
        "  peers: {d1: 10.0.0.11:6741, d2: 10.0.0.12:6741}\n"
        f"  key_file: {key}\n"
    )
    proc = run("check-config", "-c", str(config))
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"{config}:6: lock.key_file: {key}: must not be accessible by group or others (chmod 600)",
        f"{config}: valid, but not on this host (1 problem); nothing was changed",
    ]
    key.chmod(0o600)
    key.write_text("1 abcd\n")
    proc = run("check-config", "-c", str(config))
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[0] == (
        f"{key}:1: key 1 is 2 bytes, shorter than 32 (the key file of lock.key_file, {config}:6)"
    )


def test_witness_check_strict(tmp_path: Path) -> None:
    key = tmp_path / "k"
    key.write_text("1 " + "ab" * 32 + "\n")
    key.chmod(0o600)
    witness = tmp_path / "w.yaml"
    witness.write_text(
        f"state_dir: {tmp_path / 'new'}\nwitness:\n  clusters:\n"
        f"    - {{cluster: a, listen: 127.0.0.1:6741, key_file: {key},\n"
        "       peers: {d1: 127.0.0.2:6741, d2: 127.0.0.3:6741, w1: 127.0.0.1:6741}}\n"
    )
    proc = run("witness", "--check", "-c", str(witness))
    assert proc.returncode == 0, proc.stderr
    assert "1 warning" in proc.stdout
    assert f"{witness}:1: warning: state_dir: {tmp_path / 'new'} does not exist yet" in proc.stderr
    assert run("witness", "--check", "--strict", "-c", str(witness)).returncode == 1


def test_help_of_check_config_names_the_host_checks_and_strict() -> None:
    out = " ".join(run("check-config", "--help").stdout.split())  # as wrapped to any width
    assert "--strict" in out and "key file" in out and "warning" in out
