"""effective_manifest: Azure's base-plus-layers rules for the manifest one device gets."""

from __future__ import annotations

import json
from typing import Any

import pytest
from manifest_helpers import REPO, load, manifest

from outpost.errors import ManifestError
from outpost.manifest import Deployment, effective_manifest, parse_deployment

SITE_A = {"deviceId": "gw-7", "tags": {"site": "plant-a"}, "properties": {"reported": {}}}


def _base(
    dep_id: str, priority: int, tag: str, *, created: str = "", target: str = "tags.site='plant-a'"
) -> dict[str, Any]:
    doc = manifest()
    doc["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["sensor"]["settings"]["image"] = (
        f"contosoacr.azurecr.io/sensor:{tag}"
    )
    return {
        "id": dep_id,
        "priority": priority,
        "targetCondition": target,
        "createdTimeUtc": created,
        "content": {"modulesContent": doc["modulesContent"]},
    }


def _module(image: str) -> dict[str, Any]:
    return {
        "version": "1.0",
        "type": "docker",
        "status": "running",
        "restartPolicy": "always",
        "settings": {"image": image, "createOptions": "{}"},
    }


def _layer(
    dep_id: str, priority: int, content: dict[str, Any], *, target: str = "tags.site='plant-a'"
) -> dict[str, Any]:
    return {"id": dep_id, "priority": priority, "targetCondition": target, "content": {"modulesContent": content}}


def _parse(*docs: dict[str, Any]) -> list[Deployment]:
    return [parse_deployment(doc, default_id=f"doc{i}", order=i) for i, doc in enumerate(docs)]


def _image(effective: Any, name: str) -> str:
    image: str = effective.manifest.edge_agent.modules[name].settings.image
    return image


def test_base_with_the_highest_priority_wins() -> None:
    deployments = _parse(_base("low", 5, "5"), _base("high", 10, "10"), _base("mid", 7, "7"))
    effective = effective_manifest(deployments, SITE_A)
    assert effective.base == "high"
    assert effective.layers == []
    assert _image(effective, "sensor") == "contosoacr.azurecr.io/sensor:10"
    assert effective.sources["/$edgeAgent/modules/sensor"] == "high"


def test_priority_tie_goes_to_the_newer_deployment() -> None:
    newer = _base("newer", 10, "new", created="2024-06-01T08:00:00Z")
    older = _base("older", 10, "old", created="2024-01-15T08:00:00Z")
    for order in ([newer, older], [older, newer]):
        effective = effective_manifest(_parse(*order), SITE_A)
        assert effective.base == "newer"
        assert _image(effective, "sensor") == "contosoacr.azurecr.io/sensor:new"


def test_priority_and_time_tie_goes_to_the_later_given() -> None:
    effective = effective_manifest(_parse(_base("first", 10, "1"), _base("second", 10, "2")), SITE_A)
    assert effective.base == "second"


def test_a_base_whose_target_does_not_match_is_ignored() -> None:
    deployments = _parse(_base("a", 10, "a"), _base("b", 50, "b", target="tags.site='plant-b'"))
    assert effective_manifest(deployments, SITE_A).base == "a"


def test_higher_priority_layer_overrides_a_base_module() -> None:
    layer = _layer(
        "hotfix",
        20,
        {"$edgeAgent": {"properties.desired.modules.sensor": _module("contosoacr.azurecr.io/sensor:hotfix")}},
    )
    effective = effective_manifest(_parse(_base("base", 10, "1.0"), layer), SITE_A)
    assert effective.base == "base"
    assert effective.layers == ["hotfix"]
    assert _image(effective, "sensor") == "contosoacr.azurecr.io/sensor:hotfix"
    assert effective.sources["/$edgeAgent/modules/sensor"] == "hotfix"
    assert effective.sources["/$edgeAgent/modules/filter"] == "base"


def test_lower_priority_layer_only_adds() -> None:
    layer = _layer(
        "addon",
        5,
        {
            "$edgeAgent": {
                "properties.desired.modules.sensor": _module("contosoacr.azurecr.io/sensor:addon"),
                "properties.desired.modules.exporter": _module("contosoacr.azurecr.io/exporter:1.0"),
            }
        },
    )
    effective = effective_manifest(_parse(_base("base", 10, "1.0"), layer), SITE_A)
    assert _image(effective, "sensor") == "contosoacr.azurecr.io/sensor:1.0"
    assert _image(effective, "exporter") == "contosoacr.azurecr.io/exporter:1.0"
    assert effective.sources["/$edgeAgent/modules/sensor"] == "base"
    assert effective.sources["/$edgeAgent/modules/exporter"] == "addon"


def test_layer_whose_target_does_not_match_is_left_out() -> None:
    layer = _layer(
        "plant-b-only",
        20,
        {"$edgeAgent": {"properties.desired.modules.exporter": _module("contosoacr.azurecr.io/exporter:1.0")}},
        target="tags.site='plant-b'",
    )
    effective = effective_manifest(_parse(_base("base", 10, "1.0"), layer), SITE_A)
    assert effective.layers == []
    assert "exporter" not in effective.manifest.edge_agent.modules


@pytest.mark.parametrize("with_layer", [False, True], ids=["nothing", "only-a-layer"])
def test_no_base_deployment_is_a_manifest_error(with_layer: bool) -> None:
    docs = [_base("elsewhere", 10, "1.0", target="tags.site='plant-b'")]
    if with_layer:
        docs.append(_layer("layer", 20, {"$edgeAgent": {}, "filter": {"properties.desired.unit": "F"}}))
    with pytest.raises(ManifestError) as caught:
        effective_manifest(_parse(*docs), SITE_A)
    [problem] = caught.value.problems
    assert problem.pointer == ""
    assert "no base deployment targets this device" in problem.message


def test_layer_adds_a_route_and_keeps_the_base_routes() -> None:
    layer = _layer(
        "routes",
        20,
        {
            "$edgeAgent": {},
            "$edgeHub": {
                "properties.desired.routes.sensorUp": {
                    "route": "FROM /messages/modules/sensor/outputs/* INTO $upstream",
                    "priority": 3,
                }
            },
        },
    )
    effective = effective_manifest(_parse(_base("base", 10, "1.0"), layer), SITE_A)
    specs = effective.manifest.edge_hub.route_specs()
    assert set(specs) == {"sensorToFilter", "filterUp", "sensorUp"}
    assert specs["sensorUp"].priority == 3
    assert effective.sources["/$edgeHub/routes/sensorUp"] == "routes"
    assert effective.sources["/$edgeHub/routes/filterUp"] == "base"


def test_module_twin_dot_paths_merge_into_the_base_twin() -> None:
    layer = _layer(
        "tuning", 20, {"$edgeAgent": {}, "filter": {"properties.desired.unit": "F", "properties.desired.window": 5}}
    )
    effective = effective_manifest(_parse(_base("base", 10, "1.0"), layer), SITE_A)
    assert effective.manifest.module_twins["filter"] == {"threshold": 25, "unit": "F", "window": 5}
    assert effective.sources["/filter/unit"] == "tuning"
    assert effective.sources["/filter/window"] == "tuning"
    assert effective.sources["/filter"] == "base"


def test_sources_name_the_deployment_behind_every_module_route_and_twin() -> None:
    layer = _layer(
        "layer",
        20,
        {
            "$edgeAgent": {"properties.desired.modules.exporter": _module("contosoacr.azurecr.io/exporter:1.0")},
            "$edgeHub": {"properties.desired.routes.exportUp": "FROM /messages/modules/exporter/* INTO $upstream"},
            "exporter": {"properties.desired": {"interval": 10}},
        },
    )
    effective = effective_manifest(_parse(_base("base", 10, "1.0"), layer), SITE_A)
    assert effective.sources == {
        "/$edgeAgent/modules/exporter": "layer",
        "/$edgeAgent/modules/filter": "base",
        "/$edgeAgent/modules/sensor": "base",
        "/$edgeAgent/runtime": "base",
        "/$edgeAgent/schemaVersion": "base",
        "/$edgeAgent/systemModules/edgeAgent": "base",
        "/$edgeAgent/systemModules/edgeHub": "base",
        "/$edgeHub/routes/exportUp": "layer",
        "/$edgeHub/routes/filterUp": "base",
        "/$edgeHub/routes/sensorToFilter": "base",
        "/$edgeHub/schemaVersion": "base",
        "/$edgeHub/storeAndForwardConfiguration": "base",
        "/exporter": "layer",
        "/filter": "base",
    }


def test_layers_that_leave_the_result_incomplete_are_reported_against_the_effective_manifest() -> None:
    layer = _layer(
        "partial",
        20,
        {"$edgeAgent": {"properties.desired.modules.half.settings.image": "contosoacr.azurecr.io/half:1"}},
    )
    with pytest.raises(ManifestError) as caught:
        effective_manifest(_parse(_base("base", 10, "1.0"), layer), SITE_A)
    pointers = {p.pointer for p in caught.value.problems}
    assert "/modulesContent/$edgeAgent/properties.desired/modules/half/status" in pointers
    assert all("(effective manifest of base, partial)" in p.message for p in caught.value.problems)


def test_layering_does_not_modify_the_deployments() -> None:
    base = _base("base", 10, "1.0")
    layer = _layer("tuning", 20, {"$edgeAgent": {}, "filter": {"properties.desired.unit": "F"}})
    before = json.dumps([base, layer], sort_keys=True)
    deployments = _parse(base, layer)
    effective_manifest(deployments, SITE_A)
    effective_manifest(deployments, SITE_A)
    assert json.dumps([base, layer], sort_keys=True) == before


# --- the shipped manifests ----------------------------------------------------------------------


def _shipped(*names: str) -> list[Deployment]:
    return [parse_deployment(load(REPO / "manifests" / name), default_id=name, order=i) for i, name in enumerate(names)]


@pytest.mark.parametrize("monitoring", ["on", None], ids=["tagged", "untagged"])
def test_motor_monitor_with_the_monitoring_layer(monitoring: str | None) -> None:
    tags = {"monitoring": monitoring} if monitoring else {}
    twin = {"deviceId": "gw-1", "tags": tags, "properties": {"reported": {}}}
    effective = effective_manifest(_shipped("motor-monitor.json", "layers/monitoring.json"), twin)
    modules = effective.manifest.edge_agent.modules
    routes = effective.manifest.edge_hub.route_specs()
    assert effective.base == "motor-monitor.json"
    if monitoring:
        assert effective.layers == ["monitoring-add-on"]
        assert "metrics-collector" in modules
        assert routes["metricsUpstream"].priority == 8
        assert effective.manifest.module_twins["metrics-collector"] == {"includeHostMetrics": True}
        assert effective.sources["/$edgeAgent/modules/metrics-collector"] == "monitoring-add-on"
        assert effective.sources["/$edgeHub/routes/metricsUpstream"] == "monitoring-add-on"
    else:
        assert effective.layers == []
        assert "metrics-collector" not in modules
        assert "metricsUpstream" not in routes
    assert {"motor-sensor", "fft-filter", "anomaly-detector", "alert-actuator"} <= set(modules)


def _gateway(accelerator: str | None, arch: str = "arm64") -> dict[str, Any]:
    tags = {"site": "plant-a", "role": "motor-gateway"}
    if accelerator:
        tags["accelerator"] = accelerator
    return {"deviceId": "gw-3", "tags": tags, "properties": {"reported": {"arch": arch}}}


def test_coral_group_swaps_the_anomaly_detector_env_and_binds() -> None:
    deployments = _shipped("groups/plant-a.json", "groups/coral-arm64.json")
    effective = effective_manifest(deployments, _gateway("coral-usb"))
    detector = effective.manifest.edge_agent.modules["anomaly-detector"]
    assert effective.base == "plant-a-motor-monitor"
    assert effective.layers == ["coral-arm64"]
    assert detector.env["OUTPOST_DELEGATE"].text() == "edgetpu"
    binds = detector.settings.docker_create_options()["HostConfig"]["Binds"]
    assert "/dev/bus/usb:/dev/bus/usb" in binds
    assert effective.sources["/$edgeAgent/modules/anomaly-detector"] == "coral-arm64"
    twin = effective.manifest.module_twins["anomaly-detector"]
    assert twin["model"]["version"] == "1-edgetpu"
    assert twin["threshold"] == 0.7


@pytest.mark.parametrize(("accelerator", "arch"), [(None, "arm64"), ("coral-usb", "amd64"), ("gpu", "arm64")])
def test_coral_group_does_not_apply_to_other_gateways(accelerator: str | None, arch: str) -> None:
    deployments = _shipped("groups/plant-a.json", "groups/coral-arm64.json")
    effective = effective_manifest(deployments, _gateway(accelerator, arch))
    detector = effective.manifest.edge_agent.modules["anomaly-detector"]
    assert effective.layers == []
    assert "OUTPOST_DELEGATE" not in detector.env
    assert "/dev/bus/usb:/dev/bus/usb" not in detector.settings.docker_create_options()["HostConfig"]["Binds"]
    assert effective.manifest.module_twins["anomaly-detector"]["model"]["version"] == "1"


def test_string_routes_take_azures_default_priority_and_no_ttl() -> None:
    effective = effective_manifest(_parse(_base("base", 10, "1.0")), SITE_A)
    specs = effective.manifest.edge_hub.route_specs()
    assert specs["sensorToFilter"].priority == 2_000_000_000
    assert specs["sensorToFilter"].time_to_live_secs is None
    assert specs["filterUp"].priority == 1
