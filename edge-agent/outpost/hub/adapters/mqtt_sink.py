"""The MQTT upstream sink: a paho-mqtt 2.x client of a "cloud" MQTT broker.

Built by ``outpost.hub.upstream.sink_from_settings``; called by the hub's upstream pump.

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
import ssl
import threading
import time
from collections.abc import Sequence
from typing import Any

from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from outpost.hub.sinks import FailureKind, SinkResult
from outpost.hub.store import Stored
from outpost.hub.upstream import DEFAULT_MQTT_TOPIC, mqtt_template_problem, mqtt_topic_for, mqtt_topic_problem

__all__ = ["MqttSink"]

log = logging.getLogger(__name__)

#: PUBACK reason codes that refuse the message itself (MQTT 5 §3.4.2.1).
_INVALID_PUBACK = {0x90: "topic name invalid", 0x95: "packet too large", 0x99: "payload format invalid"}
_THROTTLED_PUBACK = {0x97}  # quota exceeded


class MqttSink:
    """Delivers ``$upstream`` batches to an MQTT broker. ``send`` calls are serialised."""

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
        self._refused: dict[int, int] = {}  # mid -> PUBACK reason code >= 0x80
        self._last_error = "not connected yet"
        self._closed = False
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
        )
        if tls:
            client.tls_set(ca_certs=ca_certs, cert_reqs=ssl.CERT_REQUIRED)
        if username is not None:
            client.username_pw_set(username, password)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.reconnect_delay_set(min_delay=1, max_delay=max_reconnect_delay)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = session_expiry
        client.connect_async(host, port, keepalive=keepalive, clean_start=False, properties=props)
        client.loop_start()
        self._client = client

    # --- paho callbacks (paho's network thread) --------------------------------------------

    def _on_connect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        if rc.is_failure:
            self._last_error = f"CONNACK refused: {rc}"
            self._connected.clear()
        else:
            self._connected.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        self._last_error = f"disconnected: {rc}"
        self._connected.clear()

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, rc: ReasonCode, _p: Any) -> None:
        if rc.value >= 0x80:
            self._refused[mid] = rc.value

    # --- Sink ------------------------------------------------------------------------------

    def send(self, batch: Sequence[Stored]) -> SinkResult:
        result = SinkResult()
        with self._lock:
            try:
                self._send(batch, result)
            except Exception as exc:  # the contract: never raise
                log.exception("mqtt sink: unexpected error")
                decided = set(result.succeeded) | set(result.retryable) | {seq for seq, _ in result.invalid}
                result.retryable.extend(item.seq for item in batch if item.seq not in decided)
                result.failure, result.detail = FailureKind.INTERNAL, f"unexpected {type(exc).__name__}: {exc}"
        return result

    def connected(self) -> bool:
        return self._connected.is_set()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._client.disconnect()
            finally:
                self._client.loop_stop()

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
        self._refused.clear()
        published: list[tuple[Stored, mqtt.MQTTMessageInfo]] = []
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
                info = self._client.publish(topic, item.message.body, qos=1, properties=self._properties(item))
            except ValueError as exc:  # payload or topic refused by paho itself
                result.invalid.append((item.seq, str(exc)))
                continue
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:  # NO_CONN: paho keeps it and may send it later
                result.retryable.append(item.seq)
                kind = FailureKind.UNREACHABLE if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN else FailureKind.INTERNAL
                self._fail(result, kind, f"publish: {mqtt.error_string(info.rc)}")
                continue
            published.append((item, info))
        self._await_acks(published, result, deadline)
        if result.invalid and result.failure is FailureKind.NONE:
            result.failure, result.detail = FailureKind.INVALID, result.invalid[0][1]

    def _await_acks(
        self, published: list[tuple[Stored, mqtt.MQTTMessageInfo]], result: SinkResult, deadline: float
    ) -> None:
        for item, info in published:
            remaining = deadline - time.monotonic()
            while not info.is_published() and remaining > 0:
                info.wait_for_publish(timeout=min(remaining, 0.25))
                remaining = deadline - time.monotonic()
            if not info.is_published():
                result.retryable.append(item.seq)
                self._fail(result, FailureKind.UNREACHABLE, f"no PUBACK within {self._timeout:g} s")
                continue
            code = self._refused.pop(info.mid, None)
            if code is None:
                result.succeeded.append(item.seq)
            elif code in _INVALID_PUBACK:
                result.invalid.append((item.seq, f"broker refused: {_INVALID_PUBACK[code]} (0x{code:02x})"))
            else:
                result.retryable.append(item.seq)
                kind = FailureKind.THROTTLED if code in _THROTTLED_PUBACK else FailureKind.INTERNAL
                self._fail(result, kind, f"broker refused the message (reason 0x{code:02x})")

    @staticmethod
    def _properties(item: Stored) -> Properties:
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        pairs = item.message.user_properties()
        if pairs:
            props.UserProperty = pairs
        content_type = item.message.system.get("contentType")
        if content_type:
            props.ContentType = content_type
        return props

    @staticmethod
    def _fail(result: SinkResult, kind: FailureKind, detail: str) -> None:
        if result.failure in {FailureKind.NONE, FailureKind.INVALID}:
            result.failure, result.detail = kind, detail
