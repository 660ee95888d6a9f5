"""Coalesces the devices' module reports: one thread writes what queued up in one transaction.

At 10,000 devices reporting every 30 s a fleet process receives hundreds of reports a
second; written one transaction each, they queue for the database and the connection pool.
Here each request hands its (checked) report to one writer thread and awaits its own
answer: the thread takes everything queued (up to ``max_batch``), has it written in one
commit, and answers the requests only once that commit is done, so an acknowledged report
is stored. A lone report is written at once (no timer), so latency at low rates is one
transaction. The answers of a batch reach the event loop in one call (one wake-up of the
loop per batch, not per request). Used by the HTTP adapter over :meth:`FleetService.report_many`.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["ReportWriter"]

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")
_STOP = object()


class ReportWriter(Generic[T, R]):
    """Batches ``submit``-ed items through ``write(batch) -> one result or exception per item``."""

    def __init__(self, write: Callable[[Sequence[T]], Sequence[R | Exception]], *, max_batch: int = 500) -> None:
        self._write = write
        self._max = max_batch
        self._queue: queue.SimpleQueue[tuple[T, asyncio.Future[R]] | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.batches = 0
        self.items = 0

    def submit(self, item: T) -> asyncio.Future[R]:
        """Queue one item (from the event loop); the future resolves once its batch is committed."""
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="fleet-report-writer", daemon=True)
                    self._thread.start()
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.put((item, future))
        return future

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, then end the thread."""
        thread = self._thread
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch: list[tuple[T, asyncio.Future[R]]] = []
            entry = self._queue.get()
            while True:
                if entry is _STOP:
                    stopping = True
                else:
                    batch.append(entry)  # type: ignore[arg-type]
                if len(batch) >= self._max:
                    break
                try:
                    entry = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._flush(batch)

    def _flush(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        results: Sequence[R | Exception]
        try:
            results = self._write([item for item, _ in batch])
        except Exception as exc:  # every waiting request gets the failure (e.g. the database is down)
            results = [exc] * len(batch)
        self.batches += 1
        self.items += len(batch)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[R], R | Exception]]] = {}
        for (_, future), result in zip(batch, results, strict=True):
            by_loop.setdefault(future.get_loop(), []).append((future, result))
        for loop, answers in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, answers)
            except RuntimeError:  # that loop is closed: nobody waits any more
                log.debug("fleet: %d report answers for a closed event loop dropped", len(answers))


def _deliver(answers: list[tuple[asyncio.Future[R], R | Exception]]) -> None:
    for future, result in answers:
        if future.done():  # the request went away (cancelled)
            continue
        if isinstance(result, Exception):
            future.set_exception(result)
        else:
            future.set_result(result)
