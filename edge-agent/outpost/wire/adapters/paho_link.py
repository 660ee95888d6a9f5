"""Outpost's only contact with paho-mqtt: one MQTT 5 connection and its network thread, the
``outpost.wire.link.Link`` every MQTT user of Outpost goes through.

Used by the module SDK (``outpost.sdk.client.ModuleClient``) and the hub (``outpost.hub.service``).
Every paho callback is turned into a small event
object handed to ``on_event`` (which must only enqueue: it runs on paho's network thread while
paho holds its own locks). Sessions are persistent (clean start off, ``session_expiry``), the
will is published retained, incoming QoS 1 messages are acknowledged by the caller (``ack``),
and paho reconnects by itself with a capped backoff.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import Any

from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from outpost.wire.link import Connected, Disconnected, Event, Incoming, LinkSettings, Published, Subscribed

__all__ = ["PahoLink", "close_sockets"]


def _code(rc: ReasonCode | int) -> int:
    return rc.value if isinstance(rc, ReasonCode) else int(rc)


class PahoLink:
    """One paho client; ``start`` connects in the background, events go to ``on_event``."""

    def __init__(self, settings: LinkSettings, on_event: Callable[[Event], None]) -> None:
        self.settings = settings
        self._on_event = on_event
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=not settings.auto_ack,
        )
        if settings.username is not None:
            client.username_pw_set(settings.username, settings.password)
        client.max_inflight_messages_set(settings.max_inflight)
        client.reconnect_delay_set(*settings.reconnect_delay)
        if settings.ca_file is not None or settings.tls:
            ca = str(settings.ca_file) if settings.ca_file is not None else None
            client.tls_set(ca_certs=ca, cert_reqs=ssl.CERT_REQUIRED)
        if settings.will_topic is not None:
            client.will_set(settings.will_topic, settings.will_payload, qos=1, retain=True)
        client.on_socket_open = _no_delay
        client.on_connect = self._connected
        client.on_disconnect = self._disconnected
        client.on_publish = self._published
        client.on_subscribe = self._subscribed
        client.on_message = self._message
        self._client = client
        self._started = False

    # paho callbacks (network thread): translate and hand over, nothing else.
    def _connected(self, _c: mqtt.Client, _u: Any, flags: mqtt.ConnectFlags, rc: ReasonCode, _p: Any) -> None:
        code = _code(rc)
        self._on_event(Connected(code == 0, code, str(rc), bool(flags.session_present)))

    def _disconnected(self, _c: mqtt.Client, _u: Any, _f: mqtt.DisconnectFlags, rc: ReasonCode, _p: Any) -> None:
        self._on_event(Disconnected(str(rc)))

    def _published(self, _c: mqtt.Client, _u: Any, mid: int, rc: ReasonCode, _p: Any) -> None:
        self._on_event(Published(mid, _code(rc), str(rc)))

    def _subscribed(self, _c: mqtt.Client, _u: Any, mid: int, rcs: list[ReasonCode], _p: Any) -> None:
        self._on_event(Subscribed(mid, tuple(_code(rc) for rc in rcs)))

    def _message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        user = tuple(getattr(props, "UserProperty", None) or ())
        self._on_event(
            Incoming(
                topic=msg.topic,
                payload=bytes(msg.payload),
                qos=msg.qos,
                token=msg.mid,
                user_properties=tuple((str(k), str(v)) for k, v in user),
                content_type=getattr(props, "ContentType", None),
                response_topic=getattr(props, "ResponseTopic", None),
                correlation_data=getattr(props, "CorrelationData", None),
            )
        )

    # commands (any thread)
    def start(self, *, blocking: bool = False) -> None:
        """Connect in the background; ``blocking``: make the first TCP connection now, raising
        ``OSError`` (and cleaning up) when nothing answers, as a one-shot tool wants."""
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.settings.session_expiry
        if self.settings.receive_maximum is not None:
            props.ReceiveMaximum = self.settings.receive_maximum
        connect = self._client.connect if blocking else self._client.connect_async
        try:
            connect(
                self.settings.host,
                self.settings.port,
                keepalive=self.settings.keepalive,
                clean_start=self.settings.clean_start,
                properties=props,
            )
        except OSError:
            close_sockets(self._client)
            raise
        self._client.loop_start()
        self._started = True

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        user_properties: Sequence[tuple[str, str]] = (),
        content_type: str | None = None,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
        expiry: int | None = None,
    ) -> int:
        """Queue a PUBLISH (paho sends it now or after the next reconnect); returns its token."""
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        if user_properties:
            props.UserProperty = list(user_properties)
        if content_type:
            props.ContentType = content_type
        if response_topic:
            props.ResponseTopic = response_topic
        if correlation_data is not None:
            props.CorrelationData = correlation_data
        if expiry is not None:
            props.MessageExpiryInterval = expiry
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise OSError(f"paho could not queue a publish to {topic}: {mqtt.error_string(info.rc)}")
        return info.mid

    def subscribe(self, topics: Sequence[str]) -> int:
        """Subscribe at QoS 1; returns the SUBACK token (-1 when not connected: redo after connect)."""
        if not topics:
            return -1
        rc, mid = self._client.subscribe([(t, 1) for t in topics])
        return mid if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None else -1

    def ack(self, token: int, qos: int) -> None:
        self._client.ack(token, qos)

    def stop(self) -> None:
        """Disconnect normally (no will) and stop the network thread; idempotent."""
        if not self._started:
            return
        self._started = False
        self._client.disconnect()
        self._client.loop_stop()
        close_sockets(self._client)


def _no_delay(_client: mqtt.Client, _userdata: Any, sock: Any) -> None:
    """Disable Nagle's algorithm: small MQTT packets otherwise wait ~40 ms for delayed ACKs."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def close_sockets(client: mqtt.Client) -> None:
    """Close paho's network socket and its wake-up socket pair now.

    paho 2.2's ``loop_stop`` leaves the socket pair ``loop_start`` made open until the client is
    garbage-collected, where it surfaces as a ResourceWarning; ``_reset_sockets`` is what paho's
    own ``__del__`` calls.
    """
    reset = getattr(client, "_reset_sockets", None)
    if callable(reset):
        reset()
