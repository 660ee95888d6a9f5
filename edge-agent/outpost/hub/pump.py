"""Pumps: forward one endpoint's queue from the store to its sink; and the purger.

The hub runs one :class:`Pump` per endpoint (``module:M/INPUT`` or ``upstream``) on a thread of
its own, and one :class:`Purger`. A pump's round is ``next_batch`` -> ``sink.send`` -> ``ack``
what succeeded, ``dead_letter`` what can never succeed, leave what is retryable in the store
(so the next round sends it first again: order within a priority is kept). The hub calls
:meth:`Pump.wake` when it stores messages for the endpoint and when the sink reconnects.

Acking behind (``ack_behind=True``, the hub's upstream pump): a round's acks and dead letters are
written on a helper thread while the next round's batch is sent, and that batch is read first,
skipping the seqs still being acked. SQLite does that work without the GIL, so on a second core it
is off the drain's critical path (a drain to Kafka is bound by the Python work per record). A
failed or retryable round, an empty read and ``run``'s end write everything synchronously first,
so backoffs, ``on_drained`` and the queue depth see a settled store. A crash in between re-sends
the last batch: at-least-once, as always.

Waiting (iotedge ``EndpointExecutorFsm`` without its flaw, anchors §3 item 3):

- empty queue: sleep until woken (a safety wake every ``idle_secs``);
- retryable failure: back off 0.1 s doubling to 10 s, but a wake ends the backoff at once when
  the sink says it is connected (a reconnect): the backlog drains immediately, not after the
  backoff. Wakes from new messages while the link is down, or while throttled, do not shorten the
  backoff, so an outage is not hammered at the ingress rate. A pump also notices the sink's
  ``connected()`` turning True by itself, within ``poll_secs``.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from outpost.backoff import Backoff
from outpost.errors import OutpostError
from outpost.hub.metrics import HubMetrics
from outpost.hub.sinks import FailureKind, Sink, SinkResult
from outpost.hub.store import MessageStore

__all__ = ["Pump", "Purger", "Round"]

log = logging.getLogger(__name__)


class Round(enum.Enum):
    """What one pump round did, which decides how long to wait before the next."""

    EMPTY = "empty"  # nothing to send
    PROGRESS = "progress"  # everything sent was acked or dead-lettered: go again at once
    RETRY = "retry"  # something is retryable: back off


@dataclass
class _Outcome:
    """What a round decided that the store must record: acks and dead letters by reason."""

    succeeded: list[int] = field(default_factory=list)
    invalid: dict[str, list[int]] = field(default_factory=dict)

    def seqs(self) -> set[int]:
        return set(self.succeeded).union(*self.invalid.values())


class Pump:
    """Forwards ``endpoint``'s deliveries from ``store`` to ``sink``; ``run`` on a thread of its own.

    ``wake`` may be called from any thread. ``on_drained`` is called (on the pump's thread) each
    time the queue is found empty after sending something, e.g. ``purger.wake``.
    """

    def __init__(
        self,
        store: MessageStore,
        endpoint: str,
        sink: Sink,
        *,
        clock: Callable[[], float] = time.time,
        batch_size: int = 500,
        metrics: HubMetrics | None = None,
        on_drained: Callable[[], None] | None = None,
        min_backoff_secs: float = 0.1,
        max_backoff_secs: float = 10.0,
        idle_secs: float = 5.0,
        poll_secs: float = 0.5,
        ack_behind: bool = False,
    ) -> None:
        self.store = store
        self.endpoint = endpoint
        self.sink = sink
        self._clock = clock
        self._batch_size = batch_size
        self._metrics = metrics
        self._on_drained = on_drained
        self._retry_backoff = Backoff(first=min_backoff_secs, cap=max_backoff_secs)
        self._failures = 0  # consecutive rounds with retryable failures
        self._idle = idle_secs
        self._poll = poll_secs
        self._wakeup = threading.Event()
        self._backoff = 0.0  # the current backoff; 0 after a round without retryable failures
        self._failure = FailureKind.NONE
        self._sent_since_empty = False
        self._acker = ThreadPoolExecutor(1, thread_name_prefix=f"ack-{endpoint}") if ack_behind else None
        self._behind: _Outcome | None = None  # the last round's outcome, not yet written (ack_behind)

    def wake(self) -> None:
        """New messages for this endpoint, or the sink reconnected: look at the queue now."""
        self._wakeup.set()

    @property
    def backoff_secs(self) -> float:
        """The wait after the last round's retryable failure (0 when the last round did not fail)."""
        return self._backoff

    def run(self, stop: threading.Event) -> None:
        """Pump until ``stop`` is set (call :meth:`wake` after setting it to stop at once)."""
        try:
            while not stop.is_set():
                self._wakeup.clear()  # a wake during the round below is kept for the wait after it
                outcome = self.round()
                if outcome is Round.PROGRESS:
                    continue
                if outcome is Round.EMPTY:
                    self._wait(stop, self._idle, honour=lambda: True)
                else:
                    self._wait(stop, self._backoff, honour=self._reconnected)
        finally:
            self.settle()
            if self._acker is not None:
                self._acker.shutdown(wait=True)

    def settle(self) -> bool:
        """Write what the last round decided, if that is still pending (``ack_behind``); False if it failed."""
        behind, self._behind = self._behind, None
        return behind is None or self._write(behind)

    def round(self) -> Round:
        """One ``next_batch`` -> ``send`` -> ``ack``/``dead_letter`` round (``run`` calls it)."""
        behind = self._behind
        try:
            batch = self.store.next_batch(
                self.endpoint, self._batch_size, self._clock(), skip=behind.seqs() if behind else ()
            )
        except OutpostError as exc:
            log.warning("pump %s: reading the store failed: %s", self.endpoint, exc)
            self.settle()
            return self._failed(FailureKind.INTERNAL)
        if not batch and behind is not None:  # what was skipped may have been all there is: settle, look again
            return Round.PROGRESS if self.settle() else self._failed(FailureKind.INTERNAL)
        if not batch:
            if self._sent_since_empty and self._on_drained is not None:
                self._on_drained()
            self._sent_since_empty = False
            self._backoff, self._failures, self._failure = 0.0, 0, FailureKind.NONE
            return Round.EMPTY
        self._sent_since_empty = True
        self._behind = None
        writing: Future[bool] | None = None
        if behind is not None and self._acker is not None:
            writing = self._acker.submit(self._write, behind)  # while this batch is being sent
        try:
            result = self.sink.send(batch)
        except Exception as exc:  # the contract says never; a bug in a sink must not kill the pump
            log.exception("pump %s: sink %s raised", self.endpoint, getattr(self.sink, "name", "?"))
            result = SinkResult(retryable=[s.seq for s in batch], failure=FailureKind.INTERNAL, detail=str(exc))
        asked = {stored.seq for stored in batch}
        invalid: dict[str, list[int]] = defaultdict(list)
        for seq, why in result.invalid:
            if seq in asked:
                invalid[why].append(seq)
        outcome = _Outcome([seq for seq in result.succeeded if seq in asked], dict(invalid))
        retryable = asked - outcome.seqs()  # what the sink called retryable, and anything it did not mention
        written = writing.result() if writing is not None else True
        if self._acker is not None and written and not retryable:
            self._behind = outcome  # written while the next batch is sent
        elif not self._write(outcome) or not written:
            return self._failed(FailureKind.INTERNAL)  # at-least-once: what was sent is sent again
        if retryable:
            kind = result.failure if result.failure is not FailureKind.NONE else FailureKind.INTERNAL
            log.info(
                "pump %s: %d of %d retryable (%s) %s", self.endpoint, len(retryable), len(batch), kind, result.detail
            )
            return self._failed(kind)
        self._backoff, self._failures, self._failure = 0.0, 0, FailureKind.NONE
        return Round.PROGRESS

    def _write(self, outcome: _Outcome) -> bool:
        """Record a round's acks and dead letters (and count them); False if the store failed."""
        try:
            if outcome.succeeded:
                self.store.ack(self.endpoint, outcome.succeeded)
            for why, seqs in outcome.invalid.items():
                self.store.dead_letter(self.endpoint, seqs, why)
        except OutpostError as exc:
            log.warning("pump %s: updating the store failed: %s", self.endpoint, exc)
            return False
        if self._metrics is not None:
            self._metrics.observe_sent(self.endpoint, len(outcome.succeeded))
            self._metrics.observe_dropped("invalid", sum(len(seqs) for seqs in outcome.invalid.values()))
        return True

    def _failed(self, kind: FailureKind) -> Round:
        self._failures += 1
        self._backoff = self._retry_backoff.delay(self._failures)
        self._failure = kind
        return Round.RETRY

    def _reconnected(self) -> bool:
        """Whether a wake during a backoff ends it: the sink is up and did not ask us to slow down."""
        return self._failure is not FailureKind.THROTTLED and self._connected()

    def _connected(self) -> bool:
        try:
            return bool(self.sink.connected())
        except Exception:  # a broken sink is not a connected one
            return False

    def _wait(self, stop: threading.Event, seconds: float, *, honour: Callable[[], bool]) -> None:
        """Sleep up to ``seconds``; end early on ``stop``, on an honoured wake, or on a reconnect."""
        deadline = time.monotonic() + seconds
        failing = self._failure is not FailureKind.NONE and self._failure is not FailureKind.THROTTLED
        watch = failing and not self._connected()  # down: watch for the link to come back
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self._wakeup.wait(min(left, self._poll)):
                self._wakeup.clear()
                if honour():
                    return
            elif watch and self._connected():
                return  # the link came back without anyone calling wake()


class Purger:
    """Deletes expired deliveries (any endpoint), forgotten ids and old dead letters, then reclaims space.

    Runs every ``interval_secs`` and when woken (pumps wake it after a drain), at most once per
    ``min_gap_secs``.
    """

    def __init__(
        self,
        store: MessageStore,
        *,
        clock: Callable[[], float] = time.time,
        interval_secs: float = 10.0,
        min_gap_secs: float = 1.0,
        metrics: HubMetrics | None = None,
    ) -> None:
        self.store = store
        self._clock = clock
        self._interval = interval_secs
        self._min_gap = min_gap_secs
        self._metrics = metrics
        self._wakeup = threading.Event()

    def wake(self) -> None:
        self._wakeup.set()

    def purge_once(self) -> int:
        """One purge; returns the expired deliveries deleted (0 if the store failed: logged)."""
        try:
            purged = self.store.purge_expired(self._clock())
        except OutpostError as exc:
            log.warning("purger: %s", exc)
            return 0
        if self._metrics is not None:
            self._metrics.observe_dropped("expired", purged)
        if purged:
            log.info("purger: %d expired deliveries deleted", purged)
        return purged

    def run(self, stop: threading.Event) -> None:
        """Purge until ``stop`` is set (call :meth:`wake` after setting it to stop at once)."""
        while not stop.is_set():
            self._wakeup.clear()
            self.purge_once()
            if self._wakeup.wait(self._interval) and not stop.is_set():
                stop.wait(self._min_gap)  # woken early: purge at most once per min_gap_secs
