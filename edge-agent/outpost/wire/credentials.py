"""Per-module broker credentials, derived from the device key so agent and hub agree unasked.

password = base64url(HMAC-SHA256(device.key, "module:" + id)) without padding; leaf devices use
"device:" + id. The key (32 random bytes, 0600) is created atomically by whoever needs it first.
Called by the agent (module environment) and the hub (Mosquitto password file).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from outpost.files import read_or_create

__all__ = ["DEFAULT_ROOT", "device_key", "leaf_activation_key", "leaf_password", "module_password"]

DEFAULT_ROOT = Path(os.environ.get("OUTPOST_STATE_ROOT", "/var/lib/outpost"))


def device_key(root: Path = DEFAULT_ROOT) -> bytes:
    """The device's secret key, created on first use."""
    return read_or_create(root / "device.key", lambda: secrets.token_bytes(32))


def _derive(key: bytes, label: str) -> str:
    digest = hmac.new(key, label.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def module_password(key: bytes, module: str) -> str:
    return _derive(key, f"module:{module}")


def leaf_password(key: bytes, device: str) -> str:
    return _derive(key, f"device:{device}")


def leaf_activation_key(key: bytes, device: str) -> str:
    """What a leaf device presents once to be activated (``outpost.hub.activation``)."""
    return _derive(key, f"activation:{device}")
