"""The fleet's rules over a real SQLite store: activation, refusals, push forms, merges under contention."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from outpost.fleet.adapters.database import SqlStore
from outpost.fleet.credentials import Kind, Principal
from outpost.fleet.errors import ConflictError, ForbiddenError, GoneError, InvalidError, UnauthorizedError
from outpost.fleet.models import DeviceStatus
from outpost.fleet.service import FleetService, PushRequest
from outpost.trust.keys import generate, read_private
from outpost.trust.overrides import sign_override
from outpost.trust.parts import sign_content

REPO = Path(__file__).resolve().parents[3]
PLANT_A = json.loads((REPO / "manifests/groups/plant-a.json").read_text())
LAYER = json.loads((REPO / "manifests/layers/monitoring.json").read_text())
OPERATOR = Principal(Kind.OPERATOR, "admin")


@pytest.fixture
def service(tmp_path: Path) -> FleetService:
    store = SqlStore.open(f"sqlite:///{tmp_path / 'fleet.db'}")
    yield FleetService(store)
    store.close()


def test_first_operator_is_made_once(service: FleetService) -> None:
    credential = service.ensure_operator()
    assert credential is not None
    assert service.ensure_operator() is None
    assert service.authenticate(str(credential)) == OPERATOR
    with pytest.raises(UnauthorizedError):
        service.authenticate(str(credential)[:-2] + "xx")


def test_activation_key_works_once_and_deactivation_refuses(service: FleetService) -> None:
    _, key = service.add_device(OPERATOR, "gw", {"site": "a"})
    with pytest.raises(UnauthorizedError):
        service.activate("gw", "wrong")
    credential = service.activate("gw", key)
    with pytest.raises(GoneError):
        service.activate("gw", key)
    assert service.authenticate(str(credential)) == Principal(Kind.DEVICE, "gw")
    service.set_status(OPERATOR, "gw", DeviceStatus.DISABLED)
    with pytest.raises(ForbiddenError, match="deactivated"):
        service.authenticate(str(credential))
    service.set_status(OPERATOR, "gw", DeviceStatus.ENABLED)
    assert service.authenticate(str(credential)).name == "gw"


@pytest.mark.parametrize(
    "document",
    [
        {"modulesContent": PLANT_A["content"]["modulesContent"]},
        {"content": {"modulesContent": PLANT_A["content"]["modulesContent"]}},
        PLANT_A,
    ],
    ids=["modulesContent", "content.modulesContent", "azure-configuration"],
)
def test_every_azure_form_is_accepted_unchanged(service: FleetService, document: dict[str, object]) -> None:
    record = service.push(OPERATOR, PushRequest(document, name="d", target="*", priority=1))
    assert record.content == PLANT_A["content"]["modulesContent"]
    assert (record.id, record.target, record.priority) == ("d", "*", 1)


def test_the_configuration_documents_own_settings_are_used(service: FleetService) -> None:
    record = service.push(OPERATOR, PushRequest(PLANT_A, labels={"extra": "1"}))
    assert (record.id, record.target, record.priority) == (PLANT_A["id"], PLANT_A["targetCondition"], 10)
    assert record.labels == {**PLANT_A["labels"], "extra": "1"}
    assert record.metrics == PLANT_A["metrics"]["queries"]


def test_layered_content_is_detected_and_whole_manifests_cannot_be_layered(service: FleetService) -> None:
    assert service.push(OPERATOR, PushRequest(LAYER, layered=True)).layered
    with pytest.raises(InvalidError, match="--layered needs layered content"):
        service.push(OPERATOR, PushRequest(PLANT_A, name="x", layered=True))
    assert [d.id for d in service.deployments(OPERATOR)] == [LAYER["id"]]


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (PushRequest({"modulesContent": {}}, name="x", target="*"), "invalid"),
        (PushRequest(PLANT_A, name="Upper"), "invalid deployment name"),
        (PushRequest(PLANT_A, name="x", target="tags.a ="), "invalid target condition"),
        (PushRequest(PLANT_A, name="x", priority=-1), "priority"),
        (PushRequest([1, 2], name="x"), "JSON object"),
        (PushRequest({"modulesContent": PLANT_A["content"]["modulesContent"]}, name="x"), "target condition"),
    ],
)
def test_invalid_pushes_store_nothing(service: FleetService, request_: PushRequest, message: str) -> None:
    with pytest.raises(InvalidError, match=message):
        service.push(OPERATOR, request_)
    assert service.deployments(OPERATOR) == []
    assert service.history(OPERATOR) == []


def test_a_name_is_pushed_once(service: FleetService) -> None:
    service.push(OPERATOR, PushRequest(PLANT_A))
    with pytest.raises(ConflictError, match="content cannot change"):
        service.push(OPERATOR, PushRequest(PLANT_A))


def test_concurrent_tag_patches_all_land(service: FleetService) -> None:
    service.add_device(OPERATOR, "gw", {})

    def tag(i: int) -> None:
        service.patch_tags(OPERATOR, "gw", {f"t{i}": i})

    threads = [threading.Thread(target=tag, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert service.twin(OPERATOR, "gw")["tags"] == {f"t{i}": i for i in range(8)}


def test_operator_desired_properties_reach_the_assignment_and_move_the_etag(service: FleetService) -> None:
    service.add_device(OPERATOR, "gw", {"site": "plant-a", "role": "motor-gateway"})
    service.push(OPERATOR, PushRequest(PLANT_A))
    device = Principal(Kind.DEVICE, "gw")
    before = service.assignment(device, "gw")
    module = next(iter(PLANT_A["content"]["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]))
    service.set_module_desired(OPERATOR, "gw", module, {"threshold": 9})
    after = service.assignment(device, "gw")
    assert after.etag != before.etag
    assert after.document is not None
    assert after.document["modulesContent"][module]["properties.desired"]["threshold"] == 9
    with pytest.raises(InvalidError, match="push a deployment"):
        service.set_module_desired(OPERATOR, "gw", "$edgeAgent", {"x": 1})


def test_signed_desired_properties_are_stored_with_their_version_and_served_for_checking(
    service: FleetService, tmp_path: Path
) -> None:
    generate(tmp_path / "operator")
    key = read_private(tmp_path / "operator.key")
    service.add_device(OPERATOR, "gw", {"site": "plant-a", "role": "motor-gateway"})
    content = PLANT_A["content"]["modulesContent"]
    service.push(OPERATOR, PushRequest(PLANT_A, signatures=[sign_content(content, key).to_json()]))
    module = next(iter(content["$edgeAgent"]["properties.desired"]["modules"]))
    device = Principal(Kind.DEVICE, "gw")

    service.set_module_desired(OPERATOR, "gw", module, {"threshold": 9})  # unsigned: version 1
    unsigned = service.assignment(device, "gw")
    assert unsigned.document is not None
    assert unsigned.document["outpost"]["overrides"][0]["signatures"] == []

    signature = sign_override("gw", module, 2, {"threshold": 9, "mode": "fast"}, key).to_json()
    twin = service.set_module_desired(
        OPERATOR, "gw", module, {"mode": "fast", "$version": 2, "$signatures": [signature]}
    )
    assert twin["properties"]["desired"] == {"threshold": 9, "mode": "fast", "$version": 2}
    assert twin["desiredSignatures"] == [signature]
    signed = service.assignment(device, "gw")
    assert signed.etag != unsigned.etag
    assert signed.document is not None
    entry = signed.document["outpost"]["overrides"][0]
    assert (entry["version"], entry["desired"], entry["signatures"]) == (
        2,
        {"threshold": 9, "mode": "fast"},
        [signature],
    )

    # signed for a version the twin is not about to get: refused, nothing stored
    with pytest.raises(ConflictError, match="at version 2, so this change makes version 3, not 2"):
        service.set_module_desired(OPERATOR, "gw", module, {"mode": "slow", "$version": 2, "$signatures": [signature]})
    with pytest.raises(InvalidError, match=r"\$signatures needs \$version"):
        service.set_module_desired(OPERATOR, "gw", module, {"mode": "slow", "$signatures": [signature]})
    with pytest.raises(InvalidError, match="malformed") as caught:
        service.set_module_desired(
            OPERATOR, "gw", module, {"mode": "slow", "$version": 3, "$signatures": [{"keyId": "k"}]}
        )
    assert caught.value.problems[0].pointer == "/$signatures/0"
    assert service.assignment(device, "gw").etag == signed.etag

    # an unsigned change after it is unsigned: the old signature does not cover the new document
    twin = service.set_module_desired(OPERATOR, "gw", module, {"mode": "slow"})
    assert "desiredSignatures" not in twin
    after = service.assignment(device, "gw").document
    assert after is not None
    assert after["outpost"]["overrides"][0]["signatures"] == []
