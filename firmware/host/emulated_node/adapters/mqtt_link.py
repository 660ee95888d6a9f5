"""The leaf device's MQTT link to the hub (paho-mqtt, MQTT 5 as ESP-IDF's esp-mqtt speaks it).

Telemetry is published at QoS 1 and a message leaves the core's queue only when the hub's PUBACK
arrived (the hub acknowledges after storing). While disconnected nothing is handed to paho, so the
core's bounded ring stays the only queue, as on the board.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

log = logging.getLogger("emulated-node")


@dataclass(frozen=True)
class Incoming:
    topic: str
    payload: bytes
    response_topic: str | None = None
    correlation: bytes | None = None


class MqttLink:
    """Connects in the background and reconnects by itself; ``publish`` blocks until the PUBACK."""

    def __init__(
        self,
        host: str,
        port: int,
        device_id: str,
        password: str,
        *,
        subscriptions: Sequence[str] = (),
        publish_timeout: float = 5.0,
    ) -> None:
        self.device_id = device_id
        self.publish_timeout = publish_timeout
        self.subscriptions = tuple(subscriptions)
        self.incoming: queue.Queue[Incoming] = queue.Queue()
        self.refused = threading.Event()  # the broker refused the credential (not authorised)
        self.refusal = ""
        self._connected = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5)
        self._client.username_pw_set(device_id, password)
        self._client.reconnect_delay_set(min_delay=1, max_delay=2)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.connect_async(host, port, keepalive=10, clean_start=True)
        self._client.loop_start()

    def _on_connect(
        self, client: mqtt.Client, _userdata: object, _flags: object, reason: object, _props: object
    ) -> None:
        if getattr(reason, "is_failure", False):
            self.refusal = str(reason)
            log.warning("hub refused the connection: %s", reason)
            if "authori" in self.refusal.lower() or "password" in self.refusal.lower():
                self.refused.set()
            return
        for topic in self.subscriptions:
            client.subscribe(topic, qos=1)
        self._connected.set()
        log.info("connected to the hub as %s", self.device_id)

    def _on_disconnect(self, _client: mqtt.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        if self._connected.is_set():
            log.info("disconnected from the hub (%s)", reason)
        self._connected.clear()

    def _on_message(self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        props = message.properties
        response = getattr(props, "ResponseTopic", None) if props else None
        correlation = getattr(props, "CorrelationData", None) if props else None
        self.incoming.put(Incoming(message.topic, bytes(message.payload), response, correlation))

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        """True once the hub acknowledged it (QoS 1), False if not connected or no PUBACK in time."""
        if not self._connected.is_set():
            return False
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False
        try:
            info.wait_for_publish(self.publish_timeout)
        except (RuntimeError, ValueError):
            return False
        return info.is_published()

    def respond(self, topic: str, correlation: bytes | None, status: int, body: bytes) -> bool:
        """A direct method's response: the status code as the ``status`` user property (docs/hub.md)."""
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.UserProperty = [("status", str(status))]
        if correlation is not None:
            props.CorrelationData = correlation
        if not self._connected.is_set():
            return False
        info = self._client.publish(topic, body, qos=1, properties=props)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
