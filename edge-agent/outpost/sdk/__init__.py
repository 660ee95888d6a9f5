"""The module SDK: ``ModuleClient`` connects a module to the edge hub over MQTT 5 (docs/hub.md).

Telemetry with an outbox released by the hub's receipts, inputs acknowledged after their
handler, desired/reported properties and direct methods. ``from_environment()`` reads what the
agent sets (``IOTEDGE_MODULEID``, ``OUTPOST_DEVICE_ID``, ``OUTPOST_HUB_HOST``,
``OUTPOST_HUB_PORT``, ``OUTPOST_MODULE_PASSWORD``).
"""

from __future__ import annotations

from outpost.sdk.client import InputHandler, MethodHandler, ModuleClient, TwinHandler
from outpost.sdk.errors import (
    ConnectError,
    MethodTimeoutError,
    NotAuthorizedError,
    OutboxFullError,
    SdkError,
    SdkTimeoutError,
)
from outpost.sdk.messages import InputMessage
from outpost.sdk.module import ModuleRun, initial_twin, start_module

__all__ = [
    "ConnectError",
    "InputHandler",
    "InputMessage",
    "MethodHandler",
    "MethodTimeoutError",
    "ModuleClient",
    "ModuleRun",
    "NotAuthorizedError",
    "OutboxFullError",
    "SdkError",
    "SdkTimeoutError",
    "TwinHandler",
    "initial_twin",
    "start_module",
]
