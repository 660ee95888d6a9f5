"""Is this upstream export really from that device? Checked by the fleet before it takes the
reported properties a USB stick carried home (``outpost bundle import-upstream --fleet``).

An export (``outpost bundle export-upstream``) has an index in RFC 8785 form signed by the device's
own key (context ``outpost/upstream/v1``) that names the sha256 of its ``reported.json``. The index
carries the device's public key too, but that proves nothing by itself: the fleet checks the
signature against the key an operator registered for that device (``outpost device signing-key``)
and refuses any other. Pure. Used by :mod:`outpost.fleet.service`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from outpost.errors import InputError
from outpost.trust.canonical import canonical_bytes
from outpost.trust.keys import key_id
from outpost.trust.signing import Context, Signature, check

__all__ = ["EXPORT_FORMAT", "ExportRefusedError", "verify_export"]

EXPORT_FORMAT = "outpost-upstream/1"


class ExportRefusedError(InputError):
    """The export is not provably from the device it names; nothing was taken from it."""


def verify_export(
    index_bytes: bytes,
    signatures: Sequence[Signature],
    reported_bytes: bytes,
    *,
    device_id: str,
    registered: Ed25519PublicKey,
) -> dict[str, Any]:
    """The export's index once every check passed; ``ExportRefusedError`` saying which failed."""
    try:
        index = json.loads(index_bytes)
    except ValueError as exc:
        raise ExportRefusedError(f"the export's index is not JSON ({exc})") from exc
    if not isinstance(index, dict) or index.get("format") != EXPORT_FORMAT or canonical_bytes(index) != index_bytes:
        raise ExportRefusedError(f"not an {EXPORT_FORMAT} index made by `outpost bundle export-upstream`")
    if index.get("deviceId") != device_id:
        raise ExportRefusedError(f"the export is from device {index.get('deviceId')!r}, not {device_id!r}")
    expected = key_id(registered)
    if index.get("keyId") != expected:
        raise ExportRefusedError(
            f"the export is signed by device key {index.get('keyId')!r}, but the key registered for {device_id!r} "
            f"is {expected}; register the device's key with `outpost device signing-key` if it changed"
        )
    if not check(Context.UPSTREAM, index_bytes, signatures, {expected: registered}).ok:
        raise ExportRefusedError("the device's signature does not match the export's index: altered")
    reported = index.get("reported")
    digest = {"sha256": hashlib.sha256(reported_bytes).hexdigest(), "size": len(reported_bytes)}
    if not isinstance(reported, dict) or {k: reported.get(k) for k in digest} != digest:
        raise ExportRefusedError("reported.json does not match the signed index: altered or truncated")
    return index
