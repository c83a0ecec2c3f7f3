"""agent.daemon.worker: a reload read in another process comes back whole and exact."""

from __future__ import annotations

import asyncio
import os
import pickle
from pathlib import Path
from typing import Any

import pytest

from agent.config import Config, load_config, parse_config
from agent.daemon.offload import Offload, inline
from agent.daemon.worker import SMALL_FILE, ConfigWorker, LoadRefused, delta, rebuild
from agent.ipvs.desired import desired_table
from tests.unit.ipvs.fake_kernel import FakeKernel


def config_text(n: int, weights: dict[int, int] | None = None, skip: int | None = None) -> str:
    weights = weights or {}
    out = ["virtual_servers:"]
    for i in range(n):
        if i == skip:
            continue
        out.append(
            f"  - name: vs{i}\n    address: 10.1.{i // 250}.{i % 250 + 1}\n    port: 80\n"
            "    scheduler: wlc\n    real_servers:"
        )
        for j in range(2):
            w = weights.get(i, 1) if j == 1 else 1
            out.append(f"      - {{address: 172.16.{j}.{i % 250 + 1}, port: 8080, weight: {w}}}")
    return "\n".join(out) + "\n"


def test_delta_and_rebuild_give_back_the_new_configuration_and_table() -> None:
    old = parse_config(config_text(20))
    new = parse_config(config_text(22, weights={3: 7}, skip=5))
    old_desired = desired_table(old.virtual_servers)
    new_desired = desired_table(new.virtual_servers)
    spec, added, changed, removed = delta(old.virtual_servers, old_desired, new, new_desired)
    # vs3's weight, and every entry after the removed vs5 (their line numbers moved)
    assert [vs.name for vs in added] == ["vs3", *(f"vs{i}" for i in range(6, 22))]
    loaded = rebuild(
        old.virtual_servers,
        old_desired,
        parse_config(config_text(0).replace("virtual_servers:\n", "virtual_servers: []\n")),
        spec,
        added,
        changed,
        removed,
    )
    assert loaded.config.virtual_servers == new.virtual_servers
    assert loaded.desired == new_desired
    keys = list(old_desired)
    assert loaded.edited == {keys[3], keys[5], *(k for k in new_desired if k not in old_desired)}
    # unchanged entries are the old objects, not copies
    assert loaded.config.virtual_servers[0] is old.virtual_servers[0]


def write(path: Path, text: str) -> None:
    path.write_text(text)
    assert path.stat().st_size >= SMALL_FILE  # the worker process answers


def large_file(tmp_path: Path, n: int = 400) -> tuple[Path, Config]:
    """A file of ``n`` virtual servers that the worker process reads, and its content."""
    path = tmp_path / "config.yaml"
    write(path, config_text(n))
    return path, load_config(str(path))


def test_the_worker_process_reads_reloads_refuses_invalid_files_and_survives_a_kill(
    tmp_path: Path,
) -> None:
    n = 400
    path, base = large_file(tmp_path, n)
    base_desired = desired_table(base.virtual_servers)

    async def main() -> None:
        offload = Offload()
        worker = ConfigWorker(offload)
        try:
            write(path, config_text(n, weights={n - 1: 9}))
            loaded = await worker.load(str(path), base.virtual_servers, base_desired)
            assert loaded.config == load_config(str(path))
            assert loaded.desired == desired_table(loaded.config.virtual_servers)
            assert len(loaded.edited) == 1

            write(path, config_text(n).replace("port: 8080, weight: 1}", "port: 70000}", 1))
            with pytest.raises(LoadRefused) as refused:
                await worker.load(str(path), loaded.config.virtual_servers, loaded.desired)
            assert any("must be 1..65535" in str(p) for p in refused.value.problems)

            # a reload the daemon does not take (it keeps ``loaded``): the next one still
            # starts from what the daemon has, not from the worker's last answer
            write(path, config_text(n, weights={1: 5}))
            dropped = await worker.load(str(path), loaded.config.virtual_servers, loaded.desired)
            assert len(dropped.edited) == 2  # vs1 changed, vs{n-1} back to weight 1
            write(path, config_text(n, weights={n - 1: 9, 2: 6}))
            kept = await worker.load(str(path), loaded.config.virtual_servers, loaded.desired)
            assert kept.config == load_config(str(path))
            assert kept.desired == desired_table(kept.config.virtual_servers)
            assert len(kept.edited) == 1  # vs2, against the configuration the daemon kept

            # the worker dies: the next load starts another and gives it the base again
            worker.close()
            write(path, config_text(n, weights={0: 3}))
            again = await worker.load(str(path), loaded.config.virtual_servers, loaded.desired)
            assert again.config == load_config(str(path))
            assert again.desired == desired_table(again.config.virtual_servers)
            assert len(again.edited) == 2  # vs0 changed, vs{n-1} back to weight 1
            assert worker.starts == 2
        finally:
            worker.close()
            offload.close()

    asyncio.run(main())


def test_a_small_file_is_read_without_the_worker_process(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(config_text(3, weights={1: 4}))

    async def main() -> None:
        worker = ConfigWorker(inline, argv=["/nonexistent/python"])
        loaded = await worker.load(str(path), (), {})
        assert len(loaded.config.virtual_servers) == 3 and len(loaded.edited) == 3
        assert worker.starts == 0
        with pytest.raises(LoadRefused) as refused:
            await worker.load(str(tmp_path / "missing.yaml"), (), {})
        assert refused.value.strerror

    asyncio.run(main())


def test_the_worker_process_reads_included_files_and_reuses_the_unchanged_ones(
    tmp_path: Path,
) -> None:
    """A main file that is small on its own still goes to the worker process (its
    included files count), and a change in one included file comes back exact."""
    conf = tmp_path / "conf.d"
    conf.mkdir()
    per = 150

    def part(k: int, weights: dict[int, int] | None = None) -> str:
        text = config_text((k + 1) * per, weights).split("\n  - name: ")
        return "virtual_servers:\n  - name: " + "\n  - name: ".join(text[1 + k * per :])

    for k in range(4):
        (conf / f"{k}.yaml").write_text(part(k))
    path = tmp_path / "config.yaml"
    path.write_text("include: [conf.d/*.yaml]\n")
    assert path.stat().st_size < SMALL_FILE
    base = load_config(str(path))
    assert len(base.virtual_servers) == 4 * per
    base_desired = desired_table(base.virtual_servers)

    async def main() -> None:
        offload = Offload()
        worker = ConfigWorker(offload)
        try:
            (conf / "2.yaml").write_text(part(2, {2 * per + 5: 9}))
            loaded = await worker.load(str(path), base.virtual_servers, base_desired)
            assert worker.starts == 1  # the worker process, not the daemon's thread
            assert loaded.config == load_config(str(path))
            assert loaded.desired == desired_table(loaded.config.virtual_servers)
            assert len(loaded.edited) == 1
            # the other files' entries are the daemon's own objects
            assert loaded.config.virtual_servers[0] is base.virtual_servers[0]

            (conf / "0.yaml").write_text(part(0, {3: 4}))
            (conf / "9.yaml").write_text(part(0).replace("name: vs", "name: extra"))
            with pytest.raises(LoadRefused) as refused:  # same services in two files
                await worker.load(str(path), loaded.config.virtual_servers, loaded.desired)
            assert any(str(p).startswith(f"{conf}/9.yaml:") for p in refused.value.problems)
            (conf / "9.yaml").unlink()
            again = await worker.load(str(path), loaded.config.virtual_servers, loaded.desired)
            assert again.config == load_config(str(path))
            assert again.desired == desired_table(again.config.virtual_servers)
            assert len(again.edited) == 1
        finally:
            await worker.aclose()
            offload.close()

    asyncio.run(main())


def test_a_kept_worker_is_primed_at_start_and_started_again_when_it_ends(
    tmp_path: Path,
) -> None:
    n = 400
    path, base = large_file(tmp_path, n)
    base_desired = desired_table(base.virtual_servers)

    async def primed(worker: ConfigWorker, starts: int) -> None:
        for _ in range(400):  # bounded: 20 s
            if worker.starts == starts and worker._generation >= 0 and not worker._lock.locked():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"not primed: {worker.starts} starts")

    async def main() -> None:
        offload = Offload()
        worker = ConfigWorker(offload)
        keeper = asyncio.ensure_future(
            worker.keep(str(path), lambda: base.virtual_servers, retry=0.1)
        )
        try:
            await primed(worker, 1)
            proc = worker._proc
            assert proc is not None
            proc.kill()  # it ends: another is started and primed without a reload
            await primed(worker, 2)
            write(path, config_text(n, weights={7: 4}))
            loaded = await worker.load(str(path), base.virtual_servers, base_desired)
            assert loaded.config == load_config(str(path))
            assert len(loaded.edited) == 1 and worker.starts == 2
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
            await worker.aclose()
            offload.close()

    asyncio.run(main())


# ---------------------------------------------------------------- full reconciles


def primed_base(n: int) -> tuple[Any, Any]:
    from agent.daemon.worker import _answer, _Base, _chunks

    config = parse_config(config_text(n))
    fake = FakeKernel()
    base = _Base(lambda: fake)
    assert _answer(base, ("prime", 1, _chunks(config.virtual_servers), None)) == ("primed",)
    return base, fake


def table_of(answer: tuple[Any, ...], before: dict[Any, Any]) -> dict[Any, Any]:
    _, _, whole, chunks, removed, *_ = answer
    table = {} if whole else dict(before)
    for key in removed:
        table.pop(key, None)
    for chunk in chunks:
        table.update(pickle.loads(chunk))
    return table


def test_the_worker_reconciles_its_table_and_sends_back_only_what_changed(
    tmp_path: Path,
) -> None:
    from dataclasses import replace

    from agent.config.model import IpvsSettings
    from agent.daemon.worker import _answer
    from agent.ipvs.model import EditDest
    from agent.ipvs.state import OwnershipStore

    base, fake = primed_base(20)
    state = str(tmp_path / "state.json")
    settings = IpvsSettings()
    first = _answer(base, ("reconcile", 1, {}, settings, state, -1))
    assert first[0] == "reconciled" and first[2] is True  # the whole table: the daemon had none
    assert len(first[5]) == 20 * 3 and first[6] == [None] * 60  # 20 services, 2 dests each
    table = table_of(first, {})
    assert table == fake.dump() and len(table) == 20
    assert OwnershipStore(Path(state)).load().services == set(table)

    # nothing changed: no steps, nothing sent, no dump after them
    dumps = fake.dumps
    again = _answer(base, ("reconcile", 1, {}, settings, state, first[1]))
    assert again[0] == "reconciled" and again[2] is False
    assert again[3] == [] and again[4] == [] and again[5] == ()
    assert fake.dumps == dumps + 1

    # somebody edited a weight in the kernel; health wants another service at weight 0
    key = next(iter(fake.table))
    svc = fake.table[key]
    dest = next(iter(svc.dests))
    svc.dests[dest] = replace(svc.dests[dest], dest=replace(svc.dests[dest].dest, weight=7))
    other = list(base.desired)[5]
    down = base.desired[other]
    down = replace(down, dests={k: replace(d, weight=0) for k, d in down.dests.items()})
    fixed = _answer(base, ("reconcile", 1, {other: down}, settings, state, again[1]))
    assert [type(s.op) for s in fixed[5]] == [EditDest] * 3
    table = table_of(fixed, table)
    assert table == fake.dump()
    # the edited weight is back as the daemon had it: only the other service is sent
    assert {k for chunk in fixed[3] for k, _ in pickle.loads(chunk)} == {other}

    # the daemon lost an answer (another number): the whole table again
    whole = _answer(base, ("reconcile", 1, {}, settings, state, first[1]))
    assert whole[2] is True and table_of(whole, {}) == fake.dump()
    assert _answer(base, ("reconcile", 0, {}, settings, state, whole[1])) == ("stale",)


def test_a_reconcile_is_abandoned_on_sigusr1_before_it_writes(tmp_path: Path) -> None:
    import os
    import signal

    from agent.config.model import IpvsSettings
    from agent.daemon.worker import _answer
    from agent.ipvs.model import KernelTable

    base, fake = primed_base(3)

    class Interrupted(FakeKernel):
        def dump(self) -> KernelTable:
            os.kill(os.getpid(), signal.SIGUSR1)  # the daemon's reload came
            return super().dump()

    opened: list[FakeKernel] = []
    base._new_kernel = lambda: opened.append(Interrupted()) or opened[-1]
    state = tmp_path / "state.json"
    previous = signal.signal(signal.SIGUSR1, base.abandon)
    try:
        answer = _answer(base, ("reconcile", 1, {}, IpvsSettings(), str(state), -1))
        assert answer == ("abandoned",)
        assert not state.exists() and opened[0].writes == []
        assert base.kernel is None  # its socket may hold half a reply: dropped
        # once writing, a late signal changes nothing
        base._new_kernel = lambda: fake
        signal.raise_signal(signal.SIGUSR1)
        answer = _answer(base, ("reconcile", 1, {}, IpvsSettings(), str(state), -1))
        assert answer[0] == "reconciled" and len(fake.table) == 3 and state.exists()
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_the_daemon_side_reconciles_in_the_worker_and_stops_it_when_cancelled(
    tmp_path: Path,
) -> None:
    import sys
    import time

    from agent.daemon.worker import WorkerFailed

    n = 400
    path, base = large_file(tmp_path, n)
    slow = tmp_path / "slow"
    state = str(tmp_path / "state.json")
    argv = [sys.executable, "-m", "tests.unit.daemon.fake_worker"]

    async def main() -> None:
        offload = Offload()
        worker = ConfigWorker(offload, argv)
        os.environ["FAKE_WORKER_SLOW"] = str(slow)
        try:
            with pytest.raises(WorkerFailed):  # holds nothing yet: the daemon does it
                await worker.reconcile(base.virtual_servers, {}, base.ipvs, state)
            write(path, config_text(n, weights={3: 2}))
            first = desired_table(base.virtual_servers)
            loaded = await worker.load(str(path), base.virtual_servers, first)
            servers = loaded.config.virtual_servers
            assert worker.holds(servers) and not worker.holds(base.virtual_servers)
            outcome = await worker.reconcile(servers, {}, loaded.config.ipvs, state)
            assert outcome.ok and len(outcome.plan.steps) == n * 3
            assert len(outcome.kernel) == n
            assert outcome.ops_by_kind() == {"add_service": n, "add_real_server": 2 * n}
            again = await worker.reconcile(servers, {}, loaded.config.ipvs, state)
            assert again.plan.steps == () and again.kernel == outcome.kernel

            # a reload comes while the worker reads: stopped at once, nothing written
            slow.touch()
            task = asyncio.ensure_future(worker.reconcile(servers, {}, loaded.config.ipvs, state))
            await asyncio.sleep(0.5)
            started = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert time.monotonic() - started < 5  # not the 30 s the dump would take
            slow.unlink()
            # and the worker goes on: a reload, then a reconcile
            write(path, config_text(n, weights={3: 5}))
            reloaded = await worker.load(str(path), servers, loaded.desired)
            last = await worker.reconcile(
                reloaded.config.virtual_servers, {}, reloaded.config.ipvs, state
            )
            assert next(s.text for s in last.plan.steps).startswith("edit")
            assert worker.starts == 1
        finally:
            os.environ.pop("FAKE_WORKER_SLOW", None)
            await worker.aclose()
            offload.close()

    asyncio.run(main())
