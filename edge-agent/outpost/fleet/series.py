"""The numbers devices report, kept over time for the console's plots, bounded per device and metric.

A module's reported properties carry numbers (the anomaly detector's ``lastInference.score``,
``alerts.count``, ``inference.latencyMsP50``, ...). :class:`Recorder` takes them from each report
on the device API's path at the cost of flattening the patch into an in-memory buffer; a thread
writes the buffer in one batch per second (:meth:`Recorder.run`), so a report never waits for the
series table. Retention: at most ``keep`` points per device and metric (a series is trimmed after
every ``keep // 4`` new points) and none older than ``max_age_s`` (swept every few minutes). Points
still buffered when a process dies are lost: they are plots, not the twin, which is stored first.
Fed by :meth:`outpost.fleet.service.FleetService.report_many` (``on_report``, after each commit); wired by
:mod:`outpost.fleet.adapters.server`; read by the console's device page.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from outpost.errors import StoreError

__all__ = ["MAX_METRICS", "Point", "Recorder", "SeriesStore", "numbers"]

log = logging.getLogger(__name__)
MAX_METRICS = 32
"""Numbers taken from one report (a device cannot flood the table with a huge patch)."""
MAX_NAME = 200
SYSTEM = ("$edgeAgent", "$edgeHub")


@dataclass(frozen=True)
class Point:
    device_id: str
    metric: str
    at: float
    value: float


class SeriesStore(Protocol):
    def add_points(self, points: Sequence[Point]) -> None: ...
    def trim_series(self, series: Sequence[tuple[str, str]], keep: int) -> None: ...
    def prune_points(self, before: float) -> None: ...
    def series(self, device_id: str, since: float) -> dict[str, list[tuple[float, float]]]: ...


def _leaves(value: Any, prefix: str) -> Iterator[tuple[str, float]]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not str(key).startswith("$"):
                yield from _leaves(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an integer beyond a double's range: not a plottable number
            return
        if math.isfinite(number):
            yield prefix, number


def numbers(patches: Mapping[str, Any]) -> list[tuple[str, float]]:
    """``module/dotted.path`` and value of every finite number in a report of module patches
    (the system modules' runtime bookkeeping left out), at most :data:`MAX_METRICS`."""
    found: list[tuple[str, float]] = []
    for module_id, patch in patches.items():
        if module_id in SYSTEM or not isinstance(patch, Mapping):
            continue
        for path, value in _leaves(patch, ""):
            name = f"{module_id}/{path}"
            if len(name) <= MAX_NAME:
                found.append((name, value))
                if len(found) >= MAX_METRICS:
                    return found
    return found


class Recorder:
    """Buffers reported numbers and writes them in batches (see the module docstring)."""

    def __init__(
        self,
        store: SeriesStore,
        *,
        keep: int = 500,
        max_age_s: float = 7 * 86400.0,
        buffer_max: int = 200_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.keep = keep
        self.max_age_s = max_age_s
        self.buffer_max = buffer_max
        self.clock = clock
        self.dropped = 0
        self._buffer: list[Point] = []
        self._lock = threading.Lock()
        self._fresh: dict[tuple[str, str], int] = {}  # new points per series since its last trim
        self._swept = 0.0

    def record(self, device_id: str, patches: Mapping[str, Any]) -> None:
        """On the report path: flatten, stamp, append. No I/O."""
        found = numbers(patches)
        if not found:
            return
        at = self.clock()
        points = [Point(device_id, name, at, value) for name, value in found]
        with self._lock:
            if len(self._buffer) + len(points) > self.buffer_max:  # the database is away: keep the newest
                self.dropped += len(points)
                return
            self._buffer.extend(points)

    def flush(self) -> int:
        """Write what is buffered, trim the series that grew by a quarter of ``keep``, sweep old points."""
        with self._lock:
            batch, self._buffer = self._buffer, []
        if batch:
            try:
                self.store.add_points(batch)
            except StoreError as exc:
                log.warning("fleet: cannot store %d reported metric points: %s", len(batch), exc)
                with self._lock:
                    if len(self._buffer) + len(batch) <= self.buffer_max:
                        self._buffer[:0] = batch
                    else:
                        self.dropped += len(batch)
                return 0
        due: list[tuple[str, str]] = []
        for point in batch:
            key = (point.device_id, point.metric)
            count = self._fresh.get(key, 0) + 1
            if count >= max(1, self.keep // 4):
                due.append(key)
                count = 0
            self._fresh[key] = count
        now = self.clock()
        try:
            if due:
                self.store.trim_series(sorted(set(due)), self.keep)
            if now - self._swept > 300:
                self._swept = now
                self.store.prune_points(now - self.max_age_s)
        except StoreError as exc:
            log.warning("fleet: cannot trim the reported metric series: %s", exc)
        return len(batch)

    def run(self, stop: threading.Event, interval: float = 1.0) -> None:
        """Flush every ``interval`` until ``stop`` is set, then once more."""
        while not stop.wait(interval):
            self.flush()
        self.flush()
