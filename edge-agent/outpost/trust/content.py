"""Signed deployment content: a manifest document that carries its own signatures.

The signatures live in the document at ``/outpost/signatures`` (Outpost's top-level extension
key; Azure ignores unknown top-level keys and our schema allows them), so a signed manifest is
still a valid manifest, travels through every path a manifest takes (file, fleet, bundle) and
is stored as is in the agent's state dir, where it can be checked again at any time. What is
signed is the RFC 8785 canonical form of the document without that one member: exactly the
effective manifest the device runs. Pure. Used by ``outpost keys sign``, admission and bundles.
"""

from __future__ import annotations

import copy
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from outpost.errors import ManifestError, Problem
from outpost.trust.canonical import canonical_bytes
from outpost.trust.signing import Context, Signature, sign

__all__ = ["SIGNATURES_POINTER", "payload", "sign_document", "signatures"]

SIGNATURES_POINTER = "/outpost/signatures"


def _unsigned(document: dict[str, Any]) -> dict[str, Any]:
    view = dict(document)
    ext = view.get("outpost")
    if isinstance(ext, dict) and "signatures" in ext:
        rest = {k: v for k, v in ext.items() if k != "signatures"}
        if rest:
            view["outpost"] = rest
        else:
            del view["outpost"]
    return view


def payload(document: dict[str, Any]) -> bytes:
    """The bytes a deployment signature covers (see the module docstring)."""
    return canonical_bytes(_unsigned(document))


def signatures(document: dict[str, Any]) -> list[Signature]:
    """The document's signatures; ``ManifestError`` naming the entry when one is malformed."""
    ext = document.get("outpost")
    if ext is None:
        return []
    if not isinstance(ext, dict):
        raise ManifestError([Problem("/outpost", "must be an object")])
    entries = ext.get("signatures", [])
    if not isinstance(entries, list):
        raise ManifestError([Problem(SIGNATURES_POINTER, "must be a list of signatures")])
    found: list[Signature] = []
    problems: list[Problem] = []
    for index, entry in enumerate(entries):
        try:
            found.append(Signature.from_json(entry))
        except ValueError as exc:
            problems.append(Problem(f"{SIGNATURES_POINTER}/{index}", str(exc)))
    if problems:
        raise ManifestError(problems)
    return found


def sign_document(document: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """A copy of ``document`` signed by ``key`` (replacing an older signature by the same key;
    other keys' signatures are kept, so content can carry the old and new key during rotation)."""
    signed = copy.deepcopy(document)
    new = sign(Context.DEPLOYMENT, payload(document), key)
    others = [s.to_json() for s in signatures(document) if s.key_id != new.key_id]
    ext = signed.setdefault("outpost", {})
    ext["signatures"] = [*others, new.to_json()]
    return signed
