"""Deployments that target device groups, and the effective manifest one device gets.

Azure's rules (how-to-deploy-cli-at-scale, module-deployment-monitoring):
- Of the base (standard) deployments whose target condition matches a device, the one with
  the highest priority wins; on a tie, the most recently created.
- Every layered deployment that matches is applied on top of that base. Layers address
  values by dot paths (``"properties.desired.modules.x"``); where the base and layers write
  the same place, the higher priority wins (ties: the newer), so a layer must out-prioritise
  the base to change what the base sets.

Called by the CLI (``outpost manifest show``) and by the fleet service.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from outpost.errors import ManifestError, Problem, QueryError
from outpost.lang import TargetCondition, compile_target
from outpost.manifest import problems, schemas
from outpost.manifest.models import Manifest
from outpost.manifest.pointers import join
from outpost.manifest.validation import Report, _check_module, _check_route, build_manifest, check_manifest

__all__ = [
    "Deployment",
    "Effective",
    "check_document",
    "compose",
    "effective_manifest",
    "is_layered",
    "parse_deployment",
    "select_stack",
    "stack_of",
]

DESIRED = "properties.desired"
ALL_DEVICES = "*"
_SYSTEM_DEFS = {"$edgeAgent": "edgeAgentDesired", "$edgeHub": "edgeHubDesired"}
_COLLECTIONS = {"modules", "systemModules", "routes"}


@dataclass(frozen=True)
class Deployment:
    """One deployment: a whole manifest (base) or a layer, with whom it targets."""

    id: str
    modules_content: dict[str, Any]
    target: TargetCondition
    priority: int = 0
    layered: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, str] = field(default_factory=dict)
    created: str = ""
    order: int = 0

    def targets(self, twin: Mapping[str, Any]) -> bool:
        return self.target(twin)


@dataclass(frozen=True)
class Effective:
    """The manifest one device gets, and which deployment set each module, route and twin."""

    manifest: Manifest
    document: dict[str, Any]
    base: str
    layers: list[str]
    sources: dict[str, str]


def is_layered(modules_content: Mapping[str, Any]) -> bool:
    """A layer addresses values by dot path (``properties.desired.x``) instead of whole documents."""
    return any(
        isinstance(entry, Mapping) and any(key.startswith(DESIRED + ".") for key in entry)
        for entry in modules_content.values()
    )


def _writes(content: Mapping[str, Any], layered: bool) -> list[tuple[str, tuple[str, ...], Any]]:
    """Flatten content into ``(module, path below properties.desired, value)`` writes."""
    writes: list[tuple[str, tuple[str, ...], Any]] = []
    for module, entry in content.items():
        if not isinstance(entry, Mapping):
            continue
        for key, value in entry.items():
            if key == DESIRED and not layered and module in _SYSTEM_DEFS and isinstance(value, Mapping):
                for top, inner in value.items():
                    if top in _COLLECTIONS and isinstance(inner, Mapping):
                        writes.extend((module, (top, name), item) for name, item in inner.items())
                        writes.append((module, (top,), _EMPTY))
                    else:
                        writes.append((module, (top,), inner))
            elif key == DESIRED:
                writes.append((module, (), value))
            elif key.startswith(DESIRED + "."):
                writes.append((module, tuple(key[len(DESIRED) + 1 :].split(".")), value))
    return writes


class _Empty:
    """Marks a collection the base declares (so it exists even when empty) without replacing it."""


_EMPTY = _Empty()


def _apply(doc: dict[str, Any], module: str, path: tuple[str, ...], value: Any) -> None:
    entry = doc.setdefault(module, {})
    if not path:
        entry[DESIRED] = copy.deepcopy(value)
        return
    node = entry.setdefault(DESIRED, {})
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    if value is _EMPTY:
        if not isinstance(node.get(path[-1]), dict):
            node[path[-1]] = {}
    else:
        node[path[-1]] = copy.deepcopy(value)


def _check_layer(content: Mapping[str, Any], base: str) -> Report:
    """Check each dot-path value of a layer against the part of the schema it lands in.

    Routes are parsed and createOptions joined as for a whole manifest, so a layer with a
    broken route fails here rather than on every device it targets.
    """
    report = Report()
    found = report.problems
    entry_validator = schemas.validator(schemas.DEPLOYMENT, "layerEntry")
    for module, entry in content.items():
        where = join(base, module)
        found.extend(problems.from_schema_errors(entry_validator.iter_errors(entry), where, schemas.DEPLOYMENT))
        if module not in _SYSTEM_DEFS or not isinstance(entry, Mapping):
            continue
        for key, value in entry.items():
            path = key.split(".")[2:] if key.startswith(DESIRED + ".") else []
            node = schemas.subschema_at(path, _SYSTEM_DEFS[module]) if path else None
            if node is not None:
                validator = schemas.node_validator(node)
                found.extend(
                    problems.from_schema_errors(validator.iter_errors(value), join(where, key), schemas.MANIFEST)
                )
            _check_layer_value(module, path, value, join(where, key), report)
    return report


def _check_layer_value(module: str, path: list[str], value: Any, where: str, report: Report) -> None:
    """The rules beyond the schema for one layer value: module createOptions and route syntax."""
    if module == "$edgeHub" and path == ["routes"] and isinstance(value, Mapping):
        for name, spec in value.items():
            _check_route(join(where, name), spec, set(), report)
    elif module == "$edgeHub" and len(path) == 2 and path[0] == "routes":
        _check_route(where, value, set(), report)
    elif module == "$edgeAgent" and len(path) == 2 and isinstance(value, dict):
        system = "edgeAgentModule" if path[1] == "edgeAgent" else "edgeHubModule"
        definitions = {"modules": "module", "systemModules": system}
        if path[0] in definitions:
            _check_module(where, value, definitions[path[0]], report)


def check_document(doc: Any) -> tuple[str, Report]:
    """Check any document a user may hand us: a manifest, a deployment, or a layered one.

    Returns the kind (``manifest``, ``deployment``, ``layered``) and the report.
    """
    if isinstance(doc, dict) and "content" in doc and "modulesContent" not in doc:
        report = Report()
        validator = schemas.validator(schemas.DEPLOYMENT)
        report.problems.extend(problems.from_schema_errors(validator.iter_errors(doc), "", schemas.DEPLOYMENT))
        content = doc.get("content", {}).get("modulesContent") if isinstance(doc.get("content"), dict) else None
        _check_target(doc.get("targetCondition"), report)
        if isinstance(content, dict) and is_layered(content):
            layer = _check_layer(content, "/content/modulesContent")
            report.problems.extend(layer.problems)
            report.warnings.extend(layer.warnings)
            return "layered", report
        if isinstance(content, dict):
            inner = check_manifest({"modulesContent": content}, base="/content")
            report.problems.extend(inner.problems)
            report.warnings.extend(inner.warnings)
        return "deployment", report
    if isinstance(doc, dict) and isinstance(doc.get("modulesContent"), dict) and is_layered(doc["modulesContent"]):
        return "layered", _check_layer(doc["modulesContent"], "/modulesContent")
    return "manifest", check_manifest(doc)


def _check_target(text: Any, report: Report) -> None:
    if not isinstance(text, str):
        return
    try:
        compile_target(text)
    except QueryError as exc:
        report.problems.append(Problem("/targetCondition", f"line {exc.line}, column {exc.column}: {exc.reason}"))


def parse_deployment(doc: Any, *, default_id: str, order: int = 0) -> Deployment:
    """Check a document and turn it into a Deployment; a bare manifest targets every device."""
    kind, report = check_document(doc)
    report.raise_for_problems()
    if "content" in doc and "modulesContent" not in doc:
        content = doc["content"]["modulesContent"]
        target_text = doc.get("targetCondition") or ALL_DEVICES
        return Deployment(
            id=doc.get("id", default_id),
            modules_content=content,
            target=compile_target(target_text),
            priority=doc.get("priority", 0),
            layered=kind == "layered",
            labels=doc.get("labels", {}),
            metrics=doc.get("metrics", {}).get("queries", {}),
            created=doc.get("createdTimeUtc", ""),
            order=order,
        )
    return Deployment(
        id=default_id,
        modules_content=doc["modulesContent"],
        target=compile_target(ALL_DEVICES),
        layered=kind == "layered",
        order=order,
    )


def _source_key(module: str, path: tuple[str, ...]) -> str:
    if module in _SYSTEM_DEFS and path and path[0] in _COLLECTIONS and len(path) > 1:
        return join("", module, path[0], path[1])
    return join("", module, *path[:1])


def select_stack(deployments: Sequence[Deployment], twin: Mapping[str, Any]) -> list[Deployment]:
    """The deployments that apply to a device, in the order they are laid down (Azure's rules).

    The highest-priority matching base deployment (ties: the newest), then every matching layered
    deployment, sorted by priority so the higher one writes last. Empty when no base matches.
    The fleet service calls this per device and composes each distinct stack once.
    """
    return stack_of([d for d in deployments if d.targets(twin)])


def stack_of(matching: Sequence[Deployment]) -> list[Deployment]:
    """:func:`select_stack`'s choice among the deployments known to target the device already (the
    fleet's counting evaluates each target condition once for both the stack and the targeted list)."""
    bases = [d for d in matching if not d.layered]
    if not bases:
        return []
    base = max(bases, key=_rank)
    return sorted([base, *(d for d in matching if d.layered)], key=_rank)


def _rank(deployment: Deployment) -> tuple[int, str, int]:
    return (deployment.priority, deployment.created, deployment.order)


def compose(stack: Sequence[Deployment]) -> Effective:
    """Lay a stack from :func:`select_stack` down into one manifest; raise ManifestError if it is invalid."""
    base = next(d for d in stack if not d.layered)
    document: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for deployment in stack:
        for module, path, value in _writes(deployment.modules_content, deployment.layered):
            _apply(document, module, path, value)
            if value is not _EMPTY:
                sources[_source_key(module, path)] = deployment.id
    result = {"modulesContent": document}
    report = check_manifest(result)
    if not report.ok:
        names = ", ".join(d.id for d in stack)
        raise ManifestError(
            [Problem(p.pointer, f"{p.message} (effective manifest of {names})") for p in report.problems]
        )
    return Effective(
        manifest=build_manifest(result),
        document=result,
        base=base.id,
        layers=[d.id for d in stack if d.layered],
        sources=dict(sorted(sources.items())),
    )


def effective_manifest(deployments: Sequence[Deployment], twin: Mapping[str, Any]) -> Effective:
    """The manifest a device with this twin gets from these deployments (Azure's priority rules)."""
    stack = select_stack(deployments, twin)
    if not stack:
        matching = sum(1 for d in deployments if d.targets(twin))
        raise ManifestError(
            [Problem("", f"no base deployment targets this device (of {len(deployments)} deployment(s) given, "
                     f"{matching} match); add a deployment whose targetCondition matches its tags")]
        )  # fmt: skip
    return compose(stack)
