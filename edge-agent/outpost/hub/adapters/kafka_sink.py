"""The Kafka upstream sink: kafka-python's ``KafkaProducer``, one batch per ``send``.

Built by ``outpost.hub.upstream.sink_from_settings``; called by the hub's upstream pump.

- Durable and ordered: ``acks='all'``, the idempotent producer, one request in flight per
  connection, bounded retries inside ``delivery_timeout``. Key = source id, value = body,
  headers = the message's properties (see ``outpost.hub.upstream``).
- ``send`` produces the whole batch, flushes and reads every record's outcome: delivered ->
  succeeded; broker unreachable / timed out -> retryable (``UNREACHABLE``); too large or an
  illegal topic -> invalid. kafka-python splits a batch the broker refuses as too large; a
  record it refuses on its own leaves the (idempotent) producer failing everything after it, so
  the refused records are re-checked with fresh producers before one is called invalid.
- Every wait is bounded by ``timeout`` (default 15 s) and nothing escapes ``send``.
- After a retryable failure the producer is closed without waiting and a fresh one is made on
  the next ``send``: records buffered for a dead broker are never sent later behind the pump's back.
- ``connected()`` is the last contact's result; while that failed it probes the bootstrap
  address (a TCP connect, at most every ``probe_interval`` seconds), so it turns True as soon as
  the broker listens again and the pump drains at once.

Per-record cost (a drain after an outage is bound by the Python work per record, see
``tests/bench/bench_upstream.py``): topic, topic check and key are computed once per source and
output; headers once per source and set of properties, only the message id is filled in per
record (:func:`~outpost.hub.upstream.kafka_headers` stays the definition); and the producer's
partitioner is kafka-python's default one with each key's murmur2 hash cached
(:class:`KeyHashPartitioner`): the same partitions, without ~5 µs of pure-Python hashing a record.

kafka-python 3.0 (a new network layer; ~10% cheaper sends than 2.3) has two quirks handled here:
``flush`` can give up on a batch it split ("Future not done") while its records are still under
way (``_flush`` waits for each record), and a producer whose bootstrap fails leaks its sockets
(``_ensure_producer`` probes the address first).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaProducer  # type: ignore[import-untyped]
from kafka import errors as kafka_errors
from kafka.partitioner import DefaultPartitioner, Partitioner, murmur2  # type: ignore[import-untyped]

from outpost.hub.sinks import FailureKind, SinkResult, never_raise
from outpost.hub.store import Stored
from outpost.hub.upstream import kafka_headers, kafka_key, kafka_topic_for, kafka_topic_problem
from outpost.wire.message import Message

__all__ = ["KafkaSink", "KeyHashPartitioner"]

log = logging.getLogger(__name__)

#: Refused for what the record is: retrying the same record cannot help.
_INVALID_ERRORS: tuple[type[BaseException], ...] = (
    kafka_errors.InvalidTopicError,
    kafka_errors.InvalidRecordError,
    kafka_errors.CorruptRecordError,
    kafka_errors.RecordListTooLargeError,
)
#: Refused by the broker (or the producer's own checks) for what a record is.
_REFUSED = (kafka_errors.MessageSizeTooLargeError, *_INVALID_ERRORS)
#: Bound of the per-source caches (a device has a handful of sources; a leaf-device gateway more).
_CACHE_MAX = 4096


class KeyHashPartitioner(Partitioner):  # type: ignore[misc]
    """kafka-python's ``DefaultPartitioner`` with the keys' murmur2 hashes cached.

    The same partition for the same key and partition list (murmur2, as the Java client), a
    random available one for records without a key. The upstream's keys are source ids: few.
    """

    def __init__(self, max_keys: int = _CACHE_MAX) -> None:
        self._hashes: dict[bytes, int] = {}
        self._max_keys = max_keys
        self._default = DefaultPartitioner()

    def partition(  # noqa: PLR0917 - kafka-python's Partitioner signature
        self, topic: str, key: Any, serialized_key: bytes | None, value: Any, serialized_value: Any, cluster: Any
    ) -> int:
        if serialized_key is None:
            return int(self._default.partition(topic, key, serialized_key, value, serialized_value, cluster))
        hashed = self._hashes.get(serialized_key)
        if hashed is None:
            if len(self._hashes) >= self._max_keys:
                self._hashes.clear()
            hashed = self._hashes[serialized_key] = murmur2(serialized_key) & 0x7FFFFFFF
        partitions = cluster.partitions_for_topic(topic)
        if not partitions:
            raise ValueError(f"Topic {topic} not found in the cluster metadata")
        return int(sorted(partitions)[hashed % len(partitions)])


@dataclass(slots=True)
class _Pending:
    item: Stored
    topic: str
    key: bytes
    headers: list[tuple[str, bytes]]
    future: Any = None


class KafkaSink:
    """Delivers ``$upstream`` batches to Kafka. Thread-safe; ``send`` calls are serialised."""

    name = "kafka"

    def __init__(
        self,
        bootstrap: str,
        *,
        topic: str | None = None,
        topic_by_output: Mapping[str, str] | None = None,
        timeout: float = 15.0,
        linger_ms: int = 5,
        batch_size: int = 256 * 1024,
        max_request_size: int = 1024 * 1024,
        retries: int = 5,
        probe_interval: float = 0.5,
        client_id: str = "outpost-upstream",
        producer_config: Mapping[str, Any] | None = None,
    ) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._topic_by_output = dict(topic_by_output or {})
        self._timeout = timeout
        self._probe_interval = probe_interval
        request_timeout_ms = max(int(timeout * 1000 / 3), 1000)
        self._config: dict[str, Any] = {
            "bootstrap_servers": [s.strip() for s in bootstrap.split(",") if s.strip()],
            "client_id": client_id,
            "acks": "all",
            "enable_idempotence": True,
            "max_in_flight_requests_per_connection": 1,
            "retries": retries,
            "linger_ms": linger_ms,
            "batch_size": batch_size,
            "max_request_size": max_request_size,
            "request_timeout_ms": request_timeout_ms,
            # Upper bound for a record from send() to its outcome; below our own deadline.
            "delivery_timeout_ms": max(int(timeout * 1000) - 2000, request_timeout_ms + linger_ms),
            "max_block_ms": request_timeout_ms,  # metadata waits inside producer.send()
            "bootstrap_timeout_ms": min(request_timeout_ms, 5000),
            "retry_backoff_ms": 100,
            "reconnect_backoff_ms": 50,
            "reconnect_backoff_max_ms": 1000,
            "partitioner": KeyHashPartitioner(),
            **dict(producer_config or {}),
        }
        self._producer: Any = None
        #: (device, module, output) -> (topic, why the topic is illegal or None, key)
        self._routes: dict[tuple[str, str | None, str | None], tuple[str, str | None, bytes]] = {}
        #: everything but the id a message's headers depend on -> (its headers, index of "$.mid")
        self._header_templates: dict[tuple[Any, ...], tuple[list[tuple[str, bytes]], int]] = {}
        self._healthy = False
        self._last_probe = 0.0
        self._lock = threading.Lock()
        self._closed = False

    # --- Sink ------------------------------------------------------------------------------

    def send(self, batch: Sequence[Stored]) -> SinkResult:
        result = SinkResult()
        with self._lock:
            with never_raise("kafka", batch, result) as guard:
                self._send(batch, result)
            if guard.raised is not None:
                self._drop_producer()
        return result

    def connected(self) -> bool:
        if self._healthy:
            return True
        now = time.monotonic()
        if now - self._last_probe < self._probe_interval:
            return False
        self._last_probe = now
        return self._probe()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop_producer(wait=2.0)

    # --- internals -------------------------------------------------------------------------

    def _send(self, batch: Sequence[Stored], result: SinkResult) -> None:
        if self._closed:
            result.retryable.extend(item.seq for item in batch)
            result.failure, result.detail = FailureKind.INTERNAL, "sink closed"
            return
        pending: list[_Pending] = []
        routes, route_of = self._routes, self._route
        for item in batch:
            message = item.message
            route = routes.get((message.source_device, message.source_module, message.output)) or route_of(message)
            topic, problem, key = route
            if problem is not None:
                result.invalid.append((item.seq, problem))
                continue
            pending.append(_Pending(item, topic, key, self._headers(message)))
        if not pending:
            self._finish(result)
            return
        deadline = time.monotonic() + self._timeout
        self._recheck(self._deliver(pending, result, deadline), result, deadline)
        self._finish(result)

    def _route(self, message: Message) -> tuple[str, str | None, bytes]:
        """Topic, topic problem and key of a message's source and output (cached: one per source)."""
        topic = kafka_topic_for(message, topic=self._topic, topic_by_output=self._topic_by_output)
        route = (topic, kafka_topic_problem(topic), kafka_key(message))
        if len(self._routes) >= _CACHE_MAX:
            self._routes.clear()
        self._routes[(message.source_device, message.source_module, message.output)] = route
        return route

    def _headers(self, message: Message) -> list[tuple[str, bytes]]:
        """``kafka_headers(message)``, from a template of the message's shape (all but its id)."""
        shape = (
            message.source_device,
            message.source_module,
            message.output,
            tuple(message.properties.items()),
            tuple(message.system.items()),
        )
        template = self._header_templates.get(shape)
        if template is None:
            headers = kafka_headers(message)
            # System properties follow the application ones; "$.mid" is always among them.
            mid = next(i for i in range(len(message.properties), len(headers)) if headers[i][0] == "$.mid")
            if len(self._header_templates) >= _CACHE_MAX:
                self._header_templates.clear()
            self._header_templates[shape] = (headers.copy(), mid)
            return headers
        headers, mid = template[0].copy(), template[1]
        headers[mid] = ("$.mid", message.id.encode())
        return headers

    def _produce(self, producer: Any, pending: list[_Pending], result: SinkResult, deadline: float) -> list[_Pending]:
        """Hand every record to the producer; returns those handed over (the rest are retryable)."""
        for index, entry in enumerate(pending):
            try:
                entry.future = producer.send(
                    entry.topic, value=entry.item.message.body, key=entry.key, headers=entry.headers
                )
            except kafka_errors.KafkaTimeoutError as exc:  # no metadata within max_block_ms
                self._unreachable(result, f"no metadata for {entry.topic!r}: {exc}")
                result.retryable.extend(p.item.seq for p in pending[index:])
                return pending[:index]
            except (ValueError, TypeError, AssertionError, kafka_errors.KafkaError) as exc:
                entry.future = exc  # decided in _classify, per record
            if time.monotonic() >= deadline:
                result.retryable.extend(p.item.seq for p in pending[index + 1 :])
                return pending[: index + 1]
        return pending

    @staticmethod
    def _flush(producer: Any, pending: list[_Pending], deadline: float) -> None:
        """Send what lingers and wait for every record's outcome, at most until ``deadline``.

        kafka-python 3.0 splits a batch the broker refused as too large and re-queues the halves;
        ``flush`` then gives up on the old batch ("Future not done") although its records are still
        on their way. Each record's own future follows the split, so those are waited on after it.
        """
        with contextlib.suppress(kafka_errors.KafkaTimeoutError, kafka_errors.UnknownError):
            producer.flush(timeout=max(deadline - time.monotonic(), 0.0))
        for entry in pending:
            future = entry.future
            if future is None or isinstance(future, BaseException) or future.is_done:
                continue
            with contextlib.suppress(Exception):  # the outcome (or the lack of one) is read in _classify
                future.get(timeout=max(deadline - time.monotonic(), 0.0))

    def _classify(self, pending: list[_Pending], result: SinkResult) -> list[_Pending]:
        """Each record's outcome into ``result``, but those the broker refused: returned."""
        refused: list[_Pending] = []
        for entry in pending:
            outcome = self._outcome(entry.future)
            if outcome is None:
                result.succeeded.append(entry.item.seq)
            elif isinstance(outcome, _REFUSED):
                if isinstance(entry.future, BaseException):  # the producer's own per-record check: final
                    result.invalid.append((entry.item.seq, f"{type(outcome).__name__}: {outcome}"))
                else:
                    refused.append(entry)
            elif isinstance(outcome, (kafka_errors.KafkaTimeoutError, kafka_errors.KafkaConnectionError)) or getattr(
                outcome, "retriable", False
            ):
                result.retryable.append(entry.item.seq)
                self._unreachable(result, f"{type(outcome).__name__}: {outcome}")
            else:
                result.retryable.append(entry.item.seq)
                self._internal(result, f"{type(outcome).__name__}: {outcome}")
        return refused

    def _recheck(self, refused: list[_Pending], result: SinkResult, deadline: float) -> None:
        """Records the broker refused (too large, invalid): which of them really are refused.

        After one refusal kafka-python's idempotent producer fails every later record with the same
        error and stays failed. So with a fresh producer each time: the first refused record is sent
        alone (refused again: invalid), then the others together, until none is left.
        """
        while refused:
            if time.monotonic() >= deadline:
                result.retryable.extend(entry.item.seq for entry in refused)
                return
            first, rest = refused[0], refused[1:]
            self._drop_producer()
            again = self._deliver([first], result, deadline)
            if again:
                outcome = self._outcome(first.future)
                result.invalid.append((first.item.seq, f"{type(outcome).__name__}: {outcome}"))
                self._drop_producer()
            refused = self._deliver(rest, result, deadline) if rest else []

    def _deliver(self, entries: list[_Pending], result: SinkResult, deadline: float) -> list[_Pending]:
        """Send ``entries`` and wait; returns those the broker refused (the rest are decided in ``result``)."""
        producer = self._ensure_producer(result)
        if producer is None:
            result.retryable.extend(entry.item.seq for entry in entries)
            return []
        sent = self._produce(producer, entries, result, deadline)
        self._flush(producer, sent, deadline)
        return self._classify(sent, result)

    @staticmethod
    def _outcome(future: Any) -> BaseException | None:
        """None when delivered; else the reason (a timeout when it is still not done)."""
        if isinstance(future, BaseException):
            return future
        reason: BaseException
        if future is None or not future.is_done:
            reason = kafka_errors.KafkaTimeoutError("no acknowledgement before the sink's deadline")
            return reason
        if future.failed():
            exc: object = future.exception
            reason = exc if isinstance(exc, BaseException) else kafka_errors.KafkaError(str(exc))
            return reason
        return None

    def _ensure_producer(self, result: SinkResult) -> Any:
        if self._producer is not None:
            return self._producer
        if not self._healthy and not self._probe():
            # kafka-python 3.0 leaks the sockets of a producer whose bootstrap fails: look first.
            self._unreachable(result, f"cannot reach Kafka at {self._bootstrap}: nothing listens there")
            return None
        try:
            self._producer = KafkaProducer(**self._config)
        except kafka_errors.KafkaConfigurationError as exc:
            self._internal(result, f"producer configuration: {exc}")
            return None
        except Exception as exc:  # NoBrokersAvailable, KafkaTimeoutError, socket errors
            self._unreachable(result, f"cannot reach Kafka at {self._bootstrap}: {type(exc).__name__}: {exc}")
            return None
        return self._producer

    def _unreachable(self, result: SinkResult, detail: str) -> None:
        self._healthy = False
        self._last_probe = time.monotonic()
        if result.failure in {FailureKind.NONE, FailureKind.INVALID, FailureKind.INTERNAL}:
            result.failure, result.detail = FailureKind.UNREACHABLE, detail

    @staticmethod
    def _internal(result: SinkResult, detail: str) -> None:
        if result.failure in {FailureKind.NONE, FailureKind.INVALID}:
            result.failure, result.detail = FailureKind.INTERNAL, detail

    def _finish(self, result: SinkResult) -> None:
        if result.failure is FailureKind.UNREACHABLE:
            self._healthy = False
        elif result.succeeded:
            self._healthy = True
        if result.retryable:
            # A fresh producer next time: nothing left behind in this one's buffers.
            self._drop_producer()
            if result.failure is FailureKind.NONE:
                result.failure = FailureKind.INTERNAL
        elif result.invalid and result.failure is FailureKind.NONE:
            result.failure, result.detail = FailureKind.INVALID, result.invalid[0][1]

    def _drop_producer(self, wait: float = 0.0) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            producer.close(timeout=wait)
        except kafka_errors.KafkaTimeoutError:
            # close() flushes first and gives up on records still buffered before it stops its I/O
            # thread; those records must never be sent later, so stop it without them (kafka-python
            # has no public call for this: the thread then fails them and closes its connections).
            sender = getattr(producer, "_sender", None)
            if sender is not None:
                sender.force_close()
        except Exception:  # closing must not turn into a failure of its own
            log.warning("kafka sink: closing the producer failed", exc_info=True)

    def _probe(self) -> bool:
        for server in self._config["bootstrap_servers"]:
            host, _, port = server.rpartition(":")
            try:
                with socket.create_connection((host.strip("[]") or "localhost", int(port or 9092)), timeout=0.5):
                    return True
            except (OSError, ValueError):
                continue
        return False
