"""Signed overrides: module desired properties an operator set on one device, signed for that device.

``outpost device twin D --module M --set K=V`` stores a module twin's desired properties on the
fleet, merged over what the device's deployments give module M. No deployment signature covers
them, so with ``--sign-key`` the operator signs the override's whole resulting document, bound
to the device, the module and the twin's desired version::

    {"deviceId": D, "moduleId": M, "version": N, "desired": {...}}

(the override itself, not the module's merged properties, so it stays valid when deployments
change under it). The fleet stores the signature with the twin and, when the device's manifest
carries signed parts, sends every override it merged in at ``/outpost/overrides``. The device
verifies each one for its own id (an override signed for device A is refused by device B),
refuses a version older than one it already accepted (the fleet cannot replay an old override
over a newer one) and lays the verified overrides over the composed parts before the byte
comparison in :func:`outpost.trust.parts.check_parts`. Pure. Used by parts, admission, the
fleet's resolution and ``outpost device twin``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from outpost.errors import ManifestError, Problem
from outpost.manifest.deployment import DESIRED
from outpost.trust.canonical import canonical_bytes
from outpost.trust.signing import Context, Signature, VerdictKind, check, sign
from outpost.wire.patch import merge_patch

__all__ = [
    "OVERRIDES_POINTER",
    "Override",
    "OverridesVerdict",
    "accepted_versions",
    "check_overrides",
    "has_overrides",
    "override_document",
    "overrides_of",
    "sign_override",
    "with_override_entries",
    "with_overrides",
]

OVERRIDES_POINTER = "/outpost/overrides"


def override_document(device_id: str, module_id: str, version: int, desired: Mapping[str, Any]) -> dict[str, Any]:
    """The document an override signature covers."""
    return {"deviceId": device_id, "moduleId": module_id, "version": version, "desired": dict(desired)}


def sign_override(
    device_id: str, module_id: str, version: int, desired: Mapping[str, Any], key: Ed25519PrivateKey
) -> Signature:
    """The operator's signature over one override (``outpost device twin --sign-key``)."""
    return sign(Context.OVERRIDE, canonical_bytes(override_document(device_id, module_id, version, desired)), key)


@dataclass(frozen=True)
class Override:
    """One module twin's operator-set desired properties, as the fleet stores and serves them."""

    device_id: str
    module_id: str
    version: int  # the module twin's desired version
    desired: dict[str, Any]
    signatures: tuple[Signature, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        sigs = [s.to_json() for s in self.signatures]
        return {**override_document(self.device_id, self.module_id, self.version, self.desired), "signatures": sigs}


def with_overrides(document: dict[str, Any], overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``document`` with each module's override merge-patched over its desired properties (the fleet
    serving a device and the device checking what it was served run this same code)."""
    content = dict(document["modulesContent"])
    for module, desired in overrides.items():
        if module not in content:
            continue  # a twin for a module this deployment does not run: kept, not sent
        entry = dict(content.get(module, {}))
        entry[DESIRED] = merge_patch(copy.deepcopy(entry.get(DESIRED, {})), desired)
        content[module] = entry
    return {**document, "modulesContent": content}


def with_override_entries(document: dict[str, Any], overrides: Sequence[Override]) -> dict[str, Any]:
    """The document carrying the overrides merged into it, for a device to check (``/outpost/overrides``)."""
    ext = document.get("outpost")
    return {
        **document,
        "outpost": {**(ext if isinstance(ext, dict) else {}), "overrides": [o.to_json() for o in overrides]},
    }


def has_overrides(document: Mapping[str, Any]) -> bool:
    ext = document.get("outpost")
    return isinstance(ext, dict) and "overrides" in ext


def overrides_of(document: Mapping[str, Any]) -> list[Override]:
    """Parse ``/outpost/overrides``; ``ManifestError`` naming the entry when one is malformed."""
    entries = document["outpost"]["overrides"]
    if not isinstance(entries, list):
        raise ManifestError([Problem(OVERRIDES_POINTER, "must be a list of module desired property overrides")])
    found: list[Override] = []
    problems: list[Problem] = []
    for index, entry in enumerate(entries):
        where = f"{OVERRIDES_POINTER}/{index}"
        if not isinstance(entry, dict):
            problems.append(Problem(where, "an override is an object with deviceId, moduleId, version and desired"))
            continue
        device, module, version, desired = (entry.get(k) for k in ("deviceId", "moduleId", "version", "desired"))
        if not isinstance(device, str) or not isinstance(module, str) or not isinstance(desired, dict):
            problems.append(Problem(where, "deviceId and moduleId must be strings and desired an object"))
            continue
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            problems.append(Problem(f"{where}/version", "must be a positive integer"))
            continue
        try:
            signatures = Signature.all_in(entry)
        except ValueError as exc:
            problems.append(Problem(f"{where}/signatures", str(exc)))
            continue
        found.append(Override(device, module, version, desired, signatures))
    if problems:
        raise ManifestError(problems)
    return found


def accepted_versions(document: Mapping[str, Any] | None) -> dict[str, int]:
    """Module id -> override version in a document this device accepted before (nothing if it has none)."""
    if document is None or not has_overrides(document):
        return {}
    try:
        return {o.module_id: o.version for o in overrides_of(document)}
    except ManifestError:
        return {}


@dataclass(frozen=True)
class OverridesVerdict:
    """Every override verified (``desired`` by module, ``signers`` by module), or ``problems``."""

    desired: dict[str, dict[str, Any]]
    signers: dict[str, str]
    problems: list[Problem]


def _refusal(override: Override, device_id: str, kind: VerdictKind, detail: str, trusted: list[str]) -> str:
    what = f"the desired properties set on the fleet for module {override.module_id!r} (version {override.version})"
    how = f"`outpost device twin {device_id} --module {override.module_id} --set KEY=VALUE --sign-key KEY_FILE`"
    keys = ", ".join(trusted)
    match kind:
        case VerdictKind.UNSIGNED:
            return f"unsigned content refused: {what} are unsigned; this device trusts key(s) {keys}: use {how}"
        case VerdictKind.UNKNOWN_KEY:
            return f"refused: {what}: {detail}; it trusts {keys} (`outpost agent trust list`)"
    return f"refused: {what}: {detail} (set for another device or module, or changed after signing)"


def check_overrides(
    overrides: Sequence[Override],
    *,
    device_id: str,
    trusted: Mapping[str, Ed25519PublicKey],
    accepted: Mapping[str, int],
) -> OverridesVerdict:
    """Verify each override for this device against the trusted keys and the versions it accepted before."""
    desired: dict[str, dict[str, Any]] = {}
    signers: dict[str, str] = {}
    keys = sorted(trusted)
    for index, override in enumerate(overrides):
        where = f"{OVERRIDES_POINTER}/{index}"
        module = override.module_id
        if not device_id:
            text = "refused: desired properties set for one device cannot be checked without the device's id"
            return OverridesVerdict(desired, signers, [Problem(where, text)])
        if override.device_id != device_id:
            text = (
                f"refused: the desired properties of module {module!r} were set for device {override.device_id!r}, "
                f"not this device ({device_id!r})"
            )
            return OverridesVerdict(desired, signers, [Problem(f"{where}/deviceId", text)])
        if module in desired:
            text = f"refused: module {module!r} has more than one override"
            return OverridesVerdict(desired, signers, [Problem(f"{where}/moduleId", text)])
        newest = accepted.get(module, 0)
        if override.version < newest:
            text = (
                f"refused: the desired properties of module {module!r} are version {override.version}, older than "
                f"version {newest} this device accepted already (an old override served again)"
            )
            return OverridesVerdict(desired, signers, [Problem(f"{where}/version", text)])
        signed = canonical_bytes(override_document(device_id, module, override.version, override.desired))
        verdict = check(Context.OVERRIDE, signed, override.signatures, trusted)
        if not verdict.ok:
            text = _refusal(override, device_id, verdict.kind, verdict.detail, keys)
            return OverridesVerdict(desired, signers, [Problem(f"{where}/signatures", text)])
        desired[module] = override.desired
        signers[module] = verdict.key_id
    return OverridesVerdict(desired, signers, [])
