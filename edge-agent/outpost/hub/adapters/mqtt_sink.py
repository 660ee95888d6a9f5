"""The MQTT upstream sink: a paho-mqtt 2.x client of a "cloud" MQTT broker.

Built by ``outpost.hub.upstream.sink_from_settings``; called by the hub's upstream pump. Its
connection is the same ``PahoLink`` the hub and the SDK use (``outpost.wire.link``).

- MQTT 5, QoS 1, a persistent session (clean start off, ``session_expiry``); paho reconnects by
  itself (delay 1..``max_reconnect_delay`` s) on its own network thread.
- ``send`` publishes the batch in order and waits (until ``timeout``) for the PUBACKs: acked ->
  succeeded; no PUBACK in time or not connected -> retryable (``UNREACHABLE``); a PUBACK refusing
  the message for what it is (topic name invalid, packet too large, payload format invalid) ->
  invalid; other refusals (not authorized, quota exceeded) -> retryable.
- Topic: the ``topic`` template rendered per message (see ``outpost.hub.upstream``); properties
  as MQTT 5 user properties, ``$.ct`` also as the content type.
- A message published but not acknowledged stays in paho's session and may still be delivered
  after a reconnect: the pump's retry then makes a duplicate with the same ``$.mid`` (the
  delivery is at-least-once, as everywhere in Outpost).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from outpost.hub.sinks import FailureKind, SinkResult, never_raise
from outpost.hub.store import Stored
from outpost.hub.upstream import DEFAULT_MQTT_TOPIC, mqtt_template_problem, mqtt_topic_for, mqtt_topic_problem
from outpost.wire.adapters.paho_link import PahoLink
from outpost.wire.link import Connected, Disconnected, Event, LinkSettings, Published

__all__ = ["MqttSink"]

log = logging.getLogger(__name__)

#: PUBACK reason codes that refuse the message itself (MQTT 5 §3.4.2.1).
_INVALID_PUBACK = {0x90: "topic name invalid", 0x95: "packet too large", 0x99: "payload format invalid"}
_THROTTLED_PUBACK = {0x97}  # quota exceeded


class MqttSink:
    """Delivers ``$upstream`` batches to an MQTT broker over a ``PahoLink``. ``send`` calls are serialised."""

    name = "mqtt"

    def __init__(
        self,
        host: str,
        port: int = 1883,
        *,
        topic: str = DEFAULT_MQTT_TOPIC,
        tls: bool = False,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
        connect_wait: float = 1.0,
        session_expiry: int = 7 * 24 * 3600,
        keepalive: int = 30,
        max_reconnect_delay: int = 5,
        ca_certs: str | None = None,
    ) -> None:
        problem = mqtt_template_problem(topic)
        if problem is not None:
            raise ValueError(problem)
        self._template = topic
        self._timeout = timeout
        self._connect_wait = connect_wait
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._acked = threading.Condition()
        self._pubacks: dict[int, int] = {}  # token -> PUBACK reason code, until ``send`` takes it
        self._last_error = "not connected yet"
        self._closed = False
        settings = LinkSettings(
            host=host, port=port, client_id=client_id, username=username, password=password,
            session_expiry=session_expiry, keepalive=keepalive, receive_maximum=None, max_inflight=20,
            reconnect_delay=(1, max_reconnect_delay), ca_file=Path(ca_certs) if ca_certs else None, tls=tls,
        )  # fmt: skip
        self._link = PahoLink(settings, self._on_event)
        self._link.start()

    # --- link events (paho's network thread) --------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if isinstance(event, Connected):
            if event.ok:
                self._connected.set()
            else:
                self._last_error = f"CONNACK refused: {event.reason}"
                self._connected.clear()
        elif isinstance(event, Disconnected):
            self._last_error = f"disconnected: {event.reason}"
            self._connected.clear()
        elif isinstance(event, Published):
            with self._acked:
                self._pubacks[event.token] = event.code
                self._acked.notify_all()

    # --- Sink ------------------------------------------------------------------------------

    def send(self, batch: Sequence[Stored]) -> SinkResult:
        result = SinkResult()
        with self._lock, never_raise("mqtt", batch, result):
            self._send(batch, result)
        return result

    def connected(self) -> bool:
        return self._connected.is_set()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._link.stop()

    # --- internals -------------------------------------------------------------------------

    def _send(self, batch: Sequence[Stored], result: SinkResult) -> None:
        if self._closed:
            result.retryable.extend(item.seq for item in batch)
            result.failure, result.detail = FailureKind.INTERNAL, "sink closed"
            return
        if not batch:
            return
        deadline = time.monotonic() + self._timeout
        if not self._connected.wait(min(self._connect_wait, self._timeout)):
            result.retryable.extend(item.seq for item in batch)
            result.failure, result.detail = FailureKind.UNREACHABLE, self._last_error
            return
        with self._acked:
            self._pubacks.clear()
        published: list[tuple[Stored, int]] = []
        for index, item in enumerate(batch):
            if not self._connected.is_set():  # lost mid-batch: the rest waits for the next try
                result.retryable.extend(other.seq for other in batch[index:])
                self._fail(result, FailureKind.UNREACHABLE, self._last_error)
                break
            topic = mqtt_topic_for(self._template, item.message)
            problem = mqtt_topic_problem(topic)
            if problem is not None:
                result.invalid.append((item.seq, problem))
                continue
            try:
                token = self._link.publish(
                    topic, item.message.body, qos=1, user_properties=item.message.user_properties(),
                    content_type=item.message.system.get("contentType") or None,
                )  # fmt: skip
            except ValueError as exc:  # payload or topic refused by paho itself
                result.invalid.append((item.seq, str(exc)))
                continue
            except OSError as exc:  # paho could not queue it
                result.retryable.append(item.seq)
                self._fail(result, FailureKind.INTERNAL, f"publish: {exc}")
                continue
            published.append((item, token))
        self._await_acks(published, result, deadline)
        if result.invalid and result.failure is FailureKind.NONE:
            result.failure, result.detail = FailureKind.INVALID, result.invalid[0][1]

    def _await_acks(self, published: list[tuple[Stored, int]], result: SinkResult, deadline: float) -> None:
        for item, token in published:
            with self._acked:
                self._acked.wait_for(lambda t=token: t in self._pubacks, max(0.0, deadline - time.monotonic()))  # type: ignore[misc]
                code = self._pubacks.pop(token, None)
            if code is None:
                result.retryable.append(item.seq)
                self._fail(result, FailureKind.UNREACHABLE, f"no PUBACK within {self._timeout:g} s")
            elif code < 0x80:
                result.succeeded.append(item.seq)
            elif code in _INVALID_PUBACK:
                result.invalid.append((item.seq, f"broker refused: {_INVALID_PUBACK[code]} (0x{code:02x})"))
            else:
                result.retryable.append(item.seq)
                kind = FailureKind.THROTTLED if code in _THROTTLED_PUBACK else FailureKind.INTERNAL
                self._fail(result, kind, f"broker refused the message (reason 0x{code:02x})")

    @staticmethod
    def _fail(result: SinkResult, kind: FailureKind, detail: str) -> None:
        if result.failure in {FailureKind.NONE, FailureKind.INVALID}:
            result.failure, result.detail = kind, detail
