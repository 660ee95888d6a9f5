"""Upstream: which sink the manifest asks for, and how a message looks on each upstream.

Pure (no I/O, no client library). Called by the adapters ``hub/adapters/{kafka,mqtt,azure}_sink.py``,
which turn these shapes into library calls; the hub's composition root (``service.sink_from_settings``)
builds them from the manifest.

How an Outpost ``Message`` is carried upstream:

- **Kafka**: value = body; key = the source id (``device`` for a leaf device, ``device/module``
  for a module) so one source's messages share a partition and keep their order; headers = the
  message's MQTT 5 user properties (application properties by name, system properties by IoT
  Hub's short keys: ``$.mid`` message id, ``$.cdid``/``$.cmid`` source, ``$.on`` output, ...),
  values UTF-8. Topic = ``topicByOutput[output]``, else ``topic``, else ``outpost-upstream``.
- **MQTT** (a cloud broker): payload = body; the same user properties as MQTT 5 user properties,
  ``$.ct`` also as the MQTT 5 content type. Topic = the ``topic`` template rendered with
  ``{device}``, ``{module}``, ``{output}`` and ``{source}`` (a leaf device has no module and no
  output: ``-``); default ``outpost/{device}/messages``.
- **Azure IoT Hub** (through ``modules/azure-bridge``): ``AzureFields`` are the fields of an
  ``azure.iot.device.Message``; the source device/module go to the custom properties
  ``outpostSourceDevice``/``outpostSourceModule`` because the bridge sends with one identity.
"""

from __future__ import annotations

import base64
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from outpost.wire.message import Message

__all__ = [
    "DEFAULT_AZURE_BRIDGE",
    "DEFAULT_KAFKA_TOPIC",
    "DEFAULT_MQTT_TOPIC",
    "AzureFields",
    "azure_fields",
    "kafka_headers",
    "kafka_key",
    "kafka_topic_for",
    "kafka_topic_problem",
    "mqtt_template_problem",
    "mqtt_topic_for",
    "mqtt_topic_problem",
    "source_id",
]

DEFAULT_KAFKA_TOPIC = "outpost-upstream"
DEFAULT_MQTT_TOPIC = "outpost/{device}/messages"
#: Where the hub finds the azure-bridge module (its TCP JSON-lines protocol, see ``azure_sink``).
DEFAULT_AZURE_BRIDGE = "127.0.0.1:8890"
MISSING = "-"  # placeholder value for a leaf device's module and output in MQTT topics
SOURCE_DEVICE_PROPERTY = "outpostSourceDevice"
SOURCE_MODULE_PROPERTY = "outpostSourceModule"

_KAFKA_TOPIC = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
_MQTT_FIELDS = frozenset({"device", "module", "output", "source"})
_MQTT_MAX_TOPIC_BYTES = 65535


def source_id(message: Message) -> str:
    """``device/module`` for a module's message, ``device`` for a leaf device's."""
    if message.source_module is None:
        return message.source_device
    return f"{message.source_device}/{message.source_module}"


# --- Kafka ---------------------------------------------------------------------------------


def kafka_topic_for(message: Message, *, topic: str | None, topic_by_output: Mapping[str, str]) -> str:
    """The topic for a message: its output's mapped topic, else ``topic``, else the default."""
    if message.output is not None and message.output in topic_by_output:
        return topic_by_output[message.output]
    return topic or DEFAULT_KAFKA_TOPIC


def kafka_topic_problem(topic: str) -> str | None:
    """Why Kafka would refuse this topic name (None when it is legal)."""
    if topic in {".", ".."}:
        return f"Kafka topic name {topic!r} is not allowed"
    if not _KAFKA_TOPIC.match(topic):
        return f"Kafka topic name {topic!r} must be 1-249 characters of a-z A-Z 0-9 . _ -"
    return None


def kafka_key(message: Message) -> bytes:
    return source_id(message).encode()


def kafka_headers(message: Message) -> list[tuple[str, bytes]]:
    return [(key, value.encode()) for key, value in message.user_properties()]


# --- MQTT ----------------------------------------------------------------------------------


def mqtt_template_problem(template: str) -> str | None:
    """Why a topic template cannot be used (None when it is fine)."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        return f"MQTT topic template {template!r}: {exc}"
    for _text, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in _MQTT_FIELDS or spec or conversion:
            allowed = ", ".join("{" + f + "}" for f in sorted(_MQTT_FIELDS))
            return f"MQTT topic template {template!r}: unknown placeholder {{{name}}} (use {allowed})"
    sample = template.format(device="d", module="m", output="o", source="d/m")
    return mqtt_topic_problem(sample)


def mqtt_topic_for(template: str, message: Message) -> str:
    """Render a (checked) topic template for a message."""
    return template.format(
        device=message.source_device,
        module=message.source_module or MISSING,
        output=message.output or MISSING,
        source=source_id(message),
    )


def mqtt_topic_problem(topic: str) -> str | None:
    """Why a broker would refuse to accept a PUBLISH to this topic (None when it is fine)."""
    if not topic:
        return "MQTT topic is empty"
    if "+" in topic or "#" in topic or "\0" in topic:
        return f"MQTT topic {topic!r} contains a wildcard or NUL"
    if topic.startswith("$"):
        return f"MQTT topic {topic!r} starts with '$' (reserved by brokers)"
    if len(topic.encode()) > _MQTT_MAX_TOPIC_BYTES:
        return "MQTT topic is longer than 65535 bytes"
    return None


# --- Azure IoT Hub -------------------------------------------------------------------------


@dataclass(frozen=True)
class AzureFields:
    """The fields of an ``azure.iot.device.Message`` for one Outpost message."""

    data: bytes
    message_id: str
    custom_properties: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None
    content_encoding: str | None = None
    correlation_id: str | None = None
    user_id: str | None = None
    output_name: str | None = None

    def to_wire(self, seq: int) -> dict[str, Any]:
        """The JSON object the azure-bridge reads (body base64): see ``hub/adapters/azure_sink.py``."""
        return {
            "seq": seq,
            "data": base64.b64encode(self.data).decode(),
            "message_id": self.message_id,
            "custom_properties": dict(self.custom_properties),
            "content_type": self.content_type,
            "content_encoding": self.content_encoding,
            "correlation_id": self.correlation_id,
            "user_id": self.user_id,
            "output_name": self.output_name,
        }


def azure_fields(message: Message) -> AzureFields:
    """Application properties -> custom properties; system properties -> the Message fields."""
    custom = dict(message.properties)
    custom[SOURCE_DEVICE_PROPERTY] = message.source_device
    if message.source_module is not None:
        custom[SOURCE_MODULE_PROPERTY] = message.source_module
    system = message.system
    return AzureFields(
        data=message.body,
        message_id=message.id,
        custom_properties=custom,
        content_type=system.get("contentType"),
        content_encoding=system.get("contentEncoding"),
        correlation_id=system.get("correlationId"),
        user_id=system.get("userId"),
        output_name=message.output,
    )


# --- settings -> sink ----------------------------------------------------------------------
