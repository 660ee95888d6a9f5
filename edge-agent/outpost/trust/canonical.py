"""The canonical bytes of a JSON document, the only form anything is signed in.

RFC 8785 (JSON Canonicalization Scheme) through the ``rfc8785`` package: keys sorted by UTF-16
code units, no insignificant whitespace, ECMAScript number formatting, minimal string escapes.
Why JCS rather than ``json.dumps(sort_keys=True)``: it is a published standard with
implementations in every language, so an operator's tooling, the fleet service and a device
written in something else all derive the same bytes from the same document; Python's own
serialisation differs from it on floats (``1e+21``), astral-plane key order and escapes.
"""

from __future__ import annotations

from typing import Any

import rfc8785

from outpost.errors import InputError

__all__ = ["canonical_bytes"]


def canonical_bytes(document: Any) -> bytes:
    """JCS bytes of ``document``; ``InputError`` for values JSON cannot carry exactly
    (NaN, infinities, integers beyond 2**53), which would not survive a round trip."""
    try:
        return rfc8785.dumps(document)
    except rfc8785.CanonicalizationError as exc:
        raise InputError(f"cannot canonicalise the document for signing: {exc}") from exc
