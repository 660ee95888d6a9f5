"""Detached Ed25519 signatures over canonical bytes, checked against a set of trusted keys.

A signature signs ``CONTEXT + "\\n" + payload``: the context names what is signed (a deployment,
a bundle's sums, an upstream export), so a signature made for one kind of thing can never be
replayed as another. Pure: no files, no clock. Used by ``content`` (deployments), ``overrides``
(module twins set on one device) and bundles.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from outpost.trust.keys import key_id

__all__ = [
    "ALGORITHM",
    "Context",
    "Signature",
    "Verdict",
    "VerdictKind",
    "check",
    "sign",
]

ALGORITHM = "Ed25519"


class Context(StrEnum):
    DEPLOYMENT = "outpost/deployment/v1"
    BUNDLE = "outpost/bundle/v1"
    UPSTREAM = "outpost/upstream/v1"
    RECEIPT = "outpost/receipt/v1"
    OVERRIDE = "outpost/override/v1"  # module desired properties set on one device (trust.overrides)


@dataclass(frozen=True)
class Signature:
    """One signature as it travels in JSON: ``{"keyId", "alg", "sig"}`` (sig in base64)."""

    key_id: str
    value: bytes
    algorithm: str = ALGORITHM

    def to_json(self) -> dict[str, str]:
        return {"keyId": self.key_id, "alg": self.algorithm, "sig": base64.b64encode(self.value).decode()}

    @classmethod
    def from_json(cls, data: Any) -> Signature:
        """Parse one entry; ``ValueError`` says what is wrong with it."""
        if not isinstance(data, dict):
            raise ValueError("a signature is an object with keyId, alg and sig")
        kid, alg, sig = data.get("keyId"), data.get("alg"), data.get("sig")
        if not isinstance(kid, str) or not kid:
            raise ValueError("keyId is missing or not a string")
        if alg != ALGORITHM:
            raise ValueError(f"alg is {alg!r}; only {ALGORITHM!r} is accepted")
        if not isinstance(sig, str):
            raise ValueError("sig is missing or not a string")
        try:
            value = base64.b64decode(sig, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"sig is not base64: {exc}") from exc
        return cls(kid, value, alg)

    @classmethod
    def all_in(cls, entry: Mapping[str, Any]) -> tuple[Signature, ...]:
        """The ``signatures`` member of a signed entry (a list, or one signature alone); ``ValueError``
        says what is wrong with the first malformed one."""
        given = entry.get("signatures", [])
        return tuple(cls.from_json(s) for s in (given if isinstance(given, list) else [given]))


def _message(context: Context, payload: bytes) -> bytes:
    return context.value.encode() + b"\n" + payload


def sign(context: Context, payload: bytes, key: Ed25519PrivateKey) -> Signature:
    return Signature(key_id(key.public_key()), key.sign(_message(context, payload)))


class VerdictKind(StrEnum):
    VERIFIED = "verified"
    UNSIGNED = "unsigned"
    UNKNOWN_KEY = "unknown-key"
    MISMATCH = "mismatch"  # a trusted key's signature does not match: changed after signing


@dataclass(frozen=True)
class Verdict:
    """What ``check`` found; ``key_id`` is the trusted key that verified (or failed to)."""

    kind: VerdictKind
    key_id: str = ""
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.kind is VerdictKind.VERIFIED


def check(
    context: Context, payload: bytes, signatures: Sequence[Signature], trusted: Mapping[str, Ed25519PublicKey]
) -> Verdict:
    """Verified when any signature by a trusted key verifies; otherwise the most telling failure."""
    if not signatures:
        return Verdict(VerdictKind.UNSIGNED, detail="there is no signature")
    message = _message(context, payload)
    failed = ""
    for signature in signatures:
        key = trusted.get(signature.key_id)
        if key is None:
            continue
        try:
            key.verify(signature.value, message)
        except InvalidSignature:
            failed = failed or signature.key_id
            continue
        return Verdict(VerdictKind.VERIFIED, key_id=signature.key_id)
    if failed:
        return Verdict(
            VerdictKind.MISMATCH,
            key_id=failed,
            detail=f"the signature by trusted key {failed} does not match: the content was changed after signing",
        )
    names = ", ".join(sorted({s.key_id for s in signatures}))
    return Verdict(VerdictKind.UNKNOWN_KEY, detail=f"signed only by key(s) this device does not trust: {names}")
