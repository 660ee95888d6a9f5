"""Leaf-device activation at the hub, for sites without a fleet (and for the fleet's leaf devices).

A leaf device (the ESP32 firmware, ``firmware/``) presents its device id and activation key once
and receives its broker credential. Both are derived from the device key, so nothing new is
stored: the activation key is ``base64url(HMAC-SHA256(device.key, "activation:" + id))``, given
to the leaf at provisioning (``outpost hub leaf-key ID``), and the credential is the leaf's broker
password (``outpost.wire.credentials.leaf_password``).

- listed in ``$edgeHub`` ``outpost.leafDevices`` and the right key: 200 ``{"credential": ...}``;
- the right key for a leaf no longer listed: 403 ``{"error": "deactivated"}`` (the broker refuses
  its credential too; listing it again re-activates it);
- anything else (unknown id, wrong key, a malformed body): 400/401, the reason named, nothing leaked.

Pure: :func:`activate` decides; ``adapters/activation_http.py`` serves it. Called by the hub service.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from outpost.wire.credentials import leaf_activation_key, leaf_password

__all__ = ["ActivationReply", "activate"]

_ID = re.compile(r"^[a-zA-Z0-9_.-]{1,128}$")
MAX_BODY = 4096


@dataclass(frozen=True)
class ActivationReply:
    status: int
    body: dict[str, Any]
    device_id: str | None = None  # for the log line (never the key or the credential)

    def encode(self) -> bytes:
        return json.dumps(self.body).encode()


def activate(body: bytes, *, key: bytes, leaves: Collection[str]) -> ActivationReply:
    """The reply to one activation request ``body`` (JSON ``{"deviceId", "activationKey"}``)."""
    if len(body) > MAX_BODY:
        return ActivationReply(413, {"error": f"body: larger than {MAX_BODY} bytes"})
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ActivationReply(400, {"error": "body: not JSON"})
    if not isinstance(doc, dict):
        return ActivationReply(400, {"error": "body: expected a JSON object with deviceId and activationKey"})
    device, given = doc.get("deviceId"), doc.get("activationKey")
    if not isinstance(device, str) or not _ID.match(device):
        return ActivationReply(400, {"error": "deviceId: expected 1 to 128 letters, digits, '_', '.' or '-'"})
    if not isinstance(given, str) or not given:
        return ActivationReply(400, {"error": "activationKey: expected a non-empty string"}, device)
    if not hmac.compare_digest(given.encode(), leaf_activation_key(key, device).encode()):
        return ActivationReply(401, {"error": "unknown device or wrong activation key"}, device)
    if device not in leaves:
        return ActivationReply(403, {"error": "deactivated"}, device)
    return ActivationReply(200, {"deviceId": device, "credential": leaf_password(key, device)}, device)
