"""Waking the long-polls a change concerns: every one of them, with its result, and in slices that
let other work of the event loop (the device reports) run between them."""

from __future__ import annotations

import asyncio

from outpost.fleet.feed import Waiters


def test_a_wake_sets_the_events_concerned_and_hands_each_its_result() -> None:
    async def scenario() -> None:
        waiters: Waiters[str] = Waiters()
        a, b = waiters.subscribe("a"), waiters.subscribe("b")
        assert waiters.wake(everyone=False, devices=["b", "gone"], results={"b": "rb", "gone": "x"}) == 1
        assert (a.is_set(), b.is_set()) == (False, True)
        assert waiters.take("b") == "rb"
        assert waiters.take("b") is None  # once
        assert waiters.take("gone") is None  # nobody waits for it: nothing kept
        waiters.unsubscribe("a", a)
        assert waiters.devices() == ["b"]

    asyncio.run(scenario())


def test_waking_in_slices_wakes_everyone_and_lets_other_work_run_between_slices() -> None:
    async def scenario() -> None:
        waiters: Waiters[int] = Waiters()
        events = {f"d{i:03d}": waiters.subscribe(f"d{i:03d}") for i in range(250)}
        seen: list[int] = []

        async def other_work() -> None:  # a request that arrived during the wake-up
            await asyncio.sleep(0)
            seen.append(sum(e.is_set() for e in events.values()))

        other = asyncio.create_task(other_work())
        woken = await waiters.wake_in_slices(everyone=True, devices=(), results=dict.fromkeys(events, 1), size=100)
        await other
        assert woken == 250
        assert all(e.is_set() for e in events.values())
        assert 0 < seen[0] < 250  # it ran between two slices, not after the last
        assert waiters.take("d042") == 1

    asyncio.run(scenario())
