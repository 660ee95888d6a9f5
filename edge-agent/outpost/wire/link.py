"""The MQTT link seam: what the SDK and the hub ask of an MQTT connection, and what it tells them.

Pure: the ``Link`` Protocol, its settings and its events. ``wire.adapters.paho_link.PahoLink``
implements it over paho-mqtt; ``wire.loopback`` implements it in memory for tests without a
broker. A link calls ``on_event`` with one of the events below from its own thread; the
handler must only enqueue. Incoming QoS 1 messages are acknowledged by the caller (``ack``)
unless the settings say ``auto_ack``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = [
    "NOT_AUTHORIZED",
    "Connected",
    "Disconnected",
    "Event",
    "Incoming",
    "Link",
    "LinkFactory",
    "LinkSettings",
    "Published",
    "Subscribed",
]

NOT_AUTHORIZED = 0x87
#: CONNACK reason codes that retrying cannot fix (bad credentials, banned, bad client id ...).
_PERMANENT_CONNACK = {0x84, 0x85, 0x86, 0x87, 0x8A, 0x8C, 0x90}


@dataclass(frozen=True)
class Connected:
    ok: bool
    code: int
    reason: str
    session_present: bool

    @property
    def permanent(self) -> bool:
        return not self.ok and self.code in _PERMANENT_CONNACK


@dataclass(frozen=True)
class Disconnected:
    reason: str


@dataclass(frozen=True)
class Published:
    token: int
    code: int
    reason: str

    @property
    def ok(self) -> bool:
        return self.code < 0x80


@dataclass(frozen=True)
class Subscribed:
    token: int
    codes: tuple[int, ...]


@dataclass(frozen=True)
class Incoming:
    topic: str
    payload: bytes
    qos: int
    token: int
    user_properties: tuple[tuple[str, str], ...]
    content_type: str | None
    response_topic: str | None
    correlation_data: bytes | None


Event = Connected | Disconnected | Published | Subscribed | Incoming


@dataclass(frozen=True)
class LinkSettings:
    """One connection's settings. Defaults suit the hub and the SDK: a persistent session, the
    caller acknowledges QoS 1 deliveries. A tap (``outpost watch``) uses ``clean_start`` with
    ``session_expiry=0`` and ``auto_ack``; an upstream sink ``tls`` to a cloud broker."""

    host: str
    port: int
    client_id: str
    username: str | None
    password: str | None
    will_topic: str | None = None
    will_payload: bytes = b"offline"
    session_expiry: int = 86400
    keepalive: int = 30
    receive_maximum: int | None = 100  # None: the broker's default
    max_inflight: int = 100
    reconnect_delay: tuple[int, int] = (1, 4)
    ca_file: Path | None = None
    tls: bool = False  # TLS even without ``ca_file`` (the system's CAs)
    clean_start: bool = False
    auto_ack: bool = False


class Link(Protocol):
    """One MQTT 5 connection; ``start`` connects in the background and reconnects by itself."""

    def start(self) -> None: ...

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
        """Queue a PUBLISH (sent now or after the next reconnect); returns its token for ``Published``."""
        ...

    def subscribe(self, topics: Sequence[str]) -> int:
        """Subscribe at QoS 1; returns the token of its ``Subscribed`` (-1 when not connected)."""
        ...

    def ack(self, token: int, qos: int) -> None: ...

    def stop(self) -> None:
        """Disconnect normally (no will); idempotent."""
        ...


#: How a composition root makes links: ``factory(settings, on_event)``.
LinkFactory = Callable[[LinkSettings, Callable[[Event], None]], Link]
