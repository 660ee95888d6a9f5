"""Check a deployment manifest completely and build the typed :class:`Manifest`.

Every problem is reported, not only the first: schema errors, then the rules a schema
cannot say (createOptions chunks and JSON, route grammar). Warnings flag what Azure would
silently ignore (a misspelt field, a createOptions key Docker does not know, a route into a
module the manifest does not declare). Called by the CLI, the agent (before touching
anything running) and the fleet (on upload).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError as PydanticError

from outpost.errors import ManifestError, Problem, QueryError
from outpost.lang import ModuleInputSink, parse_route
from outpost.manifest import create_options, problems, schemas
from outpost.manifest.models import EdgeAgentDesired, EdgeHubDesired, Manifest
from outpost.manifest.pointers import join

__all__ = ["Report", "build_manifest", "check_manifest", "load_manifest", "parse_json"]

AGENT = ("modulesContent", "$edgeAgent", "properties.desired")
HUB = ("modulesContent", "$edgeHub", "properties.desired")


@dataclass(frozen=True)
class Report:
    """What a check found: ``problems`` make a document invalid, ``warnings`` do not."""

    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_for_problems(self) -> None:
        if self.problems:
            raise ManifestError(self.problems)


MAX_DEPTH = 100  # a manifest is ~10 levels deep; far deeper is a broken or hostile file


def _depth(doc: Any) -> int:
    """Nesting depth of parsed JSON, without recursion (a deep document must not exhaust the stack)."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                return deepest
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def parse_json(text: str | bytes) -> Any:
    """Parse JSON, turning syntax errors into a ManifestError with line and column."""
    try:
        doc = json.loads(text)
    except RecursionError as exc:
        raise ManifestError([Problem("", "JSON nested too deeply to be a manifest")]) from exc
    except UnicodeDecodeError as exc:
        raise ManifestError([Problem("", f"not UTF-8 text: {exc.reason} at byte {exc.start}")]) from exc
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise ManifestError([Problem("", f"invalid JSON at {where}: {exc.msg}")]) from exc
    if _depth(doc) > MAX_DEPTH:
        raise ManifestError([Problem("", f"JSON nested more than {MAX_DEPTH} levels deep: too deep to be a manifest")])
    return doc


def _get(doc: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


def _module_entries(agent: Any) -> list[tuple[tuple[str, ...], str, dict[str, Any], str]]:
    """(path below agent desired, module name, module object, $defs name) for every module."""
    entries: list[tuple[tuple[str, ...], str, dict[str, Any], str]] = []
    if not isinstance(agent, dict):
        return entries
    system = agent.get("systemModules")
    if isinstance(system, dict):
        for name, definition in (("edgeAgent", "edgeAgentModule"), ("edgeHub", "edgeHubModule")):
            if isinstance(system.get(name), dict):
                entries.append((("systemModules", name), name, system[name], definition))
    modules = agent.get("modules")
    if isinstance(modules, dict):
        entries.extend(
            (("modules", name), name, module, "module") for name, module in modules.items() if isinstance(module, dict)
        )
    return entries


def _check_module(base: str, module: dict[str, Any], definition: str, report: Report) -> None:
    known = set(schemas.resolve(schemas.load(schemas.MANIFEST)["$defs"][definition]).get("properties", {}))
    for key in module:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            report.warnings.append(Problem(join(base, key), f"unknown field '{key}' is ignored{hint}"))
    settings = module.get("settings")
    if not isinstance(settings, dict):
        return
    where = join(base, "settings")
    joined, found = create_options.join_chunks(settings, where)
    report.problems.extend(found)
    if not found and (joined is None or isinstance(joined, str | dict)):
        _, bad, odd = create_options.parse_create_options(joined, join(where, "createOptions"))
        report.problems.extend(bad)
        report.warnings.extend(odd)


def _check_routes(base: str, hub: Any, declared: set[str], report: Report) -> None:
    routes = hub.get("routes") if isinstance(hub, dict) else None
    if not isinstance(routes, dict):
        return
    version = hub.get("schemaVersion") if isinstance(hub, dict) else None
    blank_ok = isinstance(version, str) and _minor(version) == 0
    for name, spec in routes.items():
        _check_route(join(base, "routes", name), spec, declared, report, blank_ok=blank_ok)


def _minor(version: str) -> int | None:
    """The minor number of a ``1.x[.y[.z]]`` schema version, None if there is none."""
    parts = version.split(".")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def _check_route(where: str, spec: Any, declared: set[str], report: Report, *, blank_ok: bool = False) -> None:
    """Parse one route (string or object form) found at ``where``; also used for layers.

    ``blank_ok``: edgeHub skips an empty (or blank) route string under schema 1.0 and
    refuses it from 1.1 on, where every route becomes a RouteSpec.
    """
    if spec is None:
        if blank_ok:
            report.warnings.append(Problem(where, "null route is skipped (as edgeHub does under schemaVersion 1.0)"))
        else:
            report.problems.append(
                Problem(where, "expected a route string or object, got null (edgeHub skips null only under 1.0)")
            )
        return
    text = spec
    if isinstance(spec, dict):
        text, where = spec.get("route"), join(where, "route")
    if not isinstance(text, str):
        return  # the schema already reported it
    if not text.strip():
        if blank_ok and not isinstance(spec, dict):
            report.warnings.append(Problem(where, "empty route is skipped (as edgeHub does under schemaVersion 1.0)"))
        else:
            report.problems.append(
                Problem(where, "route must not be empty (edgeHub skips empty routes only under schemaVersion 1.0)")
            )
        return
    try:
        route = parse_route(text)
    except QueryError as exc:
        report.problems.append(Problem(where, f"line {exc.line}, column {exc.column}: {exc.reason}"))
        return
    for note in route.notes:
        report.warnings.append(Problem(where, str(note)))
    if isinstance(route.sink, ModuleInputSink) and declared and route.sink.module not in declared:
        report.warnings.append(
            Problem(where, f"route delivers to module '{route.sink.module}', which this manifest does not declare")
        )


def _check_versions(agent: Any, hub: Any, report: Report) -> None:
    if isinstance(agent, dict) and isinstance(agent.get("schemaVersion"), str) and _minor(agent["schemaVersion"]) == 0:
        for path, _, module, _ in _module_entries(agent):
            if "startupOrder" in module:
                report.warnings.append(
                    Problem(
                        join(join("", *AGENT), *path, "startupOrder"), "startupOrder needs $edgeAgent schemaVersion 1.1"
                    )
                )
    hub_version = hub.get("schemaVersion") if isinstance(hub, dict) else None
    if isinstance(hub_version, str) and _minor(hub_version) == 0 and isinstance(hub.get("routes"), dict):
        for name, spec in hub["routes"].items():
            if isinstance(spec, dict) and "priority" in spec:
                report.warnings.append(
                    Problem(
                        join(join("", *HUB), "routes", name, "priority"),
                        "route priority needs $edgeHub schemaVersion 1.1",
                    )
                )


def check_manifest(doc: Any, *, base: str = "") -> Report:
    """Check a whole manifest (``{"modulesContent": ...}``); pointers are prefixed with ``base``."""
    report = Report()
    validator = schemas.validator(schemas.MANIFEST)
    report.problems.extend(problems.from_schema_errors(validator.iter_errors(doc), base, schemas.MANIFEST))
    agent, hub = _get(doc, AGENT), _get(doc, HUB)
    entries = _module_entries(agent)
    for path, _, module, definition in entries:
        _check_module(join(base, *AGENT, *path), module, definition, report)
    declared = {name for _, name, _, _ in entries}
    _check_routes(join(base, *HUB), hub, declared, report)
    _check_versions(agent, hub, report)
    content = _get(doc, ("modulesContent",))
    if isinstance(content, dict) and declared:
        hub_ext = hub.get("outpost") if isinstance(hub, dict) else None
        leaves = hub_ext.get("leafDevices") if isinstance(hub_ext, dict) else None
        twinned = declared | (set(leaves) if isinstance(leaves, list) else set())  # leaf twins: docs/hub.md
        for key in content:
            if not key.startswith("$") and key not in twinned:
                report.warnings.append(
                    Problem(
                        join(base, "modulesContent", key),
                        f"desired properties for module '{key}', which is not declared",
                    )
                )
    if report.ok:
        try:
            build_manifest(doc)
        except PydanticError as exc:  # the agreement test keeps this unreachable; report, never crash
            where = {"EdgeAgentDesired": AGENT, "EdgeHubDesired": HUB}.get(exc.title, ())
            for err in exc.errors():
                report.problems.append(Problem(join(base, *where, *(str(p) for p in err["loc"])), err["msg"]))
    report.problems.sort(key=lambda p: p.pointer)
    return report


def build_manifest(doc: dict[str, Any]) -> Manifest:
    """Typed view of an already checked manifest (strict JSON-mode pydantic validation)."""
    content = doc["modulesContent"]
    agent = EdgeAgentDesired.model_validate_json(json.dumps(content["$edgeAgent"]["properties.desired"]), strict=True)
    hub = EdgeHubDesired.model_validate_json(json.dumps(content["$edgeHub"]["properties.desired"]), strict=True)
    twins = {key: value["properties.desired"] for key, value in content.items() if not key.startswith("$")}
    return Manifest(edge_agent=agent, edge_hub=hub, module_twins=twins, document=doc)


def load_manifest(source: str | bytes | dict[str, Any]) -> Manifest:
    """Parse (if text), check and build a manifest; raise ManifestError with every problem."""
    doc = source if isinstance(source, dict) else parse_json(source)
    check_manifest(doc).raise_for_problems()
    return build_manifest(doc)
