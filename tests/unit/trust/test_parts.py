"""Signed parts: the fleet composes signed deployments, the device checks the parts and the composition."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from outpost.fleet.errors import InvalidError
from outpost.fleet.models import DeploymentRecord
from outpost.fleet.resolution import Resolver
from outpost.fleet.service import _check_signatures
from outpost.manifest import load_manifest
from outpost.trust.admission import Admission, ContentRefusedError
from outpost.trust.content import sign_document
from outpost.trust.keys import generate, read_private, read_public
from outpost.trust.parts import PARTS_POINTER, carried_signatures, sign_content
from outpost.trust.store import TrustStore

ROOT = Path(__file__).resolve().parents[3]
DIGEST = "sha256:" + "cd" * 32


def _contents() -> tuple[dict[str, Any], dict[str, Any]]:
    base = json.loads((ROOT / "manifests" / "motor-monitor.json").read_text())["modulesContent"]
    desired = base["$edgeAgent"]["properties.desired"]
    for spec in [desired["systemModules"]["edgeHub"], *desired["modules"].values()]:
        spec["settings"]["image"] = f"outpost-test/behave@{DIGEST}"
    layer = json.loads((ROOT / "manifests" / "layers" / "monitoring.json").read_text())["content"]["modulesContent"]
    for key, value in layer["$edgeAgent"].items():
        if key.startswith("properties.desired.modules."):
            value["settings"]["image"] = f"outpost-test/behave@{DIGEST}"
    return base, layer


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    for name in ("operator", "stranger"):
        generate(tmp_path / name)
    return {name: tmp_path / name for name in ("operator", "stranger")}


def _record(name: str, content: dict[str, Any], priority: int, seq: int, *sigs: dict[str, str]) -> DeploymentRecord:
    layered = name == "layer"
    # stored as the fleet stores it: through JSON
    stored = json.loads(json.dumps(content, sort_keys=True))
    return DeploymentRecord(name, stored, "*", priority, layered, seq=seq, created=f"2026-01-0{seq}",
                            signatures=list(sigs))  # fmt: skip


def _device(tmp_path: Path, *trusted: Path) -> Admission:
    store = TrustStore(tmp_path / "device" / "trust")
    for prefix in trusted:
        store.add(read_public(prefix.with_suffix(".pub")), prefix.name)
    return Admission(store, on_warning=lambda _: None)


def _sign(content: dict[str, Any], prefix: Path) -> dict[str, str]:
    return sign_content(content, read_private(prefix.with_suffix(".key"))).to_json()


def test_a_composition_of_signed_deployments_is_admitted(tmp_path: Path, keys: dict[str, Path]) -> None:
    base, layer = _contents()
    op = keys["operator"]
    resolver = Resolver(
        [_record("base", base, 10, 1, _sign(base, op)), _record("layer", layer, 20, 2, _sign(layer, op))]
    )
    assignment = resolver.assign("d1", {"deviceId": "d1", "tags": {}}, {})
    document = assignment.document
    assert document is not None
    assert [p["id"] for p in document["outpost"]["parts"]] == ["base", "layer"]
    admitted = _device(tmp_path, op)(json.loads(assignment.as_json())["manifest"])  # as it travels
    assert admitted.key_id
    # a device without a trust root just runs it: the parts are an extension Azure ignores
    assert _device(tmp_path / "untrusting")(document).key_id == ""
    load_manifest(document)


def test_the_device_refuses_an_unsigned_part_an_unknown_key_and_content_changed_after_signing(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    base, layer = _contents()
    op, stranger = keys["operator"], keys["stranger"]
    device = _device(tmp_path, op)

    unsigned_layer = Resolver([_record("base", base, 10, 1, _sign(base, op)), _record("layer", layer, 20, 2)])
    with pytest.raises(ContentRefusedError) as caught:
        device(unsigned_layer.assign("d1", {"tags": {}}, {}).document or {})
    assert caught.value.problems[0].pointer == f"{PARTS_POINTER}/1/signatures"
    assert "unsigned content refused (deployment 'layer'" in caught.value.problems[0].message

    strangers = Resolver([_record("base", base, 10, 1, _sign(base, stranger))])
    with pytest.raises(ContentRefusedError, match="does not trust"):
        device(strangers.assign("d1", {"tags": {}}, {}).document or {})

    # a fleet database row changed after the push: its signature no longer matches
    tampered = copy.deepcopy(base)
    tampered["$edgeAgent"]["properties.desired"]["modules"]["fft-filter"]["settings"]["image"] = "evil:latest"
    changed = Resolver([_record("base", tampered, 10, 1, _sign(base, op))])
    with pytest.raises(ContentRefusedError, match="changed after signing"):
        device(changed.assign("d1", {"tags": {}}, {}).document or {})

    # the effective manifest changed, parts intact: the composition does not match
    good = Resolver([_record("base", base, 10, 1, _sign(base, op))]).assign("d1", {"tags": {}}, {}).document or {}
    edited = copy.deepcopy(good)
    edited["modulesContent"]["$edgeHub"]["properties.desired"]["routes"]["evil"] = "FROM /messages/* INTO $upstream"
    with pytest.raises(ContentRefusedError) as caught:
        device(edited)
    assert caught.value.problems[0].pointer == "/modulesContent/$edgeHub/properties.desired/routes/evil"

    # operator-set module desired properties the fleet merged in without sending them to be checked
    served = Resolver([_record("base", base, 10, 1, _sign(base, op))]).assign("d1", {"tags": {}}, {}).document or {}
    merged = copy.deepcopy(served)
    merged["modulesContent"]["fft-filter"] = {"properties.desired": {"threshold": 9}}
    with pytest.raises(ContentRefusedError, match="twin --sign-key"):
        device(merged)


def test_push_signatures_are_checked_for_shape_and_a_signed_file_carries_its_own(keys: dict[str, Path]) -> None:
    base, _ = _contents()
    signed_file = sign_document({"modulesContent": base}, read_private(keys["operator"].with_suffix(".key")))
    carried = carried_signatures(signed_file)
    assert len(carried) == 1
    # the file's own signature covers exactly what the fleet stores: it is the part's signature
    assert carried[0].to_json() == _sign(base, keys["operator"])
    assert _check_signatures(None, signed_file) == [carried[0].to_json()]
    # an Azure configuration document's own signature would cover more than the content: not carried
    assert carried_signatures({**signed_file, "id": "x"}) == []
    with pytest.raises(InvalidError) as caught:
        _check_signatures([{"keyId": "k", "alg": "RSA", "sig": ""}], {})
    assert caught.value.problems[0].pointer == "/signatures/0"


def test_a_value_json_cannot_carry_exactly_is_refused_not_a_crash(tmp_path: Path, keys: dict[str, Path]) -> None:
    base, _ = _contents()
    base["fft-filter"]["properties.desired"]["big"] = 2**60  # beyond 2**53: no canonical form, never signable
    device = _device(tmp_path, keys["operator"])
    with pytest.raises(ContentRefusedError, match="canonicalise"):
        device({"modulesContent": base})
    resolver = Resolver([_record("base", base, 10, 1, {"keyId": "k", "alg": "Ed25519", "sig": ""})])
    with pytest.raises(ContentRefusedError, match="canonicalise"):
        device(resolver.assign("d1", {"tags": {}}, {}).document or {})


def test_the_fleets_model_download_stamp_is_the_only_unsigned_change_admitted(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    """The fleet gives each device its own route and token to a registry model (per-device, signed by
    nobody); the device admits exactly that change, never one to the model's bytes or origin."""
    from outpost.fleet.rollout.tokens import stamp

    base, _ = _contents()
    fleet = "http://127.0.0.1:9700"
    base["anomaly-detector"] = {"properties.desired": {"model": {
        "version": "2", "url": f"{fleet}/api/v1/models/motor/2/content", "sha256": "ab" * 32}}}  # fmt: skip
    op = keys["operator"]
    device = _device(tmp_path, op)
    served = Resolver([_record("base", base, 10, 1, _sign(base, op))]).assign("d1", {"tags": {}}, {}).document
    assert served is not None
    stamped = stamp(served, "d1", fleet, "credential-hash")
    assert stamped is not None
    model = stamped["modulesContent"]["anomaly-detector"]["properties.desired"]["model"]
    assert model["url"] == f"{fleet}/api/v1/devices/d1/models/motor/2/content"
    assert model["token"].startswith("mdl.")
    assert device(json.loads(json.dumps(stamped))).key_id

    def changed(**fields: Any) -> dict[str, Any]:
        doc = copy.deepcopy(stamped)
        doc["modulesContent"]["anomaly-detector"]["properties.desired"]["model"].update(fields)
        return doc

    for bad in (
        changed(sha256="cd" * 32),  # other bytes
        changed(url="http://127.0.0.2:9700/api/v1/devices/d1/models/motor/2/content"),  # another fleet
        changed(url=f"{fleet}/api/v1/devices/d1/models/motor/3/content"),  # another version
        changed(url="http://elsewhere/motor.tflite"),
    ):
        with pytest.raises(ContentRefusedError, match="differs at /modulesContent/anomaly-detector"):
            device(bad)
