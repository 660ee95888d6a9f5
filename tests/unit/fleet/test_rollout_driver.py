"""Rollouts over the real fleet service and store (SQLite): the layer, advancing, rollback, promotion,
a restart mid-step, the lease, and the operator's controls. Devices are simulated: each reports what
the anomaly detector reports for the model its assignment names."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from outpost.fleet.adapters.database import SqlStore
from outpost.fleet.adapters.rollouts import SqlRolloutStore
from outpost.fleet.credentials import Kind, Principal
from outpost.fleet.errors import ConflictError, InvalidError, NotFoundError
from outpost.fleet.rollout.driver import RolloutDriver, StartRequest
from outpost.fleet.rollout.plan import RolloutState
from outpost.fleet.service import FleetService, PushRequest

REPO = Path(__file__).resolve().parents[3]
PLANT_A = json.loads((REPO / "manifests/groups/plant-a.json").read_text())
BASE = PLANT_A["id"]
OPERATOR = Principal(Kind.OPERATOR, "admin")
DEVICES = [f"gw-{i:02d}" for i in range(24)]
MODULE = "anomaly-detector"
CANDIDATE = b"TFL3 candidate model bytes" * 100


class Fleet:
    def __init__(self, url: str, holder: str = "a") -> None:
        self.sql = SqlStore.open(url)
        self.service = FleetService(self.sql)
        self.store = SqlRolloutStore(self.sql.engine)
        self.driver = RolloutDriver(
            self.service, self.store, models_url="http://127.0.0.1:9", holder=holder, lease_s=30
        )
        self.counts: dict[str, int] = {}

    def desired_model(self, device: str) -> dict[str, Any]:
        doc = self.service.assignment(OPERATOR, device).document
        assert doc is not None
        model: dict[str, Any] = doc["modulesContent"][MODULE]["properties.desired"]["model"]
        return model

    def report(self, *, slow: float = 1.0, loads: bool = True, only: set[str] | None = None) -> None:
        """Every device (or ``only``) serves its desired model and reports 100 more inferences."""
        rng = np.random.default_rng(sum(self.counts.values()))
        for device in DEVICES:
            if only is not None and device not in only:
                continue
            wanted = self.desired_model(device)
            candidate = wanted["version"] == "2"
            count = self.counts[device] = self.counts.get(device, 0) + 100
            if candidate and not loads:
                serving, error = {"version": "1", "sha256": "1" * 64}, "model: not a TFLite file"
            else:
                serving = {"version": wanted["version"], "sha256": wanted.get("sha256", "1" * 64)}
                error = None
            latency = float(rng.normal(4.0, 0.2)) * (slow if candidate and loads else 1.0)
            patch = {
                "model": serving,
                "modelError": error,
                "inference": {"count": count, "latencyMsP50": latency},
                "alerts": {"count": count // 25},
                "invalidMessages": 0,
            }
            self.service.report_modules(Principal(Kind.DEVICE, device), device, {MODULE: patch})

    def close(self) -> None:
        self.sql.close()


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'fleet.db'}"


@pytest.fixture
def fleet(url: str) -> Iterator[Fleet]:
    f = Fleet(url)
    f.service.push(OPERATOR, PushRequest(PLANT_A))
    for device in DEVICES:
        f.service.add_device(OPERATOR, device, {"site": "plant-a", "role": "motor-gateway"})
    f.driver.registry.push(OPERATOR, "motor", "2", CANDIDATE, {"inputs": 4})
    yield f
    f.close()


def start(fleet: Fleet, **changes: Any) -> None:
    request = {
        "name": "motor-v2",
        "target": "tags.site = 'plant-a'",
        "module": MODULE,
        "model": "motor@2",
        "steps": [25, 50, 100],
        "soak": "0s",
        "min_devices": 3,
        "gates": ["min-inferences=100"],
        **changes,
    }
    fleet.driver.start(OPERATOR, StartRequest(**request))


def models(fleet: Fleet) -> dict[str, int]:
    versions = [fleet.desired_model(d)["version"] for d in DEVICES]
    return {v: versions.count(v) for v in sorted(set(versions))}


def test_the_registry_keeps_immutable_versions_and_serves_ranges(fleet: Fleet) -> None:
    record = fleet.store.model("motor", "2")
    assert record is not None
    assert record.sha256 == hashlib.sha256(CANDIDATE).hexdigest()
    assert record.size == len(CANDIDATE)
    with pytest.raises(ConflictError, match="immutable"):
        fleet.driver.registry.push(OPERATOR, "motor", "2", b"other")
    assert fleet.driver.registry.content(OPERATOR, "motor", "2", 10, 19) == CANDIDATE[10:20]
    assert fleet.driver.registry.content(OPERATOR, "motor", "2", 100) == CANDIDATE[100:]
    with pytest.raises(InvalidError):
        fleet.driver.registry.push(OPERATOR, "Motor X", "2", b"x")


def test_a_good_candidate_advances_and_is_promoted(fleet: Fleet) -> None:
    start(fleet)
    layer = fleet.service.deployment(OPERATOR, "rollout-motor-v2")
    assert layer.layered
    assert layer.labels == {"rollout": "motor-v2"}
    first = models(fleet)
    assert 0 < first["2"] < len(DEVICES)
    fleet.report()
    for _ in range(6):
        fleet.report()
        fleet.driver.tick()
        if fleet.driver.rollout(OPERATOR, "motor-v2").state is RolloutState.PROMOTED:
            break
    rollout = fleet.driver.rollout(OPERATOR, "motor-v2")
    assert rollout.state is RolloutState.PROMOTED, rollout.last
    ids = [d.id for d in fleet.service.deployments(OPERATOR)]
    assert "rollout-motor-v2" not in ids
    assert BASE not in ids
    assert f"{BASE}+motor-v2" in ids
    assert models(fleet) == {"2": len(DEVICES)}


def test_a_slow_candidate_is_rolled_back_with_the_latency_gate_named(fleet: Fleet) -> None:
    start(fleet, steps=[50, 100])
    for _ in range(4):
        fleet.report(slow=1.5)
        fleet.driver.tick()
    rollout = fleet.driver.rollout(OPERATOR, "motor-v2")
    assert rollout.state is RolloutState.ROLLED_BACK, rollout.last
    assert rollout.failure is not None
    assert [g["gate"] for g in rollout.failure["gates"]] == ["latency"]
    assert rollout.failure["gates"][0]["value"] > 10
    assert models(fleet) == {"1": len(DEVICES)}
    assert "rollout-motor-v2" not in [d.id for d in fleet.service.deployments(OPERATOR)]


def test_a_model_that_cannot_load_is_rolled_back_by_the_failure_gate(fleet: Fleet) -> None:
    start(fleet, steps=[50, 100])
    fleet.report(loads=False)
    fleet.driver.tick()
    rollout = fleet.driver.rollout(OPERATOR, "motor-v2")
    assert rollout.state is RolloutState.ROLLED_BACK
    assert rollout.failure is not None
    assert [g["gate"] for g in rollout.failure["gates"]] == ["failures"]


def test_a_rollout_survives_a_restart_and_one_driver_acts_at_a_time(fleet: Fleet, url: str) -> None:
    start(fleet)
    fleet.report()
    fleet.driver.tick()
    fleet.close()
    again = Fleet(url, holder="b")
    other = Fleet(url, holder="c")
    try:
        assert again.driver.rollout(OPERATOR, "motor-v2").state is RolloutState.RUNNING
        assert again.driver.tick() == []  # "a" holds the lease for 30 s
        again.store.acquire_lease("rollout-driver", "b", 1e12, 30)  # "a" is gone: its lease expired
        again.counts = dict(fleet.counts)
        for _ in range(6):
            again.report()
            again.driver.tick()
            assert other.driver.tick() == []
        assert again.driver.rollout(OPERATOR, "motor-v2").state is RolloutState.PROMOTED
    finally:
        again.close()
        other.close()


def test_operator_controls_and_bad_input(fleet: Fleet) -> None:
    start(fleet, approve_each_step=True)
    for bad, match in [
        ({"name": "x", "steps": [50, 25]}, "invalid steps"),
        ({"name": "x", "target": "tags.site = "}, "invalid target"),
        ({"name": "x", "model": "motor"}, "invalid model reference"),
        ({"name": "x", "gates": ["speed=1"]}, "unknown gate"),
        ({"name": "x", "soak": "soon"}, "invalid duration"),
        ({"name": "Bad Name"}, "invalid rollout name"),
    ]:
        with pytest.raises(InvalidError, match=match):
            start(fleet, **bad)
    with pytest.raises(NotFoundError):
        start(fleet, name="x", model="motor@9")
    with pytest.raises(ConflictError):
        start(fleet)
    assert "rollout-x" not in [d.id for d in fleet.service.deployments(OPERATOR)]
    fleet.driver.pause(OPERATOR, "motor-v2")
    with pytest.raises(ConflictError):
        fleet.driver.approve(OPERATOR, "motor-v2")
    fleet.driver.resume(OPERATOR, "motor-v2")
    for _ in range(3):
        fleet.report()
        fleet.driver.tick()
    status = fleet.driver.status(OPERATOR, "motor-v2")
    assert status["state"] == "awaiting-approval", status["last"]
    assert status["cohorts"]["treatment"] + status["cohorts"]["control"] == len(DEVICES)
    assert sum(status["devicesPerModel"].values()) == len(DEVICES)
    assert {g["gate"] for g in status["last"]["gates"]} >= {"latency", "failures", "alerts", "errors"}
    assert fleet.driver.approve(OPERATOR, "motor-v2").step == 1
    fleet.driver.abort(OPERATOR, "motor-v2")
    assert models(fleet) == {"1": len(DEVICES)}
    with pytest.raises(ConflictError):
        fleet.driver.abort(OPERATOR, "motor-v2")
    device = Principal(Kind.DEVICE, DEVICES[0])
    with pytest.raises(Exception, match="operator"):
        fleet.driver.pause(device, "motor-v2")


def drive_until(fleet: Fleet, state: RolloutState, rounds: int = 8) -> None:
    for _ in range(rounds):
        fleet.report()
        fleet.driver.tick()
        if fleet.driver.rollout(OPERATOR, "motor-v2").state is state:
            return
    pytest.fail(f"not {state}: {fleet.driver.rollout(OPERATOR, 'motor-v2').last}")


@pytest.mark.parametrize("option", ["approve_promotion", "approve_each_step"])
def test_the_promotion_waits_for_approval(fleet: Fleet, option: str) -> None:
    start(fleet, steps=[50, 100], **{option: True})
    drive_until(fleet, RolloutState.AWAITING_APPROVAL)
    assert "rollout-motor-v2" in [d.id for d in fleet.service.deployments(OPERATOR)]
    fleet.driver.tick()
    assert fleet.driver.rollout(OPERATOR, "motor-v2").state is RolloutState.AWAITING_APPROVAL  # it waits
    assert 0 < models(fleet)["2"] < len(DEVICES)
    assert fleet.driver.approve(OPERATOR, "motor-v2").state is RolloutState.PROMOTED
    assert models(fleet) == {"2": len(DEVICES)}
    assert f"{BASE}+motor-v2" in [d.id for d in fleet.service.deployments(OPERATOR)]


def test_the_layer_targets_the_cohort_in_constant_space(fleet: Fleet) -> None:
    start(fleet)
    layer = fleet.service.deployment(OPERATOR, "rollout-motor-v2")
    assert layer.target == "(tags.site = 'plant-a') AND OUTPOST_COHORT(deviceId, 'motor-v2') < 25.0"
    for device in [f"late-{i}" for i in range(20)]:  # devices that join the group fall into their cohort
        fleet.service.add_device(OPERATOR, device, {"site": "plant-a", "role": "motor-gateway"})
    status = fleet.driver.status(OPERATOR, "motor-v2")
    treated = sum(1 for d in [*DEVICES, *(f"late-{i}" for i in range(20))] if fleet.desired_model(d)["version"] == "2")
    assert treated == status["cohorts"]["treatment"]


def test_a_second_active_rollout_on_the_same_module_and_devices_is_refused(fleet: Fleet) -> None:
    start(fleet)
    with pytest.raises(ConflictError, match=r"rollout 'motor-v2' is running .* device\(s\) are in both groups"):
        start(fleet, name="again", target="tags.role = 'motor-gateway'")
    with pytest.raises(ConflictError, match="same base deployment"):
        start(fleet, name="elsewhere", target="tags.site = 'plant-b'")
    assert [r.name for r in fleet.driver.rollouts(OPERATOR)] == ["motor-v2"]
    fleet.driver.abort(OPERATOR, "motor-v2")
    start(fleet, name="again", target="tags.role = 'motor-gateway'")  # once it is over, the next may start


def test_a_signed_rollout_is_verified_by_a_device_with_a_trust_root_at_every_step(fleet: Fleet, tmp_path: Path) -> None:
    """The operator signs what the rollout can push (as `rollout start --sign-key` does, from the dry
    run's base and candidate); a device with a trust root admits every step and the promotion."""
    from outpost.fleet.rollout.contents import rollout_contents
    from outpost.trust.admission import Admission, ContentRefusedError
    from outpost.trust.keys import generate, read_private, read_public
    from outpost.trust.parts import sign_content
    from outpost.trust.store import TrustStore

    generate(tmp_path / "operator")
    key = read_private(tmp_path / "operator.key")
    trust = TrustStore(tmp_path / "trust")
    trust.add(read_public(tmp_path / "operator.pub"), "operator")
    admit = Admission(trust, on_warning=lambda _: None)
    content = PLANT_A["content"]["modulesContent"]
    fleet.service.push(OPERATOR, PushRequest(PLANT_A, name="signed", priority=20,
                                             signatures=[sign_content(content, key).to_json()]))  # fmt: skip
    with pytest.raises(InvalidError, match=r"is signed.*--sign-key") as refused:
        start(fleet)
    assert refused.value.problems[0].pointer == "/signatures"
    assert fleet.store.rollout("motor-v2") is None
    assert "rollout-motor-v2" not in [d.id for d in fleet.service.deployments(OPERATOR)]

    plan = fleet.driver.start(OPERATOR, StartRequest("motor-v2", "tags.site = 'plant-a'", MODULE, "motor@2"),
                              dry_run=True)  # fmt: skip
    assert plan.base_deployment == "signed"
    assert fleet.store.rollout("motor-v2") is None
    contents = rollout_contents(content, MODULE, plan.model)
    signatures: dict[str, Any] = {"baseDeployment": "signed"}
    signatures |= {kind: [sign_content(doc, key).to_json()] for kind, doc in contents.by_kind().items()}
    with pytest.raises(InvalidError, match="made over base deployment"):
        start(fleet, signatures={**signatures, "baseDeployment": BASE})
    for bad, pointer in (
        ({**signatures, "promoted": []}, "/signatures/promoted"),
        ({**signatures, "layer": [{"keyId": "k", "alg": "RSA", "sig": ""}]}, "/signatures/layer"),
        (["not", "an", "object"], "/signatures"),
    ):
        with pytest.raises(InvalidError) as caught:
            start(fleet, signatures=bad)
        assert caught.value.problems[0].pointer == pointer
    assert fleet.store.rollout("motor-v2") is None
    start(fleet, signatures=signatures)

    def admitted() -> dict[str, int]:
        versions = []
        for device in DEVICES:
            document = fleet.service.assignment(OPERATOR, device).document
            assert document is not None
            admit(json.loads(json.dumps(document)))  # raises when any part or the composition fails
            versions.append(document["modulesContent"][MODULE]["properties.desired"]["model"]["version"])
        return {v: versions.count(v) for v in sorted(set(versions))}

    assert 0 < admitted()["2"] < len(DEVICES)
    for _ in range(8):
        fleet.report()
        fleet.driver.tick()
        admitted()
        if fleet.driver.rollout(OPERATOR, "motor-v2").state is RolloutState.PROMOTED:
            break
    assert fleet.driver.rollout(OPERATOR, "motor-v2").state is RolloutState.PROMOTED
    assert admitted() == {"2": len(DEVICES)}
    promoted = fleet.service.deployment(OPERATOR, "signed+motor-v2")
    assert promoted.signatures == signatures["promoted"]

    # what a device refuses: the same promotion signed over another candidate
    other = rollout_contents(content, MODULE, {**plan.model, "sha256": "0" * 64})
    document = fleet.service.assignment(OPERATOR, DEVICES[0]).document
    assert document is not None
    document["outpost"]["parts"][0]["signatures"] = [sign_content(other.promoted, key).to_json()]
    with pytest.raises(ContentRefusedError, match="changed after signing"):
        admit(document)
