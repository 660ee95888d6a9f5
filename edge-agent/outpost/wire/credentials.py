"""Per-module broker credentials, derived from the device key so agent and hub agree unasked.

password = base64url(HMAC-SHA256(device.key, "module:" + id)) without padding; leaf devices use
"device:" + id. The key (32 random bytes, 0600) is created atomically by whoever needs it first.
Called by the agent (module environment) and the hub (Mosquitto password file).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
from pathlib import Path

__all__ = ["DEFAULT_ROOT", "device_key", "leaf_password", "module_password"]

DEFAULT_ROOT = Path(os.environ.get("OUTPOST_STATE_ROOT", "/var/lib/outpost"))


def device_key(root: Path = DEFAULT_ROOT) -> bytes:
    """The device's secret key, created on first use."""
    path = root / "device.key"
    with contextlib.suppress(FileNotFoundError):
        return path.read_bytes()
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".device.key.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(secrets.token_bytes(32))
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.link(tmp, path)  # fails if another process won the race: then use theirs
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_bytes()


def _derive(key: bytes, label: str) -> str:
    digest = hmac.new(key, label.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def module_password(key: bytes, module: str) -> str:
    return _derive(key, f"module:{module}")


def leaf_password(key: bytes, device: str) -> str:
    return _derive(key, f"device:{device}")
