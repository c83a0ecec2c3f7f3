"""vagrant/Vagrantfile is valid for Vagrant (``vagrant validate --ignore-provider``: no
hypervisor or box needed) and describes the inventory example's machines. Vagrant's
state goes to a temporary directory, not to the tree."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from tests.check_skips import skip_or_fail

REPO = Path(__file__).resolve().parents[2]


def test_vagrantfile_validates(tmp_path: Path) -> None:
    vagrant = shutil.which("vagrant")
    if vagrant is None:
        skip_or_fail("needs vagrant (Debian vagrant)")
    env = dict(
        os.environ,
        VAGRANT_CHECKPOINT_DISABLE="1",
        VAGRANT_HOME=str(tmp_path / "home"),
        VAGRANT_DOTFILE_PATH=str(tmp_path / "dot"),
    )
    done = subprocess.run(
        [vagrant, "validate", "--ignore-provider"],
        cwd=REPO / "vagrant",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Vagrantfile validated successfully." in done.stdout
    key = (tmp_path / "dot" / "cluster.key").read_text()
    assert re.fullmatch(r"1 [0-9a-f]{64}", key)
    assert (tmp_path / "dot" / "cluster.key").stat().st_mode & 0o077 == 0


def test_vagrant_machines_match_the_inventory_example() -> None:
    vagrantfile = (REPO / "vagrant" / "Vagrantfile").read_text()
    inventory = (REPO / "ansible" / "inventory.example.ini").read_text()
    machines = dict(re.findall(r'"(\w+)"\s*=> \{ ip: "#\{NET\}\.(\d+)"', vagrantfile))
    net = re.search(r'^NET = "([\d.]+)"', vagrantfile, re.M)
    assert net
    hosts = dict(re.findall(r"^(\w+) ansible_host=\S+ lvs_address=([\d.]+)", inventory, re.M))
    assert {h: f"{net.group(1)}.{n}" for h, n in machines.items()} == hosts
