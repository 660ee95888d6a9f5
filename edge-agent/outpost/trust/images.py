"""Which images a manifest runs, and whether each is pinned by digest.

A digest (``name@sha256:<64 hex>``) names exactly one image, so a signature over a manifest
that pins its images covers the bytes that run; a tag can be moved to other bytes after
signing. Pure. Used by admission and by ``outpost bundle create``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["ImageRef", "image_refs", "is_pinned"]

_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
_AGENT = "/modulesContent/$edgeAgent/properties.desired"


@dataclass(frozen=True)
class ImageRef:
    pointer: str  # JSON pointer of the settings.image member
    module: str
    image: str


def is_pinned(image: str) -> bool:
    return bool(_DIGEST.search(image))


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def image_refs(document: dict[str, Any]) -> list[ImageRef]:
    """Images of the edgeHub system module and every module (edgeAgent's own image is not run by
    Outpost's agent). Tolerant of malformed documents: validation reports those."""
    desired = document.get("modulesContent", {})
    desired = desired.get("$edgeAgent", {}) if isinstance(desired, dict) else {}
    desired = desired.get("properties.desired", {}) if isinstance(desired, dict) else {}
    if not isinstance(desired, dict):
        return []
    refs: list[ImageRef] = []
    for group in ("systemModules", "modules"):
        modules = desired.get(group)
        if not isinstance(modules, dict):
            continue
        for name, spec in sorted(modules.items()):
            if group == "systemModules" and name == "edgeAgent":
                continue
            settings = spec.get("settings") if isinstance(spec, dict) else None
            image = settings.get("image") if isinstance(settings, dict) else None
            if isinstance(image, str) and image:
                refs.append(ImageRef(f"{_AGENT}/{group}/{_escape(name)}/settings/image", name, image))
    return refs
