"""A read-only MQTT 5 subscriber for ``outpost watch``: a throwaway session that disturbs nobody.

Unlike ``outpost.wire.adapters.paho_link.PahoLink`` (persistent sessions, manual acks: right for the
hub and the SDK), a tap connects with clean start and session expiry 0 under a client id of its own,
so nothing is left on the broker when it goes, and paho acknowledges incoming QoS 1 messages
itself. Other subscribers (the hub's ingress, with its persistent session) get their own copies
regardless. ``on_message`` runs on paho's network thread: it must only enqueue.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from outpost.wire.adapters.paho_link import close_sockets

__all__ = ["MqttTap", "TapError"]

OnMessage = Callable[[str, bytes, tuple[tuple[str, str], ...]], None]
_BAD_CREDENTIALS = {0x86, 0x87}  # bad user name or password, not authorized


class TapError(Exception):
    """The tap could not connect or subscribe; ``unreachable`` when no broker answered at all."""

    def __init__(self, message: str, *, unreachable: bool = False, refused: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable
        self.refused = refused


def _code(rc: ReasonCode | int) -> int:
    return rc.value if isinstance(rc, ReasonCode) else int(rc)


class MqttTap:
    """Subscribe to ``topics`` (QoS 1, auto-ack) as ``username``; :meth:`start` returns once subscribed."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        username: str,
        password: str,
        topics: Sequence[str],
        on_message: OnMessage,
    ) -> None:
        self.host, self.port, self.topics = host, port, list(topics)
        self._on_message = on_message
        self._ready = threading.Event()
        self._error: TapError | None = None
        self.connected = False
        self.disconnect_reason = ""
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        client.username_pw_set(username, password)
        client.reconnect_delay_set(1, 4)
        client.on_connect = self._connected
        client.on_subscribe = self._subscribed
        client.on_disconnect = self._disconnected
        client.on_message = self._message
        self._client = client
        self._started = False

    def _connected(self, _c: mqtt.Client, _u: Any, _f: mqtt.ConnectFlags, rc: ReasonCode, _p: Any) -> None:
        code = _code(rc)
        if code != 0:
            self._fail(TapError(f"the broker refused the connection: {rc}", refused=code in _BAD_CREDENTIALS))
            return
        self.connected = True
        self._client.subscribe([(t, 1) for t in self.topics])  # again after every reconnect: clean session

    def _subscribed(self, _c: mqtt.Client, _u: Any, _mid: int, rcs: list[ReasonCode], _p: Any) -> None:
        refused = [t for t, rc in zip(self.topics, rcs, strict=False) if _code(rc) >= 0x80]
        if refused:
            self._fail(TapError(f"the broker refused the subscription to {', '.join(refused)}", refused=True))
        else:
            self._ready.set()

    def _disconnected(self, _c: mqtt.Client, _u: Any, _f: mqtt.DisconnectFlags, rc: ReasonCode, _p: Any) -> None:
        self.connected = False
        self.disconnect_reason = str(rc)

    def _message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        user = tuple((str(k), str(v)) for k, v in (getattr(props, "UserProperty", None) or ()))
        self._on_message(msg.topic, bytes(msg.payload), user)

    def _fail(self, error: TapError) -> None:
        if self._error is None:
            self._error = error
        self._ready.set()

    def start(self, timeout: float = 5.0) -> None:
        """Connect, subscribe and wait for the SUBACK; raises :class:`TapError` (and cleans up) if not."""
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 0
        try:
            self._client.connect(self.host, self.port, keepalive=30, clean_start=True, properties=props)
        except OSError as exc:
            close_sockets(self._client)
            raise TapError(f"cannot reach {self.host}:{self.port}: {exc}", unreachable=True) from exc
        self._client.loop_start()
        self._started = True
        if not self._ready.wait(timeout):
            self.stop()
            raise TapError(f"no answer from {self.host}:{self.port} within {timeout:g} s", unreachable=True)
        if self._error is not None:
            self.stop()
            raise self._error

    def stop(self) -> None:
        """Disconnect and stop the network thread; idempotent."""
        if not self._started:
            return
        self._started = False
        self._client.disconnect()
        self._client.loop_stop()
        close_sockets(self._client)

    def __enter__(self) -> MqttTap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
