"""Files that modules' desired properties point to (models and their metadata), found in content.

A reference is any object in a module twin's ``properties.desired`` with a ``url`` or ``path``
string (``metadataUrl`` too), as the anomaly detector's ``model`` is; its ``sha256``, when
given, is what the file must hash to. ``path`` and ``file://`` references name a place on the
device, where ``apply`` puts the file; ``http(s)`` ones go to the device's models directory.
Pure. Used by ``create`` (what to pack) and by tests.
"""

from __future__ import annotations

import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

__all__ = ["FileRef", "file_refs", "twins"]

_KEYS = ("url", "path", "metadataUrl")


@dataclass(frozen=True)
class FileRef:
    module: str
    pointer: str
    source: str
    sha256: str | None  # expected digest, when the reference states one
    target: str | None  # absolute device path, or None for the models directory


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def twins(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Module name -> desired properties, for every module twin in the content (not $edgeAgent/$edgeHub)."""
    content = document.get("modulesContent")
    if not isinstance(content, dict):
        return {}
    out = {}
    for name, twin in content.items():
        desired = twin.get("properties.desired") if isinstance(twin, dict) else None
        if not name.startswith("$") and isinstance(desired, dict):
            out[name] = desired
    return out


def _target(source: str) -> str | None:
    parts = urllib.parse.urlsplit(source)
    if parts.scheme == "file":
        return urllib.request.url2pathname(parts.path)
    if parts.scheme == "" and source.startswith("/"):
        return source
    return None


def file_refs(document: dict[str, Any]) -> list[FileRef]:
    refs: list[FileRef] = []

    def walk(module: str, node: Any, pointer: str) -> None:
        if isinstance(node, dict):
            sha = node.get("sha256") if isinstance(node.get("sha256"), str) else None
            for key in _KEYS:
                value = node.get(key)
                if isinstance(value, str) and value:
                    expected = sha if key != "metadataUrl" else None
                    refs.append(FileRef(module, f"{pointer}/{key}", value, expected, _target(value)))
            for key, child in node.items():
                walk(module, child, f"{pointer}/{_escape(key)}")
        elif isinstance(node, list):
            for i, child in enumerate(node):
                walk(module, child, f"{pointer}/{i}")

    for module, desired in sorted(twins(document).items()):
        walk(module, desired, f"/modulesContent/{_escape(module)}/properties.desired")
    return refs
