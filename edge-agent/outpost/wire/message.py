"""A message as the hub stores and forwards it, and its MQTT 5 property encoding.

Application properties travel as MQTT 5 user properties by name; system properties use IoT
Hub's short keys (``$.mid`` ...). ``SYSTEM_KEYS`` maps those keys to the routing-query names
(``$messageId`` -> ``messageId``) the route conditions read. Used by ingress, the store, the
pumps and the SDK alike, so there is one encoding.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from outpost.lang import RoutingMessage

__all__ = ["SYSTEM_KEYS", "Message", "new_id", "split_properties"]

#: IoT Hub's short property keys -> routing query system property names.
SYSTEM_KEYS = {
    "$.mid": "messageId",
    "$.cid": "correlationId",
    "$.uid": "userId",
    "$.to": "to",
    "$.ct": "contentType",
    "$.ce": "contentEncoding",
    "$.on": "outputName",
    "$.cdid": "connectionDeviceId",
    "$.cmid": "connectionModuleId",
    "$.exp": "expiryTimeUtc",
    "iothub-creation-time-utc": "creationTimeUtc",
}
_NAME_TO_KEY = {name: key for key, name in SYSTEM_KEYS.items()}


def new_id() -> str:
    """A fresh message id (the SDK sets one on every message; the hub fills missing ones).

    A UUIDv7 (RFC 9562) in 32 hex digits: 48 bits of Unix milliseconds, then 74 random bits.
    Why time-ordered: the store's id indexes then grow at one end and drain from the other, so
    storing and acking touch a few pages per batch instead of one random page per message
    (4x faster fills and 3x cheaper acks at a 300k backlog than with random UUIDv4 ids).
    """
    value = (time.time_ns() // 1_000_000 & _MS_MASK) << 80 | int.from_bytes(os.urandom(10), "big")
    value = value & _VERSION_CLEAR | _VERSION_7
    return f"{value:032x}"


_MS_MASK = (1 << 48) - 1
_VERSION_CLEAR = ~(0xF << 76) & ~(0x3 << 62)
_VERSION_7 = 0x7 << 76 | 0x2 << 62  # version 7, RFC 4122 variant


def split_properties(pairs: Iterable[tuple[str, str]]) -> tuple[dict[str, str], dict[str, str]]:
    """MQTT user properties (or topic-encoded ones) -> (application, system by query name)."""
    app: dict[str, str] = {}
    system: dict[str, str] = {}
    for key, value in pairs:
        if key in SYSTEM_KEYS:
            system[SYSTEM_KEYS[key]] = value
        elif key.startswith("$."):
            continue  # unknown system key: not an application property either
        else:
            app[key] = value
    return app, system


@dataclass(frozen=True)
class Message:
    """One message: body bytes, application properties, system properties (query names).

    ``source_module`` is None for a leaf device's telemetry; ``output`` is the module output.
    """

    id: str
    body: bytes
    source_device: str
    source_module: str | None = None
    output: str | None = None
    properties: Mapping[str, str] = field(default_factory=dict)
    system: Mapping[str, str] = field(default_factory=dict)

    def routing_view(self) -> RoutingMessage:
        """What route conditions see: system properties include the connection ids."""
        system = dict(self.system)
        system["messageId"] = self.id
        system["connectionDeviceId"] = self.source_device
        if self.source_module is not None:
            system["connectionModuleId"] = self.source_module
        else:
            system.pop("connectionModuleId", None)
        return RoutingMessage(properties=self.properties, system=system, body=self.body)

    def user_properties(self) -> list[tuple[str, str]]:
        """MQTT 5 user properties for delivery to a module input."""
        pairs = list(self.properties.items())
        system = {**self.system, "messageId": self.id, "connectionDeviceId": self.source_device}
        if self.source_module is not None:
            system["connectionModuleId"] = self.source_module
        if self.output is not None:
            system["outputName"] = self.output
        pairs.extend((_NAME_TO_KEY[name], value) for name, value in system.items() if name in _NAME_TO_KEY)
        return pairs
