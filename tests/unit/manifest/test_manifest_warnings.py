"""Warnings flag what Azure would silently ignore; they never make a document invalid."""

from __future__ import annotations

from typing import Any

from manifest_helpers import AGENT, HUB, agent, hub, manifest, module

from outpost.manifest import check_document, check_manifest


def _warnings(doc: dict[str, Any]) -> dict[str, str]:
    report = check_manifest(doc)
    assert report.ok, report.problems
    return {w.pointer: w.message for w in report.warnings}


def test_the_base_manifest_has_no_warnings() -> None:
    assert _warnings(manifest()) == {}


def test_misspelt_module_field_suggests_the_right_one() -> None:
    doc = manifest()
    module(doc, "sensor")["restartPolicie"] = "never"
    warnings = _warnings(doc)
    message = warnings[f"{AGENT}/modules/sensor/restartPolicie"]
    assert "did you mean 'restartPolicy'" in message
    assert "is ignored" in message


def test_misspelling_a_required_field_is_a_warning_plus_the_missing_field() -> None:
    doc = manifest()
    sensor = module(doc, "sensor")
    sensor["statsu"] = sensor.pop("status")
    report = check_manifest(doc)
    assert [p.pointer for p in report.problems] == [f"{AGENT}/modules/sensor/status"]
    assert any("did you mean 'status'" in w.message for w in report.warnings)


def test_misspelt_system_module_field_warns() -> None:
    doc = manifest()
    agent(doc)["systemModules"]["edgeHub"]["startupOrdr"] = 0
    assert "did you mean 'startupOrder'" in _warnings(doc)[f"{AGENT}/systemModules/edgeHub/startupOrdr"]


def test_unknown_docker_create_option_warns() -> None:
    doc = manifest()
    module(doc, "sensor")["settings"]["createOptions"] = '{"HostConfig": {}, "PortBinding": {"80/tcp": []}}'
    message = _warnings(doc)[f"{AGENT}/modules/sensor/settings/createOptions/PortBinding"]
    assert message.startswith("Docker ignores create option 'PortBinding'")


def test_route_into_an_undeclared_module_warns() -> None:
    doc = manifest()
    hub(doc)["routes"]["toGhost"] = 'FROM /messages/* INTO BrokeredEndpoint("/modules/ghost/inputs/in")'
    hub(doc)["routes"]["toGhostObject"] = {
        "route": 'FROM /messages/* INTO BrokeredEndpoint("/modules/ghost/inputs/in")',
        "priority": 0,
    }
    warnings = _warnings(doc)
    assert "module 'ghost', which this manifest does not declare" in warnings[f"{HUB}/routes/toGhost"]
    assert f"{HUB}/routes/toGhostObject/route" in warnings


def test_routes_into_system_and_declared_modules_do_not_warn() -> None:
    doc = manifest()
    hub(doc)["routes"]["toHub"] = 'FROM /messages/* INTO BrokeredEndpoint("/modules/edgeHub/inputs/in")'
    assert _warnings(doc) == {}


def test_twin_for_an_undeclared_module_warns() -> None:
    doc = manifest()
    doc["modulesContent"]["ghost"] = {"properties.desired": {"x": 1}}
    assert "which is not declared" in _warnings(doc)["/modulesContent/ghost"]


def test_schema_1_0_features_warn() -> None:
    doc = manifest()
    agent(doc)["schemaVersion"] = "1.0"
    hub(doc)["schemaVersion"] = "1.0"
    module(doc, "sensor")["startupOrder"] = 1
    warnings = _warnings(doc)
    assert "needs $edgeAgent schemaVersion 1.1" in warnings[f"{AGENT}/modules/sensor/startupOrder"]
    assert "needs $edgeHub schemaVersion 1.1" in warnings[f"{HUB}/routes/filterUp/priority"]


def test_warnings_reach_deployments_and_layers() -> None:
    doc = manifest()
    module(doc, "sensor")["restartPolicie"] = "never"
    kind, report = check_document({"id": "d", "content": {"modulesContent": doc["modulesContent"]}})
    assert kind == "deployment"
    assert report.ok
    assert [w.pointer for w in report.warnings] == [f"/content{AGENT}/modules/sensor/restartPolicie"]
    layer_module = dict(module(doc, "sensor"))
    kind, report = check_document(
        {"content": {"modulesContent": {"$edgeAgent": {"properties.desired.modules.s2": layer_module}}}}
    )
    assert kind == "layered"
    assert report.ok
    assert [w.pointer for w in report.warnings] == [
        "/content/modulesContent/$edgeAgent/properties.desired.modules.s2/restartPolicie"
    ]


def test_route_extensions_and_edgehub_quirks_are_warnings_naming_the_place() -> None:
    doc = manifest()
    hub(doc)["routes"] = {
        "numbers": "FROM /messages/* WHERE severity > 4 INTO $upstream",
        "lists": {"route": "FROM /messages/* WHERE level IN ['a', 'b'] INTO $upstream", "priority": 1},
        "prefix": "FROM /messages/modules/nobody/outputs/x/y INTO $upstream",
        "address": 'FROM /messages/* INTO BrokeredEndpoint("/a/sensor/c/d")',
        "clean": "FROM /messages/modules/sensor WHERE AS_NUMBER(severity) > 4 INTO $upstream",
    }
    warnings = _warnings(doc)
    assert "Outpost extension 'number-property'" in warnings[f"{HUB}/routes/numbers"]
    assert "Outpost extension 'in-list'" in warnings[f"{HUB}/routes/lists/route"]
    assert "selects no message" in warnings[f"{HUB}/routes/prefix"]
    assert "read as module 'sensor', input 'd'" in warnings[f"{HUB}/routes/address"]
    assert f"{HUB}/routes/clean" not in warnings


def test_a_condition_edgehub_refuses_is_a_problem() -> None:
    doc = manifest()
    hub(doc)["routes"] = {"bad": "FROM /messages/* WHERE NOT level = 'x' INTO $upstream"}
    report = check_manifest(doc)
    assert [p.pointer for p in report.problems] == [f"{HUB}/routes/bad"]
    assert "NOT needs a Boolean" in report.problems[0].message
