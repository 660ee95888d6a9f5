"""The JSON Schema and the pydantic models describe the same documents.

Users see the schema's errors; the agent, hub and fleet read the models. If the two drift,
a document passes ``check_manifest`` and then fails to build (or builds although the
schema refused it), so they are compared field by field and document by document.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from manifest_helpers import INVALID, SHIPPED, VALID, agent, hub, ids, load, manifest, module
from pydantic import BaseModel, ValidationError

from outpost.errors import ManifestError
from outpost.manifest import build_manifest, check_manifest, is_layered, models, schemas

# (where in manifest.schema.json: a $defs name then keys below it) -> model with the same fields
COUNTERPARTS: list[tuple[tuple[str, ...], type[BaseModel]]] = [
    (("edgeAgentDesired",), models.EdgeAgentDesired),
    (("runtime",), models.Runtime),
    (("runtime", "properties", "settings"), models.RuntimeSettings),
    (
        ("runtime", "properties", "settings", "properties", "registryCredentials", "additionalProperties"),
        models.RegistryCredential,
    ),
    (("edgeAgentDesired", "properties", "systemModules"), models.SystemModules),
    (("env", "additionalProperties"), models.EnvVar),
    (("settings",), models.ModuleSettings),
    (("edgeAgentModule",), models.AgentModule),
    (("edgeHubModule",), models.HubModule),
    (("module",), models.Module),
    (("edgeHubDesired",), models.EdgeHubDesired),
    (("edgeHubDesired", "properties", "storeAndForwardConfiguration"), models.StoreAndForward),
    (("edgeHubDesired", "properties", "storeAndForwardConfiguration", "properties", "storeLimits"), models.StoreLimits),
    (("route", "oneOf", "1"), models.RouteSpec),
    (("moduleExtension",), models.ModuleExtension),
    (("moduleExtension", "properties", "process"), models.ProcessSpec),
    (("moduleExtension", "properties", "health"), models.HealthProbe),
    (("restartTuning",), models.RestartTuning),
    (("agentExtension",), models.AgentExtension),
    (("agentExtension", "properties", "rollback"), models.RollbackSettings),
    (("agentExtension", "properties", "images"), models.ImageRetention),
    (("hubExtension",), models.HubExtension),
    (("hubExtension", "properties", "upstream"), models.UpstreamSettings),
    (("hubExtension", "properties", "upstream", "properties", "kafka"), models.KafkaUpstream),
    (("hubExtension", "properties", "upstream", "properties", "mqtt"), models.MqttUpstream),
    (("hubExtension", "properties", "upstream", "properties", "azure"), models.AzureUpstream),
    (("hubExtension", "properties", "store"), models.StoreExtension),
]
#: Object $defs with no model of their own: read as plain dicts by build_manifest.
NO_COUNTERPART = {"modulesContent", "moduleTwin"}


def _node(path: tuple[str, ...]) -> dict[str, Any]:
    node: Any = schemas.load(schemas.MANIFEST)["$defs"]
    for key in path:
        node = schemas.resolve(node[int(key)] if isinstance(node, list) else node[key])
    assert isinstance(node, dict)
    return node


def _aliases(model: type[BaseModel]) -> set[str]:
    return {info.alias or name for name, info in model.model_fields.items()}


def _required(model: type[BaseModel]) -> set[str]:
    return {info.alias or name for name, info in model.model_fields.items() if info.is_required()}


def _label(item: tuple[tuple[str, ...], type[BaseModel]]) -> str:
    return f"{'/'.join(item[0])}={item[1].__name__}"


@pytest.mark.parametrize(("path", "model"), COUNTERPARTS, ids=[_label(c) for c in COUNTERPARTS])
def test_schema_object_and_model_have_the_same_fields(path: tuple[str, ...], model: type[BaseModel]) -> None:
    node = _node(path)
    assert set(node.get("properties", {})) == _aliases(model)
    assert set(node.get("required", [])) == _required(model)
    closed = node.get("additionalProperties") is False
    assert closed == (model.model_config.get("extra") == "forbid"), "closed schema objects must forbid extras"


def test_every_object_def_and_every_model_is_paired() -> None:
    defs = schemas.load(schemas.MANIFEST)["$defs"]
    object_defs = {name for name, node in defs.items() if node.get("type") == "object" and "properties" in node}
    paired_defs = {path[0] for path, _ in COUNTERPARTS if len(path) == 1}
    assert object_defs - NO_COUNTERPART == paired_defs
    all_models = {
        obj for name in models.__all__ if isinstance(obj := getattr(models, name), type) and issubclass(obj, BaseModel)
    } | {models.ImageRetention}
    assert all_models - {models.Manifest} == {model for _, model in COUNTERPARTS}


# --- document by document --------------------------------------------------------------------


def _manifests(paths: list[Path]) -> list[tuple[str, Any]]:
    """Every whole manifest in these files: plain ones and base deployments' content."""
    found: list[tuple[str, Any]] = []
    for path in paths:
        try:
            doc = load(path)
        except ManifestError:
            continue
        content = doc.get("content") if isinstance(doc, dict) else None
        if isinstance(content, dict) and isinstance(content.get("modulesContent"), dict):
            doc = {"modulesContent": content["modulesContent"]}
        elif isinstance(doc, dict) and "content" in doc:
            continue
        inner = doc.get("modulesContent") if isinstance(doc, dict) else None
        if isinstance(inner, dict) and is_layered(inner):
            continue
        found.append((ids([path])[0], doc))
    return found


def _schema_ok(doc: Any) -> bool:
    return not any(True for _ in schemas.validator(schemas.MANIFEST).iter_errors(doc))


def _models_ok(doc: Any) -> bool:
    try:
        build_manifest(doc)
    except (ValidationError, KeyError, TypeError):
        return False
    return True


CORPUS_MANIFESTS = _manifests(VALID + SHIPPED + INVALID)


@pytest.mark.parametrize(("name", "doc"), CORPUS_MANIFESTS, ids=[n for n, _ in CORPUS_MANIFESTS])
def test_corpus_schema_validity_equals_model_validity(name: str, doc: Any) -> None:
    report = check_manifest(doc)
    assert _schema_ok(doc) == _models_ok(doc)
    if report.ok:
        assert _models_ok(doc)


def _set(path: Callable[[dict[str, Any]], dict[str, Any]], key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        path(doc)[key] = value

    return mutate


def _sensor(doc: dict[str, Any]) -> dict[str, Any]:
    return module(doc, "sensor")


def _route(**fields: Any) -> dict[str, Any]:
    return {"route": "FROM /messages/* INTO $upstream", **fields}


# One schema-level defect each (or none): the schema and the models must give the same verdict.
SINGLE_CHANGES: dict[str, Callable[[dict[str, Any]], None]] = {
    "route priority 10": _set(lambda d: hub(d)["routes"], "x", _route(priority=10)),
    "route priority 9": _set(lambda d: hub(d)["routes"], "x", _route(priority=9)),
    "route priority 3.0": _set(lambda d: hub(d)["routes"], "x", _route(priority=3.0)),
    "route priority true": _set(lambda d: hub(d)["routes"], "x", _route(priority=True)),
    "route ttl -1": _set(lambda d: hub(d)["routes"], "x", _route(timeToLiveSecs=-1)),
    "route Recency list": _set(lambda d: hub(d)["routes"], "x", _route(Recency=[])),
    "route unknown key": _set(lambda d: hub(d)["routes"], "x", _route(prio=1)),
    "route name empty": _set(lambda d: hub(d)["routes"], "", "FROM /* INTO $upstream"),
    "route name blank": _set(lambda d: hub(d)["routes"], "  ", "FROM /* INTO $upstream"),
    "module name with space": _set(lambda d: agent(d)["modules"], "my sensor", {}),
    "module name 65 chars": lambda d: agent(d)["modules"].update({"m" * 65: _sensor(d)}),
    "module name 64 chars": lambda d: agent(d)["modules"].update({"m" * 64: _sensor(d)}),
    "env name with =": _set(_sensor, "env", {"A=B": {"value": "1"}}),
    "env value null": _set(_sensor, "env", {"A": {"value": None}}),
    "env value float": _set(_sensor, "env", {"A": {"value": 0.5}}),
    "health http and command": _set(_sensor, "outpost", {"health": {"http": "http://x", "command": ["c"]}}),
    "health neither": _set(_sensor, "outpost", {"health": {"retries": 2}}),
    "health ftp url": _set(_sensor, "outpost", {"health": {"http": "ftp://x"}}),
    "health retries 2.0": _set(_sensor, "outpost", {"health": {"http": "http://x", "retries": 2.0}}),
    "health command empty": _set(_sensor, "outpost", {"health": {"command": []}}),
    "process command empty": _set(_sensor, "outpost", {"process": {"command": []}}),
    "createOptions01 number": lambda d: _sensor(d)["settings"].update(createOptions01=5),
    "createOptions number": lambda d: _sensor(d)["settings"].update(createOptions=5),
    "image empty": lambda d: _sensor(d)["settings"].update(image=""),
    "version number": _set(_sensor, "version", 1.0),
    "startupOrder 1.0": _set(_sensor, "startupOrder", 1.0),
    "startupOrder 2**32": _set(_sensor, "startupOrder", 2**32),
    "startupOrder -1": _set(_sensor, "startupOrder", -1),
    "status paused": _set(_sensor, "status", "paused"),
    "edgeHub stopped": _set(lambda d: agent(d)["systemModules"]["edgeHub"], "status", "stopped"),
    "edgeHub on-failure": _set(lambda d: agent(d)["systemModules"]["edgeHub"], "restartPolicy", "on-failure"),
    "systemModules extra": _set(lambda d: agent(d)["systemModules"], "edgeHubX", {}),
    "schemaVersion 2.0": _set(agent, "schemaVersion", "2.0"),
    "edgeHub schemaVersion 1.2": _set(hub, "schemaVersion", "1.2"),
    "edgeAgent schemaVersion 1.2": _set(agent, "schemaVersion", "1.2"),
    "edgeAgent schemaVersion 1.0.0": _set(agent, "schemaVersion", "1.0.0"),
    "edgeAgent schemaVersion 1.1.0.0": _set(agent, "schemaVersion", "1.1.0.0"),
    "edgeHub schemaVersion 1.2.0": _set(hub, "schemaVersion", "1.2.0"),
    "edgeHub schemaVersion 1.3": _set(hub, "schemaVersion", "1.3"),
    "edgeHub schemaVersion 1.4": _set(hub, "schemaVersion", "1.4"),
    "module without version": lambda d: _sensor(d).pop("version"),
    "module without restartPolicy": lambda d: _sensor(d).pop("restartPolicy"),
    "edgeHub module without restartPolicy": lambda d: agent(d)["systemModules"]["edgeHub"].pop("restartPolicy"),
    "edgeHub 1.0 without routes": lambda d: (hub(d).pop("routes"), hub(d).update(schemaVersion="1.0")),
    "edgeHub 1.1 without routes": lambda d: hub(d).pop("routes"),
    "edgeAgent without modules": lambda d: agent(d).pop("modules"),
    "runtime without settings": lambda d: agent(d)["runtime"].pop("settings"),
    "registry address empty": lambda d: agent(d)["runtime"]["settings"].update(
        registryCredentials={"r": {"username": "u", "password": "p", "address": ""}}
    ),
    "ttl 7200.0": _set(lambda d: hub(d)["storeAndForwardConfiguration"], "timeToLiveSecs", 7200.0),
    "ttl 1.5": _set(lambda d: hub(d)["storeAndForwardConfiguration"], "timeToLiveSecs", 1.5),
    "storeLimits 0": _set(lambda d: hub(d)["storeAndForwardConfiguration"], "storeLimits", {"maxSizeBytes": 0}),
    "mqttBroker list": _set(hub, "mqttBroker", []),
    "kafka topicByOutput empty": _set(
        hub,
        "outpost",
        {"upstream": {"sink": "kafka", "kafka": {"bootstrapServers": "k:9092", "topicByOutput": {"a": ""}}}},
    ),
    "mqtt port 0": _set(hub, "outpost", {"upstream": {"sink": "mqtt", "mqtt": {"host": "h", "port": 0}}}),
    "store fullPolicy bad": _set(hub, "outpost", {"store": {"fullPolicy": "drop-newest"}}),
    "rollback window 0": _set(agent, "outpost", {"rollback": {"healthWindowSecs": 0}}),
    "images keep 0": _set(agent, "outpost", {"images": {"keepPerModule": 0}}),
    "twin desired list": _set(lambda d: d["modulesContent"], "filter", {"properties.desired": []}),
    "twin extra key": _set(lambda d: d["modulesContent"], "filter", {"properties.desired": {}, "tags": {}}),
    "unknown $ entry": _set(lambda d: d["modulesContent"], "$custom", {"properties.desired": {}}),
    "unknown module field": _set(_sensor, "restartPolicie", "always"),
}


@pytest.mark.parametrize("change", list(SINGLE_CHANGES), ids=list(SINGLE_CHANGES))
def test_single_change_gets_the_same_verdict_from_schema_and_models(change: str) -> None:
    doc = manifest()
    SINGLE_CHANGES[change](doc)
    assert _schema_ok(doc) == _models_ok(doc)
    assert check_manifest(doc).ok == _schema_ok(doc)
