"""An in-memory MQTT broker and ``Link``s to it, for unit tests of the SDK and the hub without
a broker process.

It does what the link's users rely on, synchronously on the caller's thread: CONNACK on
``start``; PUBACK (``Published``) for QoS 1; delivery to every link whose filters match
(``+``/``#`` wildcards), properties intact; retained messages (an empty payload clears one),
sent on subscribe; the will on an abnormal ``drop``. Not modelled: sessions across reconnects,
receive windows, redelivery of unacknowledged messages.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from outpost.wire.link import Connected, Disconnected, Event, Incoming, LinkSettings, Published, Subscribed

__all__ = ["LoopbackBroker", "LoopbackLink", "matches"]


def matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching: ``+`` is one level, a trailing ``#`` any number (also none)."""
    want, have = topic_filter.split("/"), topic.split("/")
    for index, level in enumerate(want):
        if level == "#":
            return True
        if index >= len(have) or (level != "+" and level != have[index]):
            return False
    return len(want) == len(have)


@dataclass(frozen=True)
class _Message:
    topic: str
    payload: bytes
    user_properties: tuple[tuple[str, str], ...]
    content_type: str | None
    response_topic: str | None
    correlation_data: bytes | None


class LoopbackBroker:
    """The links' meeting point; ``link(settings, on_event)`` is a ``LinkFactory``."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._links: list[LoopbackLink] = []
        self._retained: dict[str, _Message] = {}
        self.published: list[tuple[str, bytes]] = []  # every PUBLISH, in order (for assertions)

    def link(self, settings: LinkSettings, on_event: Callable[[Event], None]) -> LoopbackLink:
        return LoopbackLink(self, settings, on_event)

    def retained(self, topic: str) -> bytes | None:
        with self._lock:
            message = self._retained.get(topic)
        return None if message is None else message.payload

    def _connect(self, link: LoopbackLink) -> None:
        with self._lock:
            self._links.append(link)

    def _disconnect(self, link: LoopbackLink) -> None:
        with self._lock:
            if link in self._links:
                self._links.remove(link)

    def _route(self, message: _Message, *, retain: bool) -> None:
        with self._lock:
            self.published.append((message.topic, message.payload))
            if retain:
                if message.payload:
                    self._retained[message.topic] = message
                else:
                    self._retained.pop(message.topic, None)
            receivers = [link for link in self._links if link.wants(message.topic)]
        for link in receivers:
            link.deliver(message)

    def _retained_for(self, filters: Sequence[str]) -> list[_Message]:
        with self._lock:
            return [m for t, m in self._retained.items() if any(matches(f, t) for f in filters)]


class LoopbackLink:
    """A ``Link`` to a ``LoopbackBroker``."""

    def __init__(self, broker: LoopbackBroker, settings: LinkSettings, on_event: Callable[[Event], None]) -> None:
        self.broker = broker
        self.settings = settings
        self._on_event = on_event
        self._filters: list[str] = []
        self._tokens = itertools.count(1)
        self._connected = False
        self.acked: list[int] = []  # tokens the user acknowledged

    @property
    def connected(self) -> bool:
        return self._connected

    def wants(self, topic: str) -> bool:
        return self._connected and any(matches(f, topic) for f in self._filters)

    def deliver(self, message: _Message) -> None:
        self._on_event(
            Incoming(
                topic=message.topic, payload=message.payload, qos=1, token=next(self._tokens),
                user_properties=message.user_properties, content_type=message.content_type,
                response_topic=message.response_topic, correlation_data=message.correlation_data,
            )
        )  # fmt: skip

    # -- Link ----------------------------------------------------------------------------------

    def start(self) -> None:
        self._connected = True
        self.broker._connect(self)
        self._on_event(Connected(ok=True, code=0, reason="Success", session_present=False))

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
        expiry: int | None = None,  # noqa: ARG002 (nothing here outlives a test)
    ) -> int:
        token = next(self._tokens)
        if not self._connected:
            return token  # as paho: kept for a reconnect that, here, never resends it
        message = _Message(
            topic, bytes(payload), tuple(user_properties), content_type, response_topic, correlation_data
        )
        self.broker._route(message, retain=retain)
        if qos:
            self._on_event(Published(token, 0, "Success"))
        return token

    def subscribe(self, topics: Sequence[str]) -> int:
        if not topics or not self._connected:
            return -1
        token = next(self._tokens)
        self._filters.extend(topics)
        self._on_event(Subscribed(token, tuple(1 for _ in topics)))
        for message in self.broker._retained_for(topics):
            self.deliver(message)
        return token

    def ack(self, token: int, qos: int) -> None:
        if qos:
            self.acked.append(token)

    def stop(self) -> None:
        if self._connected:
            self._connected = False
            self.broker._disconnect(self)

    def drop(self) -> None:
        """The connection dies (no DISCONNECT): the broker publishes the will."""
        if not self._connected:
            return
        self.stop()
        self._on_event(Disconnected("connection lost"))
        if self.settings.will_topic is not None:
            will = _Message(self.settings.will_topic, self.settings.will_payload, (), None, None, None)
            self.broker._route(will, retain=True)
