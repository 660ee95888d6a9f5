"""Reported properties carried home on a USB stick: devices' signing keys and upstream imports.

A disconnected device never talks to the fleet, so the fleet cannot learn its key at activation:
an operator registers it (``outpost device signing-key DEVICE device.pub``; the device prints it
with ``outpost agent trust device-key``). ``outpost bundle import-upstream --fleet`` then hands
the fleet the export's signed index, its signature and ``reported.json``; the fleet checks them
against the registered key (:func:`outpost.trust.exports.verify_export`) and writes the reported
properties as if the device had sent them. Duplicates are dropped: an export already imported
(same index digest), one older than the last imported, or one made before the device last
reported over a link itself (its properties are newer than the stick's) changes nothing.

Kept apart from :class:`outpost.fleet.store.FleetStore` (as rollouts are) so it adds a table
without touching the device store; a key registered for a device that was removed and added
again under the same id does not count (the record remembers the device's creation time).
Called by :mod:`outpost.fleet.adapters.import_api`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from outpost.errors import InputError, Problem
from outpost.fleet.credentials import Kind, Principal
from outpost.fleet.errors import ConflictError, InvalidError, NotFoundError
from outpost.fleet.models import DeviceRecord, now_utc
from outpost.fleet.service import FleetService
from outpost.trust.exports import verify_export
from outpost.trust.keys import key_id, public_from_pem, public_from_raw, raw_public
from outpost.trust.signing import Signature

__all__ = ["DeviceKeyStore", "SigningKey", "UpstreamImports"]

AGENT = "$edgeAgent"


@dataclass(frozen=True)
class SigningKey:
    device_id: str
    key_id: str
    public_key: str  # raw 32 bytes, base64
    device_created: str  # the device record's creation time: the key belongs to that device only
    added: str
    added_by: str
    last_export_at: str | None = None  # createdAt of the newest export imported
    last_export_sha256: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"deviceId": self.device_id, "keyId": self.key_id, "added": self.added, "addedBy": self.added_by,
                "lastExportAt": self.last_export_at}  # fmt: skip


class DeviceKeyStore(Protocol):
    def signing_key(self, device_id: str) -> SigningKey | None: ...
    def put_signing_key(self, key: SigningKey) -> None: ...
    def mark_export(self, device_id: str, at: str, sha256: str, expected_sha256: str | None) -> bool:
        """Compare-and-set the last imported export; False when another import won the race."""
        ...


def _b64(text: Any, pointer: str) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidError(f"{pointer} is not base64", [Problem(pointer, "expected base64")]) from exc


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


class UpstreamImports:
    """The rules; see the module docstring."""

    def __init__(self, service: FleetService, keys: DeviceKeyStore) -> None:
        self.service = service
        self.keys = keys

    def _device(self, device_id: str) -> DeviceRecord:
        device = self.service.store.device(device_id)
        if device is None:
            raise NotFoundError(f"no device {device_id!r}")
        return device

    def _key(self, device: DeviceRecord) -> SigningKey | None:
        key = self.keys.signing_key(device.id)
        return key if key is not None and key.device_created == device.created else None

    def set_key(self, who: Principal, device_id: str, public_pem: str) -> dict[str, Any]:
        """Register (or replace) the key a device signs its exports with."""
        who.require_operator()
        device = self._device(device_id)
        try:
            public = public_from_pem(public_pem.encode())
        except InputError as exc:
            raise InvalidError(str(exc), [Problem("/publicKey", "expected an Ed25519 public key in PEM")]) from exc
        record = SigningKey(device_id, key_id(public), base64.b64encode(raw_public(public)).decode(), device.created,
                            now_utc(), who.name)  # fmt: skip
        self.keys.put_signing_key(record)
        return record.as_dict()

    def key(self, who: Principal, device_id: str) -> dict[str, Any]:
        who.require_operator()
        key = self._key(self._device(device_id))
        if key is None:
            raise NotFoundError(f"no signing key is registered for device {device_id!r}")
        return key.as_dict()

    def import_reported(self, who: Principal, device_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Take an export's reported properties once its device's signature is proven."""
        who.require_operator()
        device = self._device(device_id)
        key = self._key(device)
        if key is None:
            raise ConflictError(
                f"no signing key is registered for device {device_id!r}: register the device's key "
                "(`outpost agent trust device-key` on the device, `outpost device signing-key` here) and import again"
            )
        index_bytes = _b64(body.get("index"), "/index")
        reported_bytes = _b64(body.get("reported"), "/reported")
        entries = body.get("signatures")
        try:
            signatures = [Signature.from_json(s) for s in (entries if isinstance(entries, list) else [])]
        except ValueError as exc:
            raise InvalidError(f"a signature is malformed: {exc}", [Problem("/signatures", str(exc))]) from exc
        public: Ed25519PublicKey = public_from_raw(base64.b64decode(key.public_key))
        try:
            index = verify_export(index_bytes, signatures, reported_bytes, device_id=device_id, registered=public)
        except InputError as exc:
            raise InvalidError(f"export refused: {exc}", [Problem("/index", str(exc))]) from exc
        digest = hashlib.sha256(index_bytes).hexdigest()
        created = str(index.get("createdAt", ""))
        result: dict[str, Any] = {"deviceId": device_id, "export": digest, "createdAt": created, "applied": False}
        last, made = _time(key.last_export_at), _time(created)
        if digest == key.last_export_sha256:
            return {**result, "duplicate": True, "reason": "this export was imported already"}
        if last is not None and (made is None or made < last):
            return {**result, "duplicate": True, "reason": f"an export made later ({key.last_export_at}) was imported"}
        seen = _time(device.last_activity)
        if seen is not None and made is not None and seen > made:
            reason = f"the device reported over a link at {device.last_activity}, after this export was made"
            self.keys.mark_export(device_id, created, digest, key.last_export_sha256)
            return {**result, "reason": reason}
        try:
            reported = json.loads(reported_bytes)
        except ValueError as exc:
            raise InvalidError("reported.json is not JSON", [Problem("/reported", str(exc))]) from exc
        patches = _patches(reported)
        if not self.keys.mark_export(device_id, created, digest, key.last_export_sha256):
            return {**result, "duplicate": True, "reason": "another import of this device ran at the same time"}
        if patches:
            self.service.report_modules(Principal(Kind.DEVICE, device_id), device_id, patches)
        return {**result, "applied": True, "modules": sorted(patches)}


def _patches(reported: Any) -> dict[str, dict[str, Any]]:
    """``reported.json`` (the agent's status and each module's reported properties) as module patches."""
    if not isinstance(reported, dict):
        raise InvalidError("reported.json must be an object", [Problem("/reported", "expected an object")])
    patches: dict[str, dict[str, Any]] = {}
    agent = reported.get(AGENT)
    if isinstance(agent, dict) and agent:
        patches[AGENT] = agent
    modules = reported.get("modules")
    if isinstance(modules, dict):
        patches.update({str(name): doc for name, doc in modules.items() if isinstance(doc, dict)})
    return patches
