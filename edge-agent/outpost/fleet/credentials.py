"""Operator tokens, device credentials and activation keys: made here, stored only as hashes.

A credential reads ``<kind>.<base64url(name)>.<secret>`` (kind ``op`` or ``dev``), so the service
finds the one row to compare against without scanning, and a device credential names its
device. Secrets carry 256 random bits, so one SHA-256 is enough to store them safely; they are
compared in constant time. Called by :mod:`outpost.fleet.service` and the HTTP adapter.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from outpost.fleet.errors import ForbiddenError, InvalidError

__all__ = [
    "DEVICE_ID",
    "MODULE_ID",
    "Credential",
    "Kind",
    "Principal",
    "check_device_id",
    "check_module_id",
    "hash_secret",
    "make_credential",
    "new_secret",
    "parse_credential",
    "secret_matches",
    "secret_matches_hash",
]

DEVICE_ID = re.compile(r"[A-Za-z0-9\-.%_*?!(),:=@$']{1,128}")
"""IoT Hub's device id characters and length."""
MODULE_ID = re.compile(r"\$?[A-Za-z0-9\-.%_*?!(),:=@']{1,128}")


class Kind(enum.StrEnum):
    OPERATOR = "op"
    DEVICE = "dev"


@dataclass(frozen=True)
class Principal:
    """Who is calling: an operator (by name) or one device (by id)."""

    kind: Kind
    name: str

    @property
    def is_operator(self) -> bool:
        return self.kind is Kind.OPERATOR

    def require_operator(self) -> None:
        if not self.is_operator:
            raise ForbiddenError("a device credential cannot do this; use an operator token")

    def require_device(self, device_id: str) -> None:
        """Operators reach every device; a device only itself."""
        if self.kind is Kind.DEVICE and self.name != device_id:
            raise ForbiddenError("a device credential reaches only its own device")

    def require_this_device(self, device_id: str) -> None:
        """Device-side calls: only the device itself, not even an operator."""
        if self.kind is not Kind.DEVICE or self.name != device_id:
            raise ForbiddenError(f"only device {device_id!r}'s own credential may do this")


@dataclass(frozen=True)
class Credential:
    kind: Kind
    name: str
    secret: str

    def __str__(self) -> str:
        encoded = base64.urlsafe_b64encode(self.name.encode()).decode().rstrip("=")
        return f"{self.kind.value}.{encoded}.{self.secret}"


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str | None) -> bool:
    return stored_hash is not None and hmac.compare_digest(hash_secret(secret), stored_hash)


def secret_matches_hash(secret_hash: str, stored_hash: str | None) -> bool:
    """A presented secret, hashed already, against the stored hash (constant time)."""
    return stored_hash is not None and hmac.compare_digest(secret_hash, stored_hash)


def make_credential(kind: Kind, name: str) -> Credential:
    return Credential(kind, name, new_secret())


def parse_credential(text: str) -> Credential | None:
    """The parts of a presented credential, or None if it cannot be one of ours."""
    parts = text.strip().split(".")
    if len(parts) != 3 or not parts[2]:
        return None
    try:
        kind = Kind(parts[0])
        name = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    return Credential(kind, name, parts[2]) if name else None


def check_device_id(device_id: str) -> str:
    if not DEVICE_ID.fullmatch(device_id):
        raise InvalidError(
            f"invalid device id {device_id!r}: use 1-128 letters, digits or - . % _ * ? ! ( ) , : = @ $ '"
        )
    return device_id


def check_module_id(module_id: str) -> str:
    if not MODULE_ID.fullmatch(module_id):
        raise InvalidError(f"invalid module id {module_id!r}: use 1-128 letters, digits or - . % _ * ? ! ( ) , : = @ '")
    return module_id
