"""Wakes the long-polls of the devices a change may concern.

One reader per process polls the store's change feed (a few milliseconds, every
``interval`` seconds) and sets the events of the devices it names, or of every waiting
device when a deployment changed. A woken long-poll re-checks its ETag and goes back to
waiting if nothing it gets has changed. Being a reader of the database, it sees changes
made through any instance. Used by the HTTP adapter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Generic, TypeVar

__all__ = ["Waiters"]

T = TypeVar("T")
WAKE_SLICE = 200


class Waiters(Generic[T]):
    """Per-device events of the long-polls waiting in this process (event-loop thread only).

    A wake-up may carry each device's fresh result (computed for all of them in one batch after
    a push), so a thousand woken long-polls do not each go back to the database.
    """

    def __init__(self) -> None:
        self._events: dict[str, set[asyncio.Event]] = {}
        self._results: dict[str, T] = {}

    def subscribe(self, device_id: str) -> asyncio.Event:
        event = asyncio.Event()
        self._events.setdefault(device_id, set()).add(event)
        return event

    def unsubscribe(self, device_id: str, event: asyncio.Event) -> None:
        events = self._events.get(device_id)
        if events is not None:
            events.discard(event)
            if not events:
                del self._events[device_id]
                self._results.pop(device_id, None)

    def devices(self) -> list[str]:
        return list(self._events)

    def take(self, device_id: str) -> T | None:
        """The result a wake-up brought for this device, once."""
        return self._results.pop(device_id, None)

    def wake(self, *, everyone: bool, devices: Iterable[str], results: Mapping[str, T] | None = None) -> int:
        """Set the events concerned; return how many long-polls were woken."""
        return self._set(self._targets(everyone, devices, results))

    async def wake_in_slices(self, *, everyone: bool, devices: Iterable[str], results: Mapping[str, T] | None = None,
                             size: int = WAKE_SLICE) -> int:  # fmt: skip
        """:meth:`wake`, ``size`` events per turn of the event loop: after a push to 10,000 devices the
        requests that arrive meanwhile (reports) are served between slices, not after every wake-up."""
        targets = self._targets(everyone, devices, results)
        woken = 0
        for start in range(0, len(targets), size):
            woken += self._set(targets[start : start + size])
            await asyncio.sleep(0)
        return woken

    def _targets(self, everyone: bool, devices: Iterable[str], results: Mapping[str, T] | None) -> list[str]:
        """The waiting devices concerned, with the results the wake-up brings them in place."""
        targets = list(self._events) if everyone else [d for d in devices if d in self._events]
        for device_id in targets:
            self._results.pop(device_id, None)
        if results:
            self._results.update((d, r) for d, r in results.items() if d in self._events)
        return targets

    def _set(self, device_ids: Iterable[str]) -> int:
        woken = 0
        for device_id in device_ids:
            for event in self._events.get(device_id, ()):  # gone meanwhile: its long-poll ended
                event.set()
                woken += 1
        return woken

    def __len__(self) -> int:
        return sum(len(events) for events in self._events.values())
