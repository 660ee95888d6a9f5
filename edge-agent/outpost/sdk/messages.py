"""What handlers receive: ``InputMessage`` (a delivery to an input) and the twin merge rule.

Built by ``outpost.sdk.client`` from MQTT 5 packets with the one property encoding of
``outpost.wire.message`` (user properties; IoT Hub's ``$.`` short keys for system properties).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["InputMessage"]


@dataclass(frozen=True)
class InputMessage:
    """One message delivered to an input.

    ``properties`` are the application properties; ``system`` the system properties by their
    routing-query names (``messageId``, ``correlationId``, ``contentType``, ``connectionModuleId``...).
    """

    id: str
    input_name: str
    body: bytes
    properties: Mapping[str, str] = field(default_factory=dict)
    system: Mapping[str, str] = field(default_factory=dict)

    @property
    def content_type(self) -> str | None:
        return self.system.get("contentType")

    def text(self) -> str:
        return self.body.decode(self.system.get("contentEncoding") or "utf-8")

    def json(self) -> Any:
        """The body parsed as JSON (whatever the content type says)."""
        return json.loads(self.text())
