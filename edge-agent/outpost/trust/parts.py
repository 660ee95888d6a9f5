"""Signed parts: how a fleet's composed manifest proves it is made only of signed deployments.

The fleet composes each device's effective manifest from a base deployment and layers, so no
operator can sign the per-device document. Instead the operator signs each deployment's content
at push (``outpost deploy push --sign-key``): the signature is an ordinary deployment signature
over the document ``{"modulesContent": CONTENT}``, so a base deployment's signed part is itself a
signed manifest (what ``outpost bundle create --deployment`` packs). The fleet hands the device
the effective manifest with its parts, in laying-down order, at ``/outpost/parts``::

    {"modulesContent": {...}, "outpost": {"parts": [{"id", "modulesContent", "signatures"}, ...]}}

The device checks every part against its trust roots, composes them again with the same code the
fleet runs (:func:`outpost.manifest.compose`) and accepts the document only if that composition
is, byte for byte in RFC 8785 form, the manifest it is about to run. So the fleet chooses which
signed deployments a device gets (targeting and priority are its job and may change after a
push) but cannot make it run anything no trusted key signed. Pure. Used by admission, the
fleet's resolution, ``outpost deploy push`` and bundles.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from outpost.errors import ManifestError, Problem
from outpost.lang import compile_target
from outpost.manifest import Deployment, compose
from outpost.manifest.deployment import is_layered
from outpost.trust.canonical import canonical_bytes
from outpost.trust.content import payload
from outpost.trust.overrides import OVERRIDES_POINTER, check_overrides, has_overrides, overrides_of, with_overrides
from outpost.trust.signing import Context, Signature, Verdict, check, sign

__all__ = [
    "PARTS_POINTER",
    "Part",
    "PartsVerdict",
    "carried_signatures",
    "check_parts",
    "has_parts",
    "part_document",
    "parts_of",
    "sign_content",
    "with_parts",
]

PARTS_POINTER = "/outpost/parts"
_EVERY_DEVICE = compile_target("*")
_DESIRED = "properties.desired"
_REGISTRY_URL = re.compile(r"(?P<base>.+)/api/v1/models/(?P<name>[^/?#]+)/(?P<version>[^/?#]+)/content")
_DEVICE_URL = re.compile(r"(?P<base>.+)/api/v1/devices/[^/?#]+/models/(?P<name>[^/?#]+)/(?P<version>[^/?#]+)/content")


def _model_ref(url: Any, pattern: re.Pattern[str]) -> tuple[str, str, str] | None:
    match = pattern.fullmatch(url) if isinstance(url, str) else None
    if match is None:
        return None
    unquote = urllib.parse.unquote
    return match["base"], unquote(match["name"]), unquote(match["version"])


def _desired_model(entry: Any) -> Any:
    desired = entry.get(_DESIRED) if isinstance(entry, Mapping) else None
    return desired.get("model") if isinstance(desired, Mapping) else None


def _unstamped(effective: dict[str, Any], composed: Mapping[str, Any]) -> dict[str, Any]:
    """``effective`` with the fleet's model download stamps undone where they are the only difference.

    The fleet gives each device its own route to a registry model and a download ``token`` (its
    module holds no credential); no operator can sign those per-device values. A stamp is undone
    only when the signed model value is the registry URL of the same fleet, name and version and
    every other field (the sha256 above all, which the module verifies before use) is unchanged:
    the bytes are the signed ones, only where they are fetched from differs."""
    content, signed = effective.get("modulesContent"), composed.get("modulesContent")
    if not isinstance(content, dict) or not isinstance(signed, Mapping):
        return effective
    undone: dict[str, Any] = {}
    for module, entry in content.items():
        model, wanted = _desired_model(entry), _desired_model(signed.get(module))
        if not isinstance(model, dict) or "token" not in model or not isinstance(wanted, Mapping):
            continue
        rest = {k: v for k, v in model.items() if k not in {"url", "token"}}
        signed_rest = {k: v for k, v in wanted.items() if k != "url"}
        ref = _model_ref(wanted.get("url"), _REGISTRY_URL)
        if ref is None or ref != _model_ref(model.get("url"), _DEVICE_URL):
            continue
        if canonical_bytes(rest) != canonical_bytes(signed_rest):
            continue
        undone[module] = {**entry, _DESIRED: {**entry[_DESIRED], "model": dict(wanted)}}
    return {**effective, "modulesContent": {**content, **undone}} if undone else effective


@dataclass(frozen=True)
class Part:
    """One deployment's content as the operator signed it."""

    id: str
    content: dict[str, Any]  # modulesContent
    signatures: tuple[Signature, ...]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "modulesContent": self.content, "signatures": [s.to_json() for s in self.signatures]}


def part_document(content: Mapping[str, Any]) -> dict[str, Any]:
    """The document a deployment signature covers: ``{"modulesContent": CONTENT}``."""
    return {"modulesContent": dict(content)}


def sign_content(content: Mapping[str, Any], key: Ed25519PrivateKey) -> Signature:
    """The operator's signature over one deployment's content (``deploy push --sign-key``)."""
    return sign(Context.DEPLOYMENT, payload(part_document(content)), key)


def carried_signatures(document: Mapping[str, Any]) -> list[Signature]:
    """Signatures a pushed file carries itself (``outpost keys sign``), when they can cover its content:
    only a plain manifest (``modulesContent`` and ``outpost`` at the top) signs exactly that."""
    if set(document) - {"modulesContent", "outpost"} or not isinstance(document.get("outpost"), dict):
        return []
    entries = document["outpost"].get("signatures", [])
    found = []
    for entry in entries if isinstance(entries, list) else []:
        try:
            found.append(Signature.from_json(entry))
        except ValueError:
            continue
    return found


def with_parts(document: dict[str, Any], parts: list[Part]) -> dict[str, Any]:
    """The effective manifest carrying its parts (what the fleet sends when any part is signed)."""
    return {**document, "outpost": {"parts": [p.to_json() for p in parts]}}


def has_parts(document: Mapping[str, Any]) -> bool:
    ext = document.get("outpost")
    return isinstance(ext, dict) and "parts" in ext


def parts_of(document: Mapping[str, Any]) -> list[Part]:
    """Parse ``/outpost/parts``; ``ManifestError`` naming the entry when one is malformed."""
    entries = document["outpost"]["parts"]
    if not isinstance(entries, list) or not entries:
        raise ManifestError([Problem(PARTS_POINTER, "must be a non-empty list of signed deployments")])
    parts: list[Part] = []
    problems: list[Problem] = []
    for index, entry in enumerate(entries):
        where = f"{PARTS_POINTER}/{index}"
        if not isinstance(entry, dict) or not isinstance(entry.get("modulesContent"), dict):
            problems.append(Problem(where, "a part is an object with id, modulesContent and signatures"))
            continue
        try:
            signatures = Signature.all_in(entry)
        except ValueError as exc:
            problems.append(Problem(f"{where}/signatures", str(exc)))
            continue
        parts.append(Part(str(entry.get("id", index)), entry["modulesContent"], signatures))
    if problems:
        raise ManifestError(problems)
    return parts


def _first_difference(a: Any, b: Any, pointer: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b or canonical_bytes(a[key]) != canonical_bytes(b[key]):
                escaped = key.replace("~", "~0").replace("/", "~1")
                return _first_difference(a.get(key), b.get(key), f"{pointer}/{escaped}")
    return pointer or "/"


def _left_out(composed: Mapping[str, Any], modules: Iterable[str]) -> Problem | None:
    """A module this device accepted signed overrides for, still run, served without one: withheld by
    the fleet (which would roll it back to the deployment's values) or cleared unsigned."""
    content = composed.get("modulesContent", {})
    for module in sorted(m for m in modules if m in content):
        text = (
            f"refused: the desired properties set on the fleet for module {module!r}, which this device accepted "
            "signed before, are missing: left out by the fleet, or cleared without "
            "`outpost device twin --sign-key`"
        )
        return Problem(OVERRIDES_POINTER, text)
    return None


@dataclass(frozen=True)
class PartsVerdict:
    """Every part verified (``signers`` by part id, and by override pointer) and the composition
    matched, or ``problems``."""

    signers: dict[str, str]
    problems: list[Problem]
    failed: Verdict | None = None  # the first part's failed verdict, for the reason's wording


def check_parts(
    document: Mapping[str, Any],
    trusted: Mapping[str, Ed25519PublicKey],
    *,
    device_id: str = "",
    accepted: Mapping[str, int] | None = None,
) -> PartsVerdict:
    """Verify each part and that composing them, with the device's signed overrides laid over
    (:mod:`outpost.trust.overrides`; ``accepted``: versions this device accepted before), gives
    exactly ``document`` without ``/outpost``."""
    parts = parts_of(document)
    signers: dict[str, str] = {}
    for index, part in enumerate(parts):
        verdict = check(Context.DEPLOYMENT, payload(part_document(part.content)), part.signatures, trusted)
        if not verdict.ok:
            where = f"{PARTS_POINTER}/{index}/signatures"
            return PartsVerdict(signers, [Problem(where, f"deployment {part.id!r}: {verdict.detail}")], verdict)
        signers[part.id] = verdict.key_id
    stack = [
        Deployment(id=p.id, modules_content=p.content, target=_EVERY_DEVICE, layered=is_layered(p.content), order=i)
        for i, p in enumerate(parts)
    ]
    if sum(1 for d in stack if not d.layered) != 1:
        return PartsVerdict(signers, [Problem(PARTS_POINTER, "the parts must be one base deployment and its layers")])
    try:
        composed = compose(stack).document
    except ManifestError as exc:
        return PartsVerdict(signers, [Problem(PARTS_POINTER, f"the signed parts do not compose: {exc}")])
    accepted = accepted or {}
    verified: dict[str, dict[str, Any]] = {}
    if has_overrides(document):
        overrides = check_overrides(overrides_of(document), device_id=device_id, trusted=trusted, accepted=accepted)
        if overrides.problems:
            return PartsVerdict(signers, overrides.problems)
        verified = overrides.desired
        composed = with_overrides(composed, verified)
        signers.update({f"{OVERRIDES_POINTER}/{m}": k for m, k in overrides.signers.items()})
    missing = _left_out(composed, set(accepted) - set(verified))
    if missing:
        return PartsVerdict(signers, [missing])
    effective = _unstamped({k: v for k, v in document.items() if k != "outpost"}, composed)
    if canonical_bytes(composed) != canonical_bytes(effective):
        where = _first_difference(effective, composed)
        text = (
            f"the manifest differs at {where} from what its signed deployments ({', '.join(p.id for p in parts)}) "
            "compose to: changed after signing, or module desired properties set on the fleet without "
            "`outpost device twin --sign-key`"
        )
        return PartsVerdict(signers, [Problem(where, text)])
    return PartsVerdict(signers, [])
