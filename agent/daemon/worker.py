"""Reading a reload's configuration, and the full reconciles of a large table, in a
separate process, so that the event loop never waits.

Parsing and validating a 10,000-service file and building its desired table take about
a second of CPU on hardware and ten or more under emulation, and some of it is single C
calls (a regex over the whole text, one ``split``) that hold the interpreter lock from
start to end: a thread would still stall the loop. ``python -m agent.daemon.worker``
does that work instead, in its own interpreter (started with exec, never a fork of the
threaded daemon), and answers with what changed, not the whole table: carrying 50,000
objects back through pickle would cost the daemon as much as parsing them.

The worker keeps the daemon's current virtual servers and desired table (its *base*,
numbered by a generation). A load answers with the configuration's small sections
whole, the virtual servers as positions in the base or new entries, and the desired
services that changed or went; both sides then move to the next generation. A worker
that was restarted, or a daemon that dropped an answer, finds the generations differ:
the daemon sends its base again (``prime``) and repeats the load.

The daemon starts the worker once it is ready and keeps it running (``keep``: primed
with its configuration and the file's path, started again when it ends). The worker
reads each file with ``agent.config.incremental.Rereader``, which re-validates only the
``virtual_servers`` entries whose text changed since its last read, and builds desired
entries only for the virtual servers that changed: a one-weight reload of a 10,000-service
file costs a split of the text and a dictionary look-up per entry, not a parse.

**Full reconciles.** Decoding a 10,000-service dump is half a million objects; in the
daemon, even in steps between the loop's wakes, it held the loop for hundreds of ms
under emulation (the interpreter lock, and collections over what it allocated). A
worker that holds the daemon's configuration (``holds``) does the whole reconcile
instead, as ``agent.ipvs.reconciler.reconcile`` does it: the ownership file, the dump,
the plan over its base's desired table (health's changed services sent along), the
writes. It answers with the steps, their results and the services of the table that
changed since its last answer (unchanged, idle services are the same decoded objects,
``agent.ipvs.netlink.DumpCache``): the daemon merges them into its copy for metrics and
status, ``TABLE_CHUNK`` services per ``pickle.loads`` on its worker thread. Each table
is numbered; a daemon whose number differs gets the whole table. A SIGHUP that comes
while the worker still reads or plans cancels the request: the daemon sends SIGUSR1,
the worker stops before writing anything and answers ``abandoned`` (once it writes,
the signal is ignored and the reconcile finishes). Sysctls stay the daemon's. A
``dump`` request reads the table the same way, without planning (``lvs-agent status``).

Requests and answers are length-prefixed pickles on the worker's stdin and stdout.
A worker that dies is also started again at the next request. If none can be started the
daemon reads the file on its worker thread (slower for the loop, but it keeps going).

Never imports the daemon; the daemon side (``ConfigWorker``) never parses YAML or
decodes a full dump itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import struct
import sys
import traceback
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from agent.config import Config
    from agent.config.model import IpvsSettings, VirtualServer
    from agent.ipvs.model import DesiredTable, KernelTable, ServiceKey
    from agent.ipvs.netlink import DumpCache
    from agent.ipvs.reconciler import IpvsTable, Offload, Outcome
    from agent.ipvs.state import OwnershipStore

log = logging.getLogger("lvs-agent")

_HEADER = struct.Struct(">Q")
#: below this file size a reload is read on the daemon's worker thread: the round trip
#: through a second interpreter would cost more than the work itself
SMALL_FILE = 64 * 1024
#: answers larger than this are unpickled on the worker thread, not on the loop
SMALL_ANSWER = 64 * 1024
NICE = 10  # the worker's scheduling priority, below the daemon's
CHUNK = 256  # virtual servers per pickle.dumps call when the daemon sends its own
#: kernel services (with their real servers and counters) per pickle the daemon loads
TABLE_CHUNK = 32


@dataclass(frozen=True)
class Loaded:
    """A valid configuration, its desired table and the services that differ from before."""

    config: Config
    desired: DesiredTable
    edited: frozenset[ServiceKey]


class LoadRefused(Exception):
    """The file is invalid (``problems``) or unreadable (``strerror``)."""

    def __init__(self, problems: list[Any], strerror: str | None = None) -> None:
        self.problems = problems
        self.strerror = strerror
        super().__init__(strerror or "\n".join(map(str, problems)))


class WorkerFailed(Exception):
    """The worker process crashed or answered with an unexpected error."""


# ---------------------------------------------------------------- the pure parts


def delta(
    base_vs: tuple[VirtualServer, ...],
    base_desired: DesiredTable,
    config: Config,
    desired: DesiredTable,
    keys: dict[int, ServiceKey] | None = None,
) -> tuple[list[int], list[VirtualServer], dict[ServiceKey, Any], list[ServiceKey]]:
    """How ``config``/``desired`` differ from the base: (positions, new virtual servers,
    changed desired services, removed service keys). A position >= 0 names a base entry,
    -1 - i the i-th new one. ``keys``: the service key of each base entry, by ``id``."""
    from agent.ipvs.desired import service_key

    # The same objects first: an included file whose bytes did not change gives back
    # the virtual servers it gave before (agent.config.include), found without a compare.
    same = {id(vs): i for i, vs in enumerate(base_vs)}
    if keys is None:
        keys = {id(vs): service_key(vs) for vs in base_vs}
    where = {keys[id(vs)]: i for i, vs in enumerate(base_vs)}
    spec: list[int] = []
    new: list[VirtualServer] = []
    for vs in config.virtual_servers:
        i = same.get(id(vs))
        if i is None or base_vs[i] is not vs:
            i = where.get(service_key(vs))
        if i is not None and (base_vs[i] is vs or base_vs[i] == vs):
            spec.append(i)
        else:
            spec.append(-1 - len(new))
            new.append(vs)
    changed = {
        k: v for k, v in desired.items() if (old := base_desired.get(k)) is not v and old != v
    }
    removed = [k for k in base_desired if k not in desired]
    return spec, new, changed, removed


def reuse_desired(
    base_vs: tuple[VirtualServer, ...],
    base_desired: DesiredTable,
    servers: tuple[VirtualServer, ...],
    keys: dict[int, ServiceKey],
) -> DesiredTable:
    """``desired_table(servers)``, taking the base's entry for each virtual server
    that is the base's own object (read from an included file that did not change).
    ``keys``: the service key of each base entry, by ``id``."""
    from agent.ipvs.desired import desired_table, service_key

    same = {id(vs): vs for vs in base_vs}
    fresh = [vs for vs in servers if same.get(id(vs)) is not vs]
    if len(fresh) * 2 > len(servers):
        return desired_table(servers)
    made = desired_table(tuple(fresh))
    table: DesiredTable = {}
    for vs in servers:
        entry = None
        if same.get(id(vs)) is vs:
            key = keys[id(vs)]
            entry = base_desired.get(key)
        else:
            key = service_key(vs)
            entry = made.get(key)
        if entry is None:  # not in the base's table (cannot happen): build it
            entry = desired_table((vs,))[key]
        table[key] = entry
    return table


def keys_by_id(servers: tuple[VirtualServer, ...], desired: DesiredTable) -> dict[int, ServiceKey]:
    """The service key of each of ``servers`` by ``id``, when ``desired`` was built
    from them in their order (one entry each: a valid configuration has no duplicates)."""
    if len(servers) != len(desired):
        from agent.ipvs.desired import service_key

        return {id(vs): service_key(vs) for vs in servers}
    return {id(vs): key for vs, key in zip(servers, desired, strict=True)}


def rebuild(
    base_vs: tuple[VirtualServer, ...],
    base_desired: DesiredTable,
    rest: Config,
    spec: list[int],
    new: list[VirtualServer],
    changed: dict[ServiceKey, Any],
    removed: list[ServiceKey],
) -> Loaded:
    """The daemon's side of ``delta``: the whole configuration and table again."""
    servers = tuple(base_vs[i] if i >= 0 else new[-1 - i] for i in spec)
    desired = dict(base_desired)
    for key in removed:
        desired.pop(key, None)
    desired.update(changed)
    config = replace(rest, virtual_servers=servers)
    return Loaded(config, desired, frozenset(changed) | frozenset(removed))


def load_here(path: str, base_desired: DesiredTable) -> Loaded:
    """Read ``path`` in this process (small files, or no worker process)."""
    from agent.config import ConfigError, load_config
    from agent.ipvs.desired import desired_table

    try:
        config = load_config(path)
    except ConfigError as exc:
        raise LoadRefused(exc.problems) from None
    except OSError as exc:
        raise LoadRefused([], exc.strerror or str(exc)) from None
    desired = desired_table(config.virtual_servers)
    edited = frozenset(
        k for k in base_desired.keys() | desired.keys() if base_desired.get(k) != desired.get(k)
    )
    return Loaded(config, desired, edited)


def _chunks(items: tuple[Any, ...], size: int = CHUNK) -> list[bytes]:
    """``items`` pickled ``size`` at a time: each ``pickle.dumps`` or ``loads`` is one C
    call that holds the interpreter lock throughout, and the daemon's loop waits for it."""
    return [_pickled(items[i : i + size]) for i in range(0, len(items), size)]


def _pickled(value: object) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


# ---------------------------------------------------------------- the worker process


class Abandoned(BaseException):
    """The daemon asked (SIGUSR1) to stop a reconcile that has not written anything yet.
    Not an ``Exception``: no handler on the way out of a kernel call may swallow it."""


class _Base:
    def __init__(self, kernel: Callable[[], IpvsTable] | None = None) -> None:
        from agent.config.incremental import Rereader

        self.generation = -1
        self.servers: tuple[VirtualServer, ...] = ()
        self.desired: DesiredTable = {}
        self.keys: dict[int, ServiceKey] = {}  # of ``servers``, by id
        self.reader = Rereader()  # the file's last read: the next one re-reads what changed
        self._new_kernel = kernel
        self.kernel: IpvsTable | None = None  # opened at the first reconcile
        self._cache: DumpCache | None = None  # a dropped kernel's decoded objects
        self.stores: dict[str, OwnershipStore] = {}  # by path: each skips unchanged saves
        self.sent: KernelTable = {}  # the kernel's table as the daemon has it ...
        self.sent_generation = 0  # ... and its number
        self.abandonable = False  # SIGUSR1 raises Abandoned while this is set

    def open_kernel(self) -> IpvsTable:
        if self.kernel is None:
            if self._new_kernel is None:
                from agent.ipvs.kernel import IpvsKernel

                kernel = IpvsKernel()
                if self._cache is not None:
                    kernel.dump_cache = self._cache
                self.kernel = kernel
            else:
                self.kernel = self._new_kernel()
        return self.kernel

    def drop_kernel(self) -> None:
        """After an interrupted call its socket may hold the rest of a reply: a new one.
        Its decoded objects stay (an interrupted dump only read them): the next dump
        decodes what changed, not the whole table again."""
        kernel, self.kernel = self.kernel, None
        self._cache = getattr(kernel, "dump_cache", None) or self._cache
        close = getattr(kernel, "close", None)
        if close is not None:
            with contextlib.suppress(OSError):
                close()

    def abandon(self, signum: int, frame: object) -> None:
        """SIGUSR1's handler: stop the reconcile if it has not begun to write."""
        if self.abandonable:
            self.abandonable = False
            raise Abandoned


def _answer(base: _Base, request: tuple[Any, ...]) -> tuple[Any, ...]:
    from agent.config import ConfigError
    from agent.ipvs.desired import desired_table

    kind = request[0]
    if kind == "prime":
        _, generation, chunks, path = request
        base.servers = tuple(vs for chunk in chunks for vs in pickle.loads(chunk))
        if path is not None:
            # Read the file once now, so that the first reload re-reads only what it
            # changed; when it still says what the daemon runs, its objects are the base.
            with contextlib.suppress(ConfigError, OSError):
                read = base.reader.load(path).virtual_servers
                if read == base.servers:
                    base.servers = read
        base.desired = desired_table(base.servers)
        base.keys = keys_by_id(base.servers, base.desired)
        base.generation = generation
        return ("primed",)
    if kind == "load":
        _, generation, path = request
        if generation != base.generation:
            return ("stale",)
        try:
            config = base.reader.load(path)
        except ConfigError as exc:
            return ("invalid", exc.problems)
        except OSError as exc:
            return ("unreadable", exc.strerror or str(exc))
        desired = reuse_desired(base.servers, base.desired, config.virtual_servers, base.keys)
        spec, new, changed, removed = delta(base.servers, base.desired, config, desired, base.keys)
        rest = replace(config, virtual_servers=())
        base.servers, base.desired = config.virtual_servers, desired
        base.keys = keys_by_id(base.servers, base.desired)
        base.generation += 1
        return ("loaded", base.generation, rest, spec, new, changed, removed)
    if kind == "reconcile":
        return _reconcile(base, request)
    if kind == "dump":
        return _dump(base, request)
    return ("error", f"unknown request {kind!r}")


def _reconcile(base: _Base, request: tuple[Any, ...]) -> tuple[Any, ...]:
    """A full reconcile of the base's desired table, health's ``overrides`` on top: read
    the ownership file and the kernel, plan, write the file ahead, apply, write it after
    (``agent.ipvs.reconciler.reconcile``, step for step). Answers with the steps and
    their results, and the table read as a change to what the daemon has (``have``)."""
    from pathlib import Path

    from agent.ipvs.reconciler import apply_plan, boottime, ownership_after, read_and_plan
    from agent.ipvs.state import OwnershipStore, StateFileError

    _, generation, overrides, settings, state_path, have = request
    if generation != base.generation:
        return ("stale",)
    desired = base.desired
    if overrides:
        desired = dict(desired)
        desired.update(overrides)
    store = base.stores.get(state_path)
    if store is None:
        store = base.stores[state_path] = OwnershipStore(Path(state_path))
    try:
        kernel = base.open_kernel()
        base.abandonable = True
        try:
            owned, table, p = read_and_plan(kernel, store, desired, settings, boottime())
            base.abandonable = False
        except Abandoned:
            base.drop_kernel()
            return ("abandoned",)
        finally:
            base.abandonable = False
        results = apply_plan(kernel, store, owned, p)
        store.save(ownership_after(owned, p, results))
        if p.steps:
            table = kernel.dump()  # the table as it now is, for metrics and status
    except StateFileError as exc:
        return ("failed", "state_file", str(exc))
    except OSError as exc:
        base.drop_kernel()
        return ("failed", "state_file" if exc.filename else "netlink", str(exc))
    return ("reconciled", *_table_change(base, table, have), p.steps, results, p.draining)


def _dump(base: _Base, request: tuple[Any, ...]) -> tuple[Any, ...]:
    """The kernel's whole table, as a change to what the daemon has (``have``)."""
    _, generation, have = request
    if generation != base.generation:
        return ("stale",)
    try:
        table = base.open_kernel().dump()
    except OSError as exc:
        base.drop_kernel()
        return ("failed", "netlink", str(exc))
    return ("dumped", *_table_change(base, table, have))


def _table_change(base: _Base, table: KernelTable, have: int) -> tuple[Any, ...]:
    """(number, whole, chunks, removed): ``table`` as the services that differ from the
    one the daemon has (number ``have``), or whole when it has another one."""
    whole = have != base.sent_generation  # the daemon has another table (or none)
    if whole:
        changed, removed = table, []
    else:
        sent = base.sent
        changed = {k: v for k, v in table.items() if (old := sent.get(k)) is not v and old != v}
        removed = [k for k in sent if k not in table]
    base.sent = table
    base.sent_generation += 1
    return base.sent_generation, whole, _chunks(tuple(changed.items()), TABLE_CHUNK), removed


def main(kernel: Callable[[], IpvsTable] | None = None) -> int:
    """``python -m agent.daemon.worker``: answer requests until stdin closes. ``kernel``
    opens the IPVS table (default: ``agent.ipvs.kernel.IpvsKernel``)."""
    import gc

    gc.disable()  # one job at a time, no cycles worth collecting: see agent.daemon.offload
    # Background work: when CPUs are short, the daemon's loop (VRRP, the lock) goes first.
    with contextlib.suppress(OSError):
        os.nice(NICE)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    base = _Base(kernel)
    signal.signal(signal.SIGUSR1, base.abandon)
    while True:
        head = stdin.read(_HEADER.size)
        if len(head) < _HEADER.size:
            return 0
        request = pickle.loads(stdin.read(_HEADER.unpack(head)[0]))
        try:
            answer = _answer(base, request)
        except Exception:
            base.generation = -1  # half-updated: the daemon primes again
            answer = ("error", traceback.format_exc())
        data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        stdout.write(_HEADER.pack(len(data)) + data)
        stdout.flush()
        gc.collect()


# ---------------------------------------------------------------- the daemon's side


class ConfigWorker:
    """The daemon's handle on the worker process; one request at a time."""

    def __init__(self, run: Offload, argv: list[str] | None = None) -> None:
        self._run = run  # the daemon's worker thread (agent.daemon.offload.Offload)
        self._argv = argv or [sys.executable, "-m", "agent.daemon.worker"]
        self._proc: asyncio.subprocess.Process | None = None
        self._generation = -2  # the worker's base, as far as we know (-2: none yet)
        self._base: tuple[VirtualServer, ...] | None = None  # ... and the daemon's tuple of it
        self._lock = asyncio.Lock()
        self._closed: asyncio.subprocess.Process | None = None
        self.starts = 0
        # The kernel's table as the worker's last reconcile gave it, and its number there.
        self._table: KernelTable = {}
        self._table_generation = -1

    async def start(self) -> None:
        """Start the process now (the first reload need not wait for its imports)."""
        async with self._lock:
            await self._ensure()

    async def keep(
        self, path: str, base: Callable[[], tuple[VirtualServer, ...]], retry: float = 5.0
    ) -> None:
        """Keep a worker running and primed with ``base()`` (the daemon's virtual servers)
        and ``path``, started again ``retry`` seconds after it ends, until cancelled: no
        reload waits for the process to start or for the file's first read."""
        while True:
            try:
                async with self._lock:
                    await self._ensure()
                    if self._generation < 0 or self._base is not base():
                        await self._prime(base(), path)
                        log.info("configuration worker ready (%s read)", path)
                    proc = self._proc
            except WorkerFailed as exc:
                log.warning("%s; trying again in %gs", exc, retry)
                await asyncio.sleep(retry)
                continue
            assert proc is not None
            await proc.wait()
            log.warning(
                "the configuration worker ended (exit status %s); starting another in %gs",
                proc.returncode,
                retry,
            )
            await asyncio.sleep(retry)

    async def load(
        self, path: str, base_vs: tuple[VirtualServer, ...], base_desired: DesiredTable
    ) -> Loaded:
        """Read ``path``; raises LoadRefused (invalid, unreadable) or WorkerFailed."""
        from agent.config.include import total_size

        try:
            # the included files count too (their sizes: a stat each, off the loop)
            small = await self._run(lambda: total_size(path, SMALL_FILE) < SMALL_FILE)
        except OSError as exc:
            raise LoadRefused([], exc.strerror or str(exc)) from None
        if small:
            return await self._run(lambda: load_here(path, base_desired))
        async with self._lock:
            if base_vs is not self._base:
                # The daemon kept another configuration than the worker's last answer
                # (it refused that reload for a reason of its own): start from its own.
                self._generation = -1
            for attempt in range(2):
                try:
                    await self._ensure()
                    if self._generation < 0:
                        await self._prime(base_vs, path)
                    answer = await self._ask(("load", self._generation, path))
                except WorkerFailed:
                    if attempt:
                        raise
                    continue  # a worker that died: once more with a new one
                if answer[0] == "stale":
                    self._generation = -1
                    continue
                if answer[0] == "invalid":
                    raise LoadRefused(answer[1])
                if answer[0] == "unreadable":
                    raise LoadRefused([], answer[1])
                if answer[0] != "loaded":
                    self._generation = -1
                    raise WorkerFailed(str(answer[1:]))
                loaded = await self._run(partial(rebuild, base_vs, base_desired, *answer[2:]))
                self._generation, self._base = answer[1], loaded.config.virtual_servers
                return loaded
            raise WorkerFailed("the worker does not keep its base")

    def holds(self, base_vs: tuple[VirtualServer, ...]) -> bool:
        """Whether the running worker's base is ``base_vs`` (the daemon's virtual
        servers): then it can reconcile them (``reconcile``)."""
        proc = self._proc
        return (
            proc is not None
            and proc.returncode is None
            and self._generation >= 0
            and self._base is base_vs
        )

    async def reconcile(
        self,
        base_vs: tuple[VirtualServer, ...],
        overrides: DesiredTable,
        settings: IpvsSettings,
        state_path: str,
    ) -> Outcome:
        """A full reconcile of ``base_vs``'s desired table (``overrides``: health's
        changes to it) done by the worker process: the dump is decoded and planned there,
        and only the steps and what changed in the table since the last answer come
        back. Raises WorkerFailed (no worker holding ``base_vs``: reconcile here
        instead), ``StateFileError`` or ``OSError`` (ownership file, netlink) like a
        reconcile here. Cancelled before the worker began to write, it stops the
        worker's reconcile (SIGUSR1) and is cancelled; once it wrote, it finishes."""
        async with self._lock:
            if not self.holds(base_vs):
                raise WorkerFailed("the configuration worker does not hold this configuration")
            have = self._table_generation
            request = ("reconcile", self._generation, overrides, settings, state_path, have)
            self._send(_pickled(request))
            # Shielded: a cancellation between the answer's header and its body must not
            # leave half of it in the pipe for the next request to misread.
            receiving = asyncio.ensure_future(self._receive())
            try:
                answer = await asyncio.shield(receiving)
            except asyncio.CancelledError:
                self._interrupt()
                try:
                    answer = await receiving
                except asyncio.CancelledError:
                    self.close()  # cancelled twice (shutting down): the stream is lost
                    raise
                if answer[0] != "reconciled":
                    raise
            return await self._reconciled(answer, settings)

    async def dump(self, base_vs: tuple[VirtualServer, ...]) -> KernelTable:
        """The kernel's whole table, read and decoded by the worker (``lvs-agent
        status``); raises WorkerFailed (read it here instead) or OSError (netlink)."""
        async with self._lock:
            if not self.holds(base_vs):
                raise WorkerFailed("the configuration worker does not hold this configuration")
            self._send(_pickled(("dump", self._generation, self._table_generation)))
            try:
                answer = await self._receive()
            except asyncio.CancelledError:
                self.close()  # the answer would be left in the pipe: start afresh
                raise
            return await self._table_of(answer, "dumped")

    async def _table_of(self, answer: tuple[Any, ...], kind: str) -> KernelTable:
        """The table an answer of ``kind`` carries, merged into the last one."""
        from agent.ipvs.state import StateFileError

        if answer[0] == "failed":
            if answer[1] == "state_file":
                raise StateFileError(answer[2])
            raise OSError(answer[2])
        if answer[0] != kind:
            if answer[0] != "stale":
                self._generation = -1
            raise WorkerFailed(f"the configuration worker answered {answer[0:2]}, not {kind}")
        generation, whole, chunks, removed = answer[1:5]
        before = {} if whole else self._table

        def merge() -> KernelTable:
            table = dict(before)
            for key in removed:
                table.pop(key, None)
            for chunk in chunks:
                table.update(pickle.loads(chunk))
            return table

        table = await self._run(merge)
        self._table, self._table_generation = table, generation
        return table

    async def _reconciled(self, answer: tuple[Any, ...], settings: IpvsSettings) -> Outcome:
        from agent.ipvs.plan import Ownership, Plan
        from agent.ipvs.reconciler import Outcome, sysctl_changes, write_sysctls

        table = await self._table_of(answer, "reconciled")
        steps, results, draining = answer[5:]
        # The worker keeps the ownership; the plan's copy of it is left empty here.
        outcome = Outcome(Plan(steps, Ownership(), draining), table, results, applied=True)
        outcome.sysctls = sysctl_changes(settings.sysctls)
        outcome.sysctl_errors = write_sysctls(outcome.sysctls)
        return outcome

    def _interrupt(self) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGUSR1)

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.kill()
        self._closed = proc

    async def aclose(self) -> None:
        """``close``, then reap the process while the loop still runs."""
        self.close()
        proc, self._closed = self._closed, None
        if proc is not None:
            with contextlib.suppress(TimeoutError, ProcessLookupError):
                await asyncio.wait_for(proc.wait(), 5)

    async def _ensure(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            return
        self._proc = None
        self._generation = -1
        self._table_generation = -1  # a new process has sent no table yet
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self._argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=1 << 20,
            )
        except OSError as exc:
            raise WorkerFailed(f"cannot start the configuration worker: {exc}") from exc
        self.starts += 1

    async def _prime(self, base_vs: tuple[VirtualServer, ...], path: str | None) -> None:
        generation = max(0, self._generation) + 1
        data = await self._run(lambda: _pickled(("prime", generation, _chunks(base_vs), path)))
        answer = await self._exchange(data)
        if answer[0] != "primed":
            raise WorkerFailed(str(answer[1:]))
        self._generation, self._base = generation, base_vs

    async def _ask(self, request: tuple[Any, ...]) -> tuple[Any, ...]:
        return await self._exchange(pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL))

    async def _exchange(self, data: bytes) -> tuple[Any, ...]:
        self._send(data)
        return await self._receive()

    def _send(self, data: bytes) -> None:
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        try:
            proc.stdin.write(_HEADER.pack(len(data)) + data)
        except OSError as exc:
            self.close()
            raise WorkerFailed(f"the configuration worker stopped: {exc}") from exc

    async def _receive(self) -> tuple[Any, ...]:
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        try:
            await proc.stdin.drain()
            head = await proc.stdout.readexactly(_HEADER.size)
            body = await proc.stdout.readexactly(_HEADER.unpack(head)[0])
        except (OSError, asyncio.IncompleteReadError) as exc:
            self.close()
            raise WorkerFailed(f"the configuration worker stopped: {exc}") from exc
        if len(body) > SMALL_ANSWER:
            answer: tuple[Any, ...] = await self._run(lambda: pickle.loads(body))
        else:
            answer = pickle.loads(body)
        return answer

if __name__ == "__main__":
    sys.exit(main())
