"""The multi-arch manifest list (image index) of one module: its platform images under one digest.

A deployment that names the list's digest serves every architecture: each device's engine picks the
entry for its own platform. The document is built here, byte for byte, so its digest is known
before it is pushed and a no-change rebuild can recognise it in the registry.
Called by :mod:`outpost.builder.runner`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from outpost.builder.platforms import Platform

__all__ = ["MANIFEST_LIST", "ImageManifest", "build_index", "digest_of"]

MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


@dataclass(frozen=True, slots=True)
class ImageManifest:
    """A pushed platform image, as its registry describes it."""

    platform: Platform
    digest: str
    media_type: str
    size: int


def build_index(images: list[ImageManifest]) -> bytes:
    """The manifest list over ``images``, in the order given (the plan's platform order)."""
    manifests = []
    for image in images:
        platform: dict[str, str] = {"architecture": image.platform.architecture, "os": image.platform.os}
        if image.platform.variant:
            platform["variant"] = image.platform.variant
        manifests.append(
            {"mediaType": image.media_type, "size": image.size, "digest": image.digest, "platform": platform}
        )
    document = {"schemaVersion": 2, "mediaType": MANIFEST_LIST, "manifests": manifests}
    return json.dumps(document, indent=3).encode()


def digest_of(content: bytes) -> str:
    """The registry's content digest of a manifest: ``sha256:<hex>`` of its exact bytes."""
    return "sha256:" + hashlib.sha256(content).hexdigest()
