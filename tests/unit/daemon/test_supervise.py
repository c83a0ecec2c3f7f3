"""agent.daemon.supervise: a failing task is logged, counted and restarted with backoff."""

from __future__ import annotations

import asyncio

import pytest

from agent.daemon import supervise as sv


def test_backoff_doubles_up_to_the_maximum_and_starts_over_after_a_stable_run() -> None:
    b = sv.Backoff(first=0.5, maximum=4.0, stable=60.0)
    assert [b.after_failure(0.0, 1.0) for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert b.after_failure(started=100.0, now=160.0) == 0.5  # ran 60 s: a new series


@pytest.fixture
def failures() -> list[str]:
    seen: list[str] = []
    sv.set_failure_hook(seen.append)
    yield seen  # type: ignore[misc]
    sv.set_failure_hook(None)


def test_a_failing_task_is_counted_and_restarted_until_it_returns(
    failures: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    runs: list[int] = []
    waits: list[float] = []

    async def flaky() -> None:
        runs.append(1)
        if len(runs) < 4:
            raise RuntimeError(f"boom {len(runs)}")

    async def sleep(delay: float) -> None:
        waits.append(delay)

    asyncio.run(sv.supervise("tracker", flaky, clock=lambda: 0.0, sleep=sleep))
    assert len(runs) == 4
    assert failures == ["tracker"] * 3
    assert waits == [0.5, 1.0, 2.0]
    assert "boom 1" in caplog.text and "Traceback" in caplog.text


def test_cancelling_the_supervisor_cancels_the_task(failures: list[str]) -> None:
    cancelled = []

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(1)
            raise

    async def main() -> None:
        task = asyncio.ensure_future(sv.supervise("forever", forever))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert cancelled == [1]
    assert failures == []


def test_one_failing_task_leaves_the_others_running(failures: list[str]) -> None:
    ticks: list[int] = []

    async def broken() -> None:
        raise ValueError("always")

    async def steady() -> None:
        for i in range(5):
            ticks.append(i)
            await asyncio.sleep(0)

    async def instant(delay: float) -> None:
        await asyncio.sleep(0)

    async def main() -> None:
        bad = asyncio.ensure_future(sv.supervise("broken", broken, sleep=instant))
        await sv.supervise("steady", steady)
        bad.cancel()
        await asyncio.gather(bad, return_exceptions=True)

    asyncio.run(main())
    assert ticks == [0, 1, 2, 3, 4]
    assert failures and set(failures) == {"broken"}


def test_watch_counts_a_one_shot_task_that_fails(failures: list[str]) -> None:
    async def main() -> None:
        async def notify() -> None:
            raise OSError("cannot start")

        task = asyncio.ensure_future(notify())
        sv.watch(task, "notify")
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)

    asyncio.run(main())
    assert failures == ["notify"]


def test_a_broken_counter_does_not_hide_the_failure(caplog: pytest.LogCaptureFixture) -> None:
    def hook(name: str) -> None:
        raise KeyError(name)

    sv.set_failure_hook(hook)
    try:
        sv.report_failure("x")
    finally:
        sv.set_failure_hook(None)
    assert "counting a failure of x failed" in caplog.text


def test_a_failing_lock_timer_tick_is_counted_and_the_timer_armed_again(
    failures: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.lock import transport

    class Node:
        ticks = 0

        def tick(self, now: float) -> list[object]:
            self.ticks += 1
            if self.ticks == 1:
                raise RuntimeError("bad tick")
            return []

        def drain_events(self) -> list[object]:
            return []

        def next_deadline(self) -> float | None:
            return None

    monkeypatch.setattr(transport, "TIMER_RETRY", 0.0)
    node = Node()

    async def main() -> None:
        tr = transport.LockTransport(node, {}, clock=lambda: 0.0)  # type: ignore[arg-type]
        tr._on_timer()
        for _ in range(100):
            if node.ticks == 2:
                break
            await asyncio.sleep(0.01)

    asyncio.run(main())
    assert node.ticks == 2
    assert failures == ["lock timer"]
