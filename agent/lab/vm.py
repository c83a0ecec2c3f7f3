"""Run a command inside a virtme-ng VM that boots a kernel with IPVS.

Used by the lab (when the running kernel has no IPVS), by the kernel test tier and
by the benchmarks. The guest shares the host's filesystem read-only (plus the
read-write directories given), so the host's Python and venv run unchanged.

Why the runtime bundle: under software emulation every file access over the
guest's 9p root costs milliseconds, and Python's import system makes thousands
of them (``import pyroute2`` took 18 s in the guest, 0.2 s on the host). Before
running the command, the guest mounts tmpfs over the interpreter's standard
library and the venv's site-packages and unpacks one tarball of each there, at
the same paths, so imports run from memory. Nothing on the host is changed.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import threading
from pathlib import Path

# Parts of the stdlib and of the venv that no guest command needs (tests,
# GUIs, static libraries, type checkers): they only make the bundle slower.
_STDLIB_SKIP = {
    "site-packages",
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
}
_STDLIB_SKIP_PREFIX = ("config-",)
_VENV_SKIP_PREFIX = (
    "mypy",
    "mypyc",
    "pip",
    "setuptools",
    "pkg_resources",
    "ruff",
    "virtme",
    "ast_serialize",
    "librt",
)
_VENV_SKIP_SUFFIX = ("__mypyc.cpython-311-x86_64-linux-gnu.so",)


class VMUnavailable(RuntimeError):
    """What a VM run needs is missing on this host; the message says what to install."""


def ipvs_kernel_image() -> tuple[str, str]:
    """Return (vmlinuz path, version) of the newest installed kernel that ships IPVS."""
    candidates: list[tuple[tuple[int, ...], str]] = []
    for image in Path("/boot").glob("vmlinuz-*"):
        version = image.name.removeprefix("vmlinuz-")
        if (Path("/lib/modules") / version / "kernel/net/netfilter/ipvs").is_dir():
            key = tuple(int(p) for p in version.replace("-", ".").split(".") if p.isdigit())
            candidates.append((key, version))
    if not candidates:
        raise VMUnavailable(
            "no installed kernel image with IPVS modules was found under /boot; "
            "install one with: apt-get install linux-image-amd64"
        )
    version = max(candidates)[1]
    return f"/boot/vmlinuz-{version}", version


def vng_path() -> str:
    for candidate in (Path(sys.prefix) / "bin" / "vng", shutil.which("vng")):
        if candidate and os.access(str(candidate), os.X_OK):
            return str(candidate)
    raise VMUnavailable("virtme-ng (vng) is not installed; install it with: pip install virtme-ng")


def _filtered(prefixes: tuple[str, ...], names: set[str], suffixes: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        top = info.name.split("/", 1)[0]
        base = info.name.rsplit("/", 1)[-1]
        if top in names or top.startswith(prefixes) or base.endswith(suffixes):
            return None
        if "__pycache__" in info.name and ".opt-" in base:
            return None
        return info

    return keep


def _tree_stamp(root: Path) -> str:
    """Cheap fingerprint of a directory tree: names and mtimes of its top entries."""
    # The skip lists are part of the fingerprint: changing them rebuilds the bundle.
    h = hashlib.sha256(repr((str(root), _STDLIB_SKIP, _VENV_SKIP_PREFIX)).encode())
    for entry in sorted(root.iterdir()):
        st = entry.stat()
        h.update(f"{entry.name}:{st.st_mtime_ns}:{st.st_size}".encode())
    return h.hexdigest()[:16]


def _bundle(src: Path, out: Path, keep) -> Path:  # type: ignore[no-untyped-def]
    stamp = out.with_suffix(".stamp")
    want = _tree_stamp(src)
    if out.exists() and stamp.exists() and stamp.read_text() == want:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")  # two VMs may start at once
    with tarfile.open(tmp, "w") as tar:
        for entry in sorted(src.iterdir()):
            tar.add(str(entry), arcname=entry.name, filter=keep)
    tmp.replace(out)
    stamp.write_text(want)
    return out


def runtime_bundles(cache: Path) -> list[tuple[Path, Path]]:
    """(directory to overlay in the guest, tarball of its contents) pairs."""
    stdlib = Path(
        sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})["stdlib"]
    )
    site = Path(sysconfig.get_paths()["purelib"])
    pairs = [
        (
            stdlib,
            _bundle(stdlib, cache / "stdlib.tar", _filtered(_STDLIB_SKIP_PREFIX, _STDLIB_SKIP)),
        )
    ]
    if sys.prefix != sys.base_prefix:
        pairs.append(
            (
                site,
                _bundle(
                    site,
                    # One per venv: VMs booted at once from several checkouts must each
                    # get their own packages (and their own editable path entries).
                    cache
                    / f"site-packages-{hashlib.sha256(sys.prefix.encode()).hexdigest()[:12]}.tar",
                    _filtered(_VENV_SKIP_PREFIX, set(), _VENV_SKIP_SUFFIX),
                ),
            )
        )
    return pairs


def guest_script(command: str, bundles: list[tuple[Path, Path]]) -> str:
    lines = ["set -e", "mkdir -p /run/netns"]
    for target, tarball in bundles:
        t, b = shlex.quote(str(target)), shlex.quote(str(tarball))
        lines.append(f"mount -t tmpfs -o size=1G lvs-agent-py {t} && tar xf {b} -C {t}")
    lines += ["set +e", command]
    return "\n".join(lines) + "\n"


def run_in_vm(
    command: str,
    *,
    rwdirs: list[str],
    memory: str = "2G",
    cpus: int = 2,
    cache: Path | None = None,
    timeout: float | None = None,
) -> int:
    """Boot the IPVS kernel, run ``command`` with bash in the guest, return its exit status."""
    image, _version = ipvs_kernel_image()
    vng = vng_path()
    if shutil.which("qemu-system-x86_64") is None:
        raise VMUnavailable(
            "qemu is not installed; install it with: apt-get install qemu-system-x86"
        )
    cache = cache or Path(os.environ.get("LVS_AGENT_VM_CACHE", "/var/tmp/lvs-agent-vm"))
    bundles = runtime_bundles(cache)
    script = cache / f"guest-{os.getpid()}.sh"
    script.write_text(guest_script(command, bundles))
    env = dict(os.environ)
    env["PATH"] = f"{Path(vng).parent}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
    argv = [vng, "--run", image, "--disable-kvm", "--memory", memory, "--cpus", str(cpus)]
    # virtme overlays /tmp, /var/tmp and friends in the guest: share the cache explicitly.
    for d in [str(cache), *rwdirs]:
        argv += ["--rwdir", d]
    argv += ["--exec", f"bash {shlex.quote(str(script))}"]
    try:
        # The guest's output comes back through a pipe that we copy: when our stdout is a
        # regular file, virtme-ng's guest would otherwise write into it from offset 0,
        # over what the host wrote before.
        with subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        ) as proc:
            assert proc.stdout is not None
            killer = threading.Timer(timeout, proc.kill) if timeout is not None else None
            if killer is not None:
                killer.start()
            try:
                while chunk := os.read(proc.stdout.fileno(), 65536):
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.buffer.flush()
                returncode = proc.wait()
            finally:
                if killer is not None:
                    killer.cancel()
            if timeout is not None and returncode < 0:
                raise subprocess.TimeoutExpired(argv, timeout)
            return returncode
    finally:
        script.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m agent.lab.vm [--rwdir DIR]... -- COMMAND``: run COMMAND in the VM."""
    args = list(sys.argv[1:] if argv is None else argv)
    rwdirs: list[str] = []
    while args and args[0] == "--rwdir":
        rwdirs.append(args[1])
        del args[:2]
    if args and args[0] == "--":
        args = args[1:]
    if not args:
        print("usage: python -m agent.lab.vm [--rwdir DIR]... -- COMMAND", file=sys.stderr)
        return 2
    try:
        return run_in_vm(" ".join(args), rwdirs=rwdirs or [os.getcwd()])
    except VMUnavailable as exc:
        print(f"lvs-agent: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
