"""Deployment manifests: Azure IoT Edge's format accepted unchanged, plus Outpost's extensions.

``check_document`` / ``check_manifest`` report every problem with a JSON pointer;
``load_manifest`` returns the typed :class:`Manifest`; ``effective_manifest`` applies
Azure's base-plus-layers priority rules for one device.
"""

from outpost.manifest.deployment import (
    Deployment,
    Effective,
    check_document,
    compose,
    effective_manifest,
    is_layered,
    parse_deployment,
    select_stack,
    stack_of,
)
from outpost.manifest.models import Manifest, Module, ModuleStatus, RestartPolicy, RouteSpec
from outpost.manifest.validation import Report, build_manifest, check_manifest, load_manifest, parse_json

__all__ = [
    "Deployment",
    "Effective",
    "Manifest",
    "Module",
    "ModuleStatus",
    "Report",
    "RestartPolicy",
    "RouteSpec",
    "build_manifest",
    "check_document",
    "check_manifest",
    "compose",
    "effective_manifest",
    "is_layered",
    "load_manifest",
    "parse_deployment",
    "parse_json",
    "select_stack",
    "stack_of",
]
