"""Signed overrides: module desired properties set on one device, signed for it, checked by the device.

The fleet's resolution serves them (``/outpost/overrides``) and the device's admission checks them,
both with their real code; the cases the device must refuse are built the way a fleet (or someone
with its database) would serve them.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from outpost.errors import ManifestError
from outpost.fleet.models import DeploymentRecord, ModuleTwin
from outpost.fleet.resolution import Resolver, twin_overrides
from outpost.manifest import load_manifest
from outpost.trust.admission import Admission, ContentRefusedError
from outpost.trust.keys import generate, read_private, read_public
from outpost.trust.overrides import (
    OVERRIDES_POINTER,
    Override,
    accepted_versions,
    check_overrides,
    override_document,
    overrides_of,
    sign_override,
)
from outpost.trust.parts import sign_content
from outpost.trust.store import TrustStore

ROOT = Path(__file__).resolve().parents[3]
DIGEST = "sha256:" + "cd" * 32
MODULE = "fft-filter"


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    for name in ("operator", "stranger"):
        generate(tmp_path / name)
    return {name: tmp_path / name for name in ("operator", "stranger")}


def _base() -> dict[str, Any]:
    base = json.loads((ROOT / "manifests" / "motor-monitor.json").read_text())["modulesContent"]
    desired = base["$edgeAgent"]["properties.desired"]
    for spec in [desired["systemModules"]["edgeHub"], *desired["modules"].values()]:
        spec["settings"]["image"] = f"outpost-test/behave@{DIGEST}"
    base[MODULE] = {"properties.desired": {"threshold": 1, "window": 256}}
    return dict(json.loads(json.dumps(base, sort_keys=True)))  # as the fleet stores it


def _resolver(op: Path) -> Resolver:
    base = _base()
    signature = sign_content(base, read_private(op.with_suffix(".key"))).to_json()
    return Resolver([DeploymentRecord("base", base, "*", 10, seq=1, created="2026-01-01", signatures=[signature])])


def _twin(device: str, module: str, version: int, desired: dict[str, Any], *signers: Path) -> ModuleTwin:
    """A module twin as the fleet stores it after ``outpost device twin --set [--sign-key]``."""
    sigs = [sign_override(device, module, version, desired, read_private(k.with_suffix(".key"))).to_json()
            for k in signers]  # fmt: skip
    return ModuleTwin(device, module, desired, desired_version=version, desired_signatures=sigs)


def _served(op: Path, *twins: ModuleTwin, device: str = "d1") -> dict[str, Any]:
    assignment = _resolver(op).assign(device, {"deviceId": device, "tags": {}}, twin_overrides(twins))
    return dict(json.loads(assignment.as_json())["manifest"])  # as it travels


def _device(
    tmp_path: Path, *trusted: Path, device: str = "d1", accepted: list[dict[str, Any]] | None = None
) -> Admission:
    store = TrustStore(tmp_path / "device" / "trust")
    for prefix in trusted:
        store.add(read_public(prefix.with_suffix(".pub")), prefix.name)
    return Admission(store, on_warning=lambda _: None, device_id=device, accepted=lambda: accepted or [])


def _refusal(admission: Admission, document: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(ContentRefusedError) as caught:
        admission(document)
    problem = caught.value.problems[0]
    return problem.pointer, problem.message


def test_a_signed_override_is_served_with_the_manifest_and_admitted(tmp_path: Path, keys: dict[str, Path]) -> None:
    op = keys["operator"]
    document = _served(op, _twin("d1", MODULE, 3, {"threshold": 7}, op))
    assert document["modulesContent"][MODULE]["properties.desired"] == {"threshold": 7, "window": 256}
    [entry] = document["outpost"]["overrides"]
    assert {k: entry[k] for k in ("deviceId", "moduleId", "version", "desired")} == override_document(
        "d1", MODULE, 3, {"threshold": 7}
    )
    admitted = _device(tmp_path, op)(document)
    assert admitted.key_id
    load_manifest(document)
    # a device without a trust root runs it as it did before: the entries are an extension
    assert _device(tmp_path / "untrusting")(document).key_id == ""


def test_an_unsigned_override_is_refused_naming_the_module_and_what_to_do(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    op = keys["operator"]
    document = _served(op, _twin("d1", MODULE, 1, {"threshold": 7}))
    pointer, message = _refusal(_device(tmp_path, op), document)
    assert pointer == f"{OVERRIDES_POINTER}/0/signatures"
    assert f"module {MODULE!r} (version 1) are unsigned" in message
    assert f"outpost device twin d1 --module {MODULE} --set KEY=VALUE --sign-key" in message
    # the same document is still what a device without a trust root runs
    assert _device(tmp_path / "untrusting")(document).key_id == ""


def test_an_override_signed_for_another_device_is_refused(tmp_path: Path, keys: dict[str, Path]) -> None:
    op = keys["operator"]
    for_a = _twin("a", MODULE, 1, {"threshold": 7}, op)
    # served to b as it is: the entry names a
    as_is = _served(op, for_a, device="b")
    pointer, message = _refusal(_device(tmp_path, op, device="b"), as_is)
    assert pointer == f"{OVERRIDES_POINTER}/0/deviceId"
    assert "set for device 'a', not this device ('b')" in message
    # relabelled for b: the signature binds a
    relabelled = copy.deepcopy(as_is)
    relabelled["outpost"]["overrides"][0]["deviceId"] = "b"
    pointer, message = _refusal(_device(tmp_path, op, device="b"), relabelled)
    assert pointer == f"{OVERRIDES_POINTER}/0/signatures"
    assert "does not match" in message


def test_an_override_signed_for_another_module_is_refused(tmp_path: Path, keys: dict[str, Path]) -> None:
    op = keys["operator"]
    signed_for_other = sign_override("d1", "other", 1, {"threshold": 7}, read_private(op.with_suffix(".key")))
    twin = ModuleTwin(
        "d1", MODULE, {"threshold": 7}, desired_version=1, desired_signatures=[signed_for_other.to_json()]
    )
    _, message = _refusal(_device(tmp_path, op), _served(op, twin))
    assert f"module {MODULE!r}" in message
    assert "does not match" in message


def test_an_older_signed_override_replayed_over_a_newer_one_is_refused(tmp_path: Path, keys: dict[str, Path]) -> None:
    op = keys["operator"]
    older = _served(op, _twin("d1", MODULE, 2, {"threshold": 5}, op))
    newer = _served(op, _twin("d1", MODULE, 3, {"threshold": 7}, op))
    assert accepted_versions(newer) == {MODULE: 3}
    device = _device(tmp_path, op, accepted=[older, newer])
    device(newer)  # the same version again: fine (a refetch)
    pointer, message = _refusal(device, older)
    assert pointer == f"{OVERRIDES_POINTER}/0/version"
    assert "version 2, older than version 3 this device accepted already" in message
    # a newer one after it is fine
    device(_served(op, _twin("d1", MODULE, 4, {"threshold": 9}, op)))


def test_a_tampered_value_or_an_unknown_key_is_refused(tmp_path: Path, keys: dict[str, Path]) -> None:
    op, stranger = keys["operator"], keys["stranger"]
    device = _device(tmp_path, op)

    # someone with the fleet's database changes the stored value (and the entry) after signing
    twin = _twin("d1", MODULE, 1, {"threshold": 7}, op)
    tampered = ModuleTwin(
        "d1", MODULE, {"threshold": 70}, desired_version=1, desired_signatures=twin.desired_signatures
    )
    _, message = _refusal(device, _served(op, tampered))
    assert "does not match: the content was changed after signing" in message

    # the entry is intact but the manifest carries another value: the composition does not match
    served = _served(op, twin)
    served["modulesContent"][MODULE]["properties.desired"]["threshold"] = 70
    pointer, message = _refusal(device, served)
    assert pointer == f"/modulesContent/{MODULE}/properties.desired/threshold"

    # a new version number with the old signature
    bumped = _served(op, twin)
    bumped["outpost"]["overrides"][0]["version"] = 9
    _, message = _refusal(device, bumped)
    assert "does not match" in message

    _, message = _refusal(device, _served(op, _twin("d1", MODULE, 1, {"threshold": 7}, stranger)))
    assert "signed only by key(s) this device does not trust" in message
    assert "outpost agent trust list" in message


def test_without_the_device_id_overrides_cannot_be_checked(tmp_path: Path, keys: dict[str, Path]) -> None:
    op = keys["operator"]
    _, message = _refusal(_device(tmp_path, op, device=""), _served(op, _twin("d1", MODULE, 1, {"x": 1}, op)))
    assert "without the device's id" in message


def test_a_malformed_entry_is_named_by_its_pointer(keys: dict[str, Path]) -> None:
    document = {"outpost": {"overrides": [{"deviceId": "d1", "moduleId": "m", "version": 0, "desired": {}}]}}
    with pytest.raises(ManifestError) as caught:
        overrides_of(document)
    assert caught.value.problems[0].pointer == f"{OVERRIDES_POINTER}/0/version"
    assert accepted_versions(document) == {}
    twice = [Override("d1", "m", 1, {}), Override("d1", "m", 1, {})]
    verdict = check_overrides(twice, device_id="d1", trusted={}, accepted={})
    assert verdict.problems  # (unsigned already, before the second entry)


def test_only_overrides_on_a_signed_stack_travel_and_only_for_modules_it_runs(keys: dict[str, Path]) -> None:
    op = keys["operator"]
    ghost = _twin("d1", "ghost", 1, {"x": 1}, op)
    document = _served(op, _twin("d1", MODULE, 1, {"threshold": 7}, op), ghost)
    assert [e["moduleId"] for e in document["outpost"]["overrides"]] == [MODULE]
    unsigned_stack = Resolver([DeploymentRecord("base", _base(), "*", 10, seq=1, created="2026-01-01")])
    plain = unsigned_stack.assign("d1", {"tags": {}}, twin_overrides([_twin("d1", MODULE, 1, {"threshold": 7})]))
    assert plain.document is not None
    assert "outpost" not in plain.document  # unchanged for fleets that sign nothing
    assert plain.document["modulesContent"][MODULE]["properties.desired"]["threshold"] == 7


def test_a_signed_override_left_out_later_is_refused_unless_the_module_is_gone(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    op = keys["operator"]
    accepted = _served(op, _twin("d1", MODULE, 3, {"threshold": 7}, op))
    device = _device(tmp_path, op, accepted=[accepted])
    withheld = _served(op)  # the fleet serves the deployment's own values again
    pointer, message = _refusal(device, withheld)
    assert pointer == OVERRIDES_POINTER
    assert f"module {MODULE!r}, which this device accepted signed before, are missing" in message
    # cleared with a signature: served (empty) and admitted
    device(_served(op, _twin("d1", MODULE, 4, {}, op)))
    # a deployment that no longer runs the module has nothing to merge it into
    base = {k: v for k, v in _base().items() if k != MODULE}
    signature = sign_content(base, read_private(op.with_suffix(".key"))).to_json()
    gone = Resolver([DeploymentRecord("base", base, "*", 10, seq=1, created="2026-01-01", signatures=[signature])])
    device(gone.assign("d1", {"tags": {}}, {}).document or {})
