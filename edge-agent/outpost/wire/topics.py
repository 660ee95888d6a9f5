"""The MQTT topic scheme (``docs/hub.md``): building and parsing, nothing else.

Pure functions so the SDK, the hub's ingress, the ACL generator and tests agree by
construction. Module and device ids never contain ``/``, ``+`` or ``#`` (manifest rules).
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "BatchInputs",
    "BatchOutputs",
    "LeafChannel",
    "LeafEvents",
    "LeafMethodRequest",
    "LeafTopic",
    "MethodRequest",
    "MethodResponse",
    "ModuleChannel",
    "ModuleInput",
    "ModuleOutput",
    "ModuleTopic",
    "Topic",
    "acks",
    "all_leaf_events",
    "all_leaf_reported",
    "all_outputs",
    "batch_inputs",
    "batch_outputs",
    "desired",
    "desired_all",
    "desired_patch",
    "input_topic",
    "leaf_events",
    "leaf_method_request",
    "leaf_topic",
    "method_request",
    "method_requests",
    "method_response",
    "method_response_prefix",
    "method_responses",
    "module_topic",
    "output_topic",
    "parse",
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


def leaf_topic(leaf: str, channel: LeafChannel) -> str:
    """A leaf device's twin topic: ``devices/L/twin/desired``, ``.../desired/patch``, ``.../reported``."""
    return f"devices/{leaf}/{channel.value}"


def leaf_method_request(leaf: str, method: str) -> str:
    """Caller -> leaf device ``leaf``; it answers below ``method_response_prefix(device, leaf)``."""
    return f"devices/{leaf}/methods/{method}"


def receipts(device: str, module: str) -> str:
    return module_topic(device, module, ModuleChannel.RECEIPTS)


def acks(device: str, module: str) -> str:
    return module_topic(device, module, ModuleChannel.ACKS)


def desired(device: str, module: str) -> str:
    return module_topic(device, module, ModuleChannel.DESIRED)


def desired_patch(device: str, module: str) -> str:
    return module_topic(device, module, ModuleChannel.DESIRED_PATCH)


def reported(device: str, module: str) -> str:
    return module_topic(device, module, ModuleChannel.REPORTED)


def method_request(device: str, module: str, method: str) -> str:
    return f"devices/{device}/modules/{module}/methods/{method}"


def method_response_prefix(device: str, module: str) -> str:
    """Where ``module`` answers method calls (the ACL lets it write below this)."""
    return f"devices/{device}/methodres/{module}"


def method_response(device: str, module: str, caller: str, correlation: str) -> str:
    """The response topic a caller names for its call of a method of ``module``."""
    return f"{method_response_prefix(device, module)}/{caller}/{correlation}"


# -- parsing ------------------------------------------------------------------------------------
# One frozen record per topic kind; ``parse`` is one ``match`` over the topic's levels, so a new
# kind (leaf-device twins and methods, say) is a record, a builder above and one ``case``.


@dataclass(frozen=True)
class ModuleOutput:
    """``devices/D/modules/M/outputs/OUTPUT``: a module's message (OUTPUT may contain ``/``; empty
    when the topic ends in ``outputs/``, which ingress refuses)."""

    device: str
    module: str
    output: str


@dataclass(frozen=True)
class ModuleInput:
    device: str
    module: str
    input: str


@dataclass(frozen=True)
class BatchOutputs:
    device: str
    module: str


@dataclass(frozen=True)
class BatchInputs:
    device: str
    module: str


@dataclass(frozen=True)
class LeafEvents:
    """``devices/D/messages/events/[k=v&...]``: leaf-device telemetry, with properties in the topic."""

    device: str
    properties: tuple[tuple[str, str], ...] = ()


class ModuleChannel(StrEnum):
    """The per-module topics that carry no further name: ``devices/D/modules/M/<channel>``."""

    RECEIPTS = "receipts"
    ACKS = "acks"
    STATUS = "status"
    DESIRED = "twin/desired"
    DESIRED_PATCH = "twin/desired/patch"
    REPORTED = "twin/reported"


@dataclass(frozen=True)
class ModuleTopic:
    """One of a module's ``ModuleChannel`` topics."""

    device: str
    module: str
    channel: ModuleChannel


@dataclass(frozen=True)
class MethodRequest:
    device: str
    module: str
    method: str


@dataclass(frozen=True)
class MethodResponse:
    """``devices/D/methodres/M/REST``: a response to a call ``M`` made (REST is the caller's)."""

    device: str
    module: str
    rest: str


class LeafChannel(StrEnum):
    """A leaf device's twin topics, ``devices/L/<channel>``: scoped to the leaf as modules' are."""

    DESIRED = "twin/desired"
    DESIRED_PATCH = "twin/desired/patch"
    REPORTED = "twin/reported"


@dataclass(frozen=True)
class LeafTopic:
    """One of a leaf device's ``LeafChannel`` topics (``leaf`` is the leaf's device id)."""

    leaf: str
    channel: LeafChannel


@dataclass(frozen=True)
class LeafMethodRequest:
    """``devices/L/methods/METHOD``: a direct method call to leaf device ``L``."""

    leaf: str
    method: str


Topic = (
    ModuleOutput
    | ModuleInput
    | BatchOutputs
    | BatchInputs
    | LeafEvents
    | ModuleTopic
    | MethodRequest
    | MethodResponse
    | LeafTopic
    | LeafMethodRequest
)

_CHANNELS = {tuple(c.value.split("/")): c for c in ModuleChannel}
_LEAF_CHANNELS = {tuple(c.value.split("/")): c for c in LeafChannel}


def parse(topic: str) -> Topic | None:
    """Any topic of the scheme -> its record; None for a topic that is none of them."""
    match topic.split("/"):
        case ["devices", device, "modules", module, "outputs", *output] if output:
            return ModuleOutput(device, module, "/".join(output))
        case ["devices", device, "modules", module, "inputs", *name] if name:
            return ModuleInput(device, module, "/".join(name))
        case ["devices", device, "modules", module, "batch", "outputs"]:
            return BatchOutputs(device, module)
        case ["devices", device, "modules", module, "batch", "inputs"]:
            return BatchInputs(device, module)
        case ["devices", device, "modules", module, "methods", *method] if method:
            return MethodRequest(device, module, "/".join(method))
        case ["devices", device, "modules", module, *rest] if tuple(rest) in _CHANNELS:
            return ModuleTopic(device, module, _CHANNELS[tuple(rest)])
        case ["devices", device, "methodres", module, *rest]:
            return MethodResponse(device, module, "/".join(rest))
        case ["devices", device, "messages", "events", *encoded]:
            text = "/".join(encoded)
            pairs = tuple(urllib.parse.parse_qsl(text, keep_blank_values=True)) if text else ()
            return LeafEvents(device, pairs)
        case ["devices", leaf, "twin", *rest] if ("twin", *rest) in _LEAF_CHANNELS:
            return LeafTopic(leaf, _LEAF_CHANNELS[("twin", *rest)])
        case ["devices", leaf, "methods", *method] if method:
            return LeafMethodRequest(leaf, "/".join(method))
    return None


def module_topic(device: str, module: str, channel: ModuleChannel) -> str:
    return f"devices/{device}/modules/{module}/{channel.value}"


# -- subscription filters ---------------------------------------------------------------------


def all_outputs(device: str) -> str:
    """Every module's single outputs (the hub's ingress)."""
    return output_topic(device, "+", "#")


def all_leaf_events() -> str:
    """Every leaf device's telemetry (the broker's ACL limits each leaf to its own)."""
    return "devices/+/messages/events/#"


def all_leaf_reported() -> str:
    """Every leaf device's reported properties (the broker's ACL limits each leaf to its own)."""
    return "devices/+/twin/reported"


def desired_all(device: str, module: str) -> str:
    """A module's full desired properties and their patches."""
    return f"{desired(device, module)}/#"


def method_requests(device: str, module: str) -> str:
    return method_request(device, module, "#")


def method_responses(device: str, caller: str) -> str:
    """Responses to every method call ``caller`` makes."""
    return f"devices/{device}/methodres/+/{caller}/#"


def status(device: str, module: str) -> str:
    """Retained ``online``/``offline`` (the SDK's will): the hub only delivers to online modules."""
    return module_topic(device, module, ModuleChannel.STATUS)
