"""The JSON Schema files shipped in ``schema/`` and the validators built from them.

``manifests/schema`` at the repository root links here, so the files users read and the
files the package validates with are the same bytes. Loaded once, on first use.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator

__all__ = ["DEPLOYMENT", "MANIFEST", "load", "node_validator", "resolve", "subschema_at", "validator"]

MANIFEST = "manifest.schema.json"
DEPLOYMENT = "deployment.schema.json"


@cache
def load(name: str) -> dict[str, Any]:
    """One schema file as a dict."""
    text = resources.files("outpost.manifest").joinpath("schema", name).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def validator(name: str, definition: str | None = None) -> Draft202012Validator:
    """A validator for a whole schema file, or for one of its ``$defs`` entries."""
    root = load(name)
    schema = root if definition is None else {"$ref": f"#/$defs/{definition}", "$defs": root["$defs"]}
    Draft202012Validator.check_schema(root)
    return Draft202012Validator(schema)


def resolve(node: dict[str, Any], name: str = MANIFEST) -> dict[str, Any]:
    """Follow local ``$ref``s (``#/$defs/x``) until a concrete schema node is reached."""
    root = load(name)
    while "$ref" in node:
        ref = str(node["$ref"])
        if not ref.startswith("#/$defs/"):
            break
        node = root["$defs"][ref.removeprefix("#/$defs/")]
    return node


def subschema_at(path: Sequence[str], start: str, name: str = MANIFEST) -> dict[str, Any] | None:
    """The schema of the value found at ``path`` below the ``$defs`` entry ``start``.

    Used for layered deployments, whose keys (``properties.desired.modules.x``) address a
    value deep inside a manifest. ``None`` when the path leaves what the schema describes.
    """
    node = resolve(load(name)["$defs"][start], name)
    for key in path:
        props = node.get("properties", {})
        if key in props:
            node = resolve(props[key], name)
        elif isinstance(node.get("additionalProperties"), dict):
            node = resolve(node["additionalProperties"], name)
        else:
            return None
    return node


def node_validator(node: dict[str, Any], name: str = MANIFEST) -> Draft202012Validator:
    """A validator for a schema node taken from inside a file (its ``$defs`` stay reachable)."""
    return Draft202012Validator({**node, "$defs": load(name)["$defs"]})
