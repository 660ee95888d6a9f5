"""Wakes the long-polls of the devices a change may concern.

One reader per process polls the store's change feed (a few milliseconds, every
``interval`` seconds) and sets the events of the devices it names, or of every waiting
device when a deployment changed. A woken long-poll re-checks its ETag and goes back to
waiting if nothing it gets has changed. Being a reader of the database, it sees changes
made through any instance. Used by the HTTP adapter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

__all__ = ["Waiters"]


class Waiters:
    """Per-device events of the long-polls waiting in this process (event-loop thread only)."""

    def __init__(self) -> None:
        self._events: dict[str, set[asyncio.Event]] = {}

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

    def wake(self, *, everyone: bool, devices: Iterable[str]) -> int:
        """Set the events concerned; return how many long-polls were woken."""
        targets = list(self._events) if everyone else [d for d in devices if d in self._events]
        woken = 0
        for device_id in targets:
            for event in self._events.get(device_id, ()):
                event.set()
                woken += 1
        return woken

    def __len__(self) -> int:
        return sum(len(events) for events in self._events.values())
