"""The MQTT topic scheme (``docs/hub.md``): building and parsing, nothing else.

Pure functions so the SDK, the hub's ingress, the ACL generator and tests agree by
construction. Module and device ids never contain ``/``, ``+`` or ``#`` (manifest rules).
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

__all__ = [
    "Origin",
    "acks",
    "batch_inputs",
    "batch_outputs",
    "desired",
    "desired_patch",
    "input_topic",
    "leaf_events",
    "method_request",
    "method_response_prefix",
    "output_topic",
    "parse_ingress",
    "receipts",
    "reported",
    "status",
]


def output_topic(device: str, module: str, output: str) -> str:
    return f"devices/{device}/modules/{module}/outputs/{output}"


def input_topic(device: str, module: str, input_name: str) -> str:
    return f"devices/{device}/modules/{module}/inputs/{input_name}"


def batch_outputs(device: str, module: str) -> str:
    """Module -> hub: several outputs in one PUBLISH (``outpost.wire.batch``)."""
    return f"devices/{device}/modules/{module}/batch/outputs"


def batch_inputs(device: str, module: str) -> str:
    """Hub -> module: several deliveries in one PUBLISH, for modules that announce they read them."""
    return f"devices/{device}/modules/{module}/batch/inputs"


def leaf_events(device: str) -> str:
    return f"devices/{device}/messages/events/"


def receipts(device: str, module: str) -> str:
    return f"devices/{device}/modules/{module}/receipts"


def acks(device: str, module: str) -> str:
    return f"devices/{device}/modules/{module}/acks"


def desired(device: str, module: str) -> str:
    return f"devices/{device}/modules/{module}/twin/desired"


def desired_patch(device: str, module: str) -> str:
    return f"devices/{device}/modules/{module}/twin/desired/patch"


def reported(device: str, module: str) -> str:
    return f"devices/{device}/modules/{module}/twin/reported"


def method_request(device: str, module: str, method: str) -> str:
    return f"devices/{device}/modules/{module}/methods/{method}"


def method_response_prefix(device: str, module: str) -> str:
    return f"devices/{device}/methodres/{module}"


@dataclass(frozen=True)
class Origin:
    """Where an ingress message came from, read off its topic."""

    device: str
    module: str | None
    output: str | None
    topic_properties: tuple[tuple[str, str], ...] = ()


def parse_ingress(topic: str) -> Origin | None:
    """A module output or leaf telemetry topic -> its origin; None for any other topic."""
    parts = topic.split("/")
    if len(parts) >= 6 and parts[0] == "devices" and parts[2] == "modules" and parts[4] == "outputs":
        return Origin(device=parts[1], module=parts[3], output="/".join(parts[5:]))
    if len(parts) >= 4 and parts[0] == "devices" and parts[2:4] == ["messages", "events"]:
        encoded = "/".join(parts[4:])
        pairs = tuple(urllib.parse.parse_qsl(encoded, keep_blank_values=True)) if encoded else ()
        return Origin(device=parts[1], module=None, output=None, topic_properties=pairs)
    return None


def status(device: str, module: str) -> str:
    """Retained ``online``/``offline`` (the SDK's will): the hub only delivers to online modules."""
    return f"devices/{device}/modules/{module}/status"
