"""Rollouts on a real ``outpost fleet serve`` (SQLite and PostgreSQL) with light simulated devices
that run the real anomaly-detector code.

Each simulated device plays its agent with the device credential (fetch the effective deployment,
report the module's reported properties) and runs the detector's own ``Detector`` and
``ModelManager`` as its module: the desired ``model`` (stamped by the fleet with the device's model
URL and download token) is downloaded by the module's real code (token, HTTP ranges, sha256),
loaded into LiteRT and self-tested; a model it cannot load becomes the reported ``modelError``.
Inferences are real LiteRT inferences on healthy features; ``slow`` adds a delay to each inference
of the candidate (a stand-in for a model that is slower on the device).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from integration.fleet_harness import OUTPOST, REPO, FleetProcess, add_device, fleet, fleet_db, postgres_cluster

sys.path.insert(0, str(REPO / "modules" / "anomaly-detector"))
from anomaly_detector.detector import Detector
from anomaly_detector.swap import ModelManager

__all__ = ["fleet", "fleet_db", "postgres_cluster"]

PLANT_A = json.loads((REPO / "manifests/groups/plant-a.json").read_text())
MODELS = REPO / "modules/anomaly-detector/anomaly_detector/models"
MODEL = (MODELS / "motor-v1.tflite").read_bytes()  # motor@1, what the group runs
CANDIDATE = (REPO / "ci/model/artifacts/motor-v1-float.tflite").read_bytes()  # motor@2: float32, same inputs
UNLOADABLE = b"this is not a TFLite flatbuffer " * 64  # motor@3
MODULE = "anomaly-detector"
TAGS = {"site": "plant-a", "role": "motor-gateway"}
FEATURES: dict[str, Any] = {
    "deviceID": "m1",
    "current": 8.0,
    "temperature": 45.0,
    "fft_data": {"vibration": {"bands": {"80-200": 2e-5}}, "sound": {"bands": {"2000-4000": 5e-5}}},
}


def base_deployment(fleet: FleetProcess) -> dict[str, Any]:
    """plant-a's deployment, with motor@1 from the fleet's registry (verified by sha256)."""
    document = json.loads(json.dumps(PLANT_A))
    desired = document["content"]["modulesContent"][MODULE]["properties.desired"]
    desired["model"] = {
        "version": "1",
        "url": f"{fleet.url}/api/v1/models/motor/1/content",
        "sha256": hashlib.sha256(MODEL).hexdigest(),
    }
    return document


class Device:
    def __init__(
        self, fleet: FleetProcess, device_id: str, cache: Path, admit: Callable[[dict[str, Any]], object] | None = None
    ) -> None:
        self.id = device_id
        self.admit = admit  # the device's admission (a trust root): raises on content it refuses
        self.fleet = fleet
        self.credential = add_device(fleet.client(), device_id, **TAGS)
        self.rng = np.random.default_rng(zlib.crc32(device_id.encode()))
        self.manager = ModelManager(cache_dir=cache / device_id, edgetpu="off")
        self.manager.load_file(MODELS / "motor-v1.tflite")
        self.detector = Detector(self.manager)
        self.desired: dict[str, Any] = {}
        self.rounds = 0
        self.errors: list[str] = []  # the modelError values this device reported

    def agent(self) -> httpx.Client:
        return httpx.Client(base_url=self.fleet.url, headers={"Authorization": f"Bearer {self.credential}"})

    def round(self, *, slow: float = 0.0) -> str:
        """Converge to the desired model, score 100 messages, report; the version served."""
        with self.agent() as http:
            got = http.get(f"/api/v1/devices/{self.id}/deployment")
            assert got.status_code == 200, got.text
            if self.admit is not None:
                self.admit(got.json()["manifest"])
            self.desired = got.json()["manifest"]["modulesContent"][MODULE]["properties.desired"]
            wanted = self.detector.apply_desired(self.desired).model
            assert wanted is not None
            self.manager.apply(wanted)  # the module's own download, verification and load
            current = self.manager.current
            assert current is not None
            if slow and current.version == "2" and not hasattr(current, "slowed"):
                predict = current.predict

                def slowed(vector: Any) -> float:
                    time.sleep(slow)
                    return predict(vector)

                current.predict = slowed  # type: ignore[method-assign]
                current.slowed = True  # type: ignore[attr-defined]
            for _ in range(100):
                message = {**FEATURES, "current": float(self.rng.normal(8.0, 0.2))}
                self.detector.handle(message)
            reported = self.detector.reported()
            if reported["modelError"]:
                self.errors.append(reported["modelError"])
            assert "mdl." not in json.dumps(reported)  # the download token is never reported
            sent = http.patch(f"/api/v1/devices/{self.id}/modules/reported", json={MODULE: reported})
            assert sent.status_code == 200, sent.text
        self.rounds += 1
        return current.version


def push_model(fleet: FleetProcess, version: str, content: bytes) -> None:
    pushed = fleet.client().post(
        "/api/v1/models",
        json={"name": "motor", "version": version, "content": base64.b64encode(content).decode(),
              "metadata": {"report": {"auc": 0.97}}},
    )  # fmt: skip
    assert pushed.status_code == 201, pushed.text
    assert pushed.json()["sha256"] == hashlib.sha256(content).hexdigest()


@pytest.fixture
def group(fleet: FleetProcess, tmp_path: Path) -> list[Device]:
    operator = fleet.client()
    push_model(fleet, "1", MODEL)
    push_model(fleet, "2", CANDIDATE)
    push_model(fleet, "3", UNLOADABLE)
    assert operator.post("/api/v1/deployments", json={"document": base_deployment(fleet)}).status_code == 201
    return [Device(fleet, f"gw-{i:02d}", tmp_path / "devices") for i in range(12)]


def start(fleet: FleetProcess, **changes: Any) -> dict[str, Any]:
    body = {
        "name": "motor-v2",
        "targetCondition": "tags.site = 'plant-a'",
        "module": MODULE,
        "model": "motor@2",
        "steps": [50, 100],
        "soak": "0s",
        "minDevices": 3,
        "gates": ["min-inferences=100", "latency=50%"],
        **changes,
    }
    response = fleet.client().post("/api/v1/rollouts", json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def drive(fleet: FleetProcess, devices: list[Device], until: set[str], *, slow: float = 0.0) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        for device in devices:
            device.round(slow=slow)
        status: dict[str, Any] = fleet.client().get("/api/v1/rollouts/motor-v2").json()
        if status["state"] in until:
            return status
        time.sleep(0.5)
    pytest.fail(f"the rollout did not reach {until}: {status}")


def deployment_ids(fleet: FleetProcess) -> list[str]:
    return [d["id"] for d in fleet.client().get("/api/v1/deployments").json()]


def test_a_good_candidate_survives_a_restart_is_promoted_and_an_offline_device_converges(
    fleet: FleetProcess, group: list[Device]
) -> None:
    status = start(fleet)
    assert status["layer"] in deployment_ids(fleet)
    assert status["cohorts"]["treatment"] + status["cohorts"]["control"] == len(group)
    *online, offline = group  # offline for the whole rollout: its figures never count, it converges later
    versions = {d.round() for d in online}
    assert versions == {"1", "2"}
    fleet.stop()
    again = FleetProcess(fleet.state_dir, fleet.db, port=fleet.port).start()
    try:
        status = drive(again, online, {"promoted", "rolled-back"})
        assert status["state"] == "promoted", status
        assert offline.rounds == 0
        assert {d.round() for d in group} == {"2"}
        ids = deployment_ids(again)
        assert "rollout-motor-v2" not in ids
        assert f"{PLANT_A['id']}+motor-v2" in ids
        drive(again, group, {"promoted"})
        assert again.client().get("/api/v1/rollouts/motor-v2").json()["devicesPerModel"] == {"2": len(group)}
    finally:
        again.stop()


def test_a_slow_candidate_is_rolled_back_with_the_latency_gate_named(fleet: FleetProcess, group: list[Device]) -> None:
    start(fleet)
    status = drive(fleet, group, {"promoted", "rolled-back"}, slow=0.002)
    assert status["state"] == "rolled-back", status
    assert [g["gate"] for g in status["failure"]["gates"]] == ["latency"]
    assert status["failure"]["gates"][0]["test"].startswith("Mann-Whitney U")
    assert {d.round() for d in group} == {"1"}


def test_an_unloadable_candidate_is_rolled_back_by_the_failure_gate(fleet: FleetProcess, group: list[Device]) -> None:
    start(fleet, model="motor@3")
    status = drive(fleet, group, {"promoted", "rolled-back"})
    assert status["state"] == "rolled-back", status
    assert [g["gate"] for g in status["failure"]["gates"]] == ["failures"]
    assert status["failure"]["gates"][0]["test"].startswith("Fisher's exact")
    assert status["failure"]["gates"][0]["figures"]["treatment"][0] >= 3  # devices that could not load it
    failed = [d for d in group if d.errors]
    assert failed
    # (a device that fetched its deployment just before the rollback may find the model no longer its own: 403)
    assert any("not a loadable TFLite model" in e for d in failed for e in d.errors)
    assert all("not a loadable TFLite model" in e or "HTTP 403" in e for d in failed for e in d.errors)
    assert {d.round() for d in group} == {"1"}
    assert not any(d.detector.reported()["modelError"] for d in group)


def test_a_module_downloads_with_its_token_and_only_its_own_models(
    fleet: FleetProcess, group: list[Device], tmp_path: Path
) -> None:
    start(fleet)
    for device in group:
        device.round()
    mine = next(d for d in group if d.manager.current and d.manager.current.version == "2")
    other = next(d for d in group if d.manager.current and d.manager.current.version == "1")
    model = mine.desired["model"]
    assert model["url"] == f"{fleet.url}/api/v1/devices/{mine.id}/models/motor/2/content"
    token = model["token"]
    assert token.startswith("mdl.")
    assert "token" not in json.dumps(fleet.client().get(f"/api/v1/devices/{mine.id}/deployment").json())
    module = httpx.Client(base_url=fleet.url, headers={"Authorization": f"Bearer {token}"})
    operator = fleet.client()
    try:
        route = f"/api/v1/devices/{mine.id}/models/motor/2/content"
        assert module.get(route).content == CANDIDATE
        ranged = module.get(route, headers={"Range": "bytes=100-"})
        assert (ranged.status_code, ranged.content) == (206, CANDIDATE[100:])
        # another device's token, another model, another route: refused
        assert module.get(f"/api/v1/devices/{other.id}/models/motor/2/content").status_code == 401
        assert module.get(f"/api/v1/devices/{mine.id}/models/motor/3/content").status_code == 401
        assert module.get(f"/api/v1/devices/{mine.id}/deployment").status_code == 401
        assert module.get("/api/v1/models/motor/2/content").status_code == 401
        # a device reaches only what its deployment names, even with its own credential
        with other.agent() as agent:
            assert agent.get(f"/api/v1/devices/{other.id}/models/motor/2/content").status_code == 403
            assert agent.get(f"/api/v1/devices/{other.id}/models/motor/1/content").content == MODEL
            assert agent.get(route).status_code == 403
        # a broken download resumes against the fleet: the module kept 1000 bytes before it restarted
        cache = tmp_path / "restarted"
        cache.mkdir()
        (cache / f"{model['sha256']}.part").write_bytes(CANDIDATE[:1000])
        restarted = ModelManager(cache_dir=cache, edgetpu="off")
        restarted.load_file(MODELS / "motor-v1.tflite")
        source = Detector(restarted).apply_desired(mine.desired).model
        assert source is not None
        assert restarted.apply(source).ok
        scraped = operator.get("/metrics").text
        assert 'route="/api/v1/devices/{device_id}/models/{name}/{version}/content",status="206"' in scraped
        # a deactivated device's token stops working
        assert operator.put(f"/api/v1/devices/{mine.id}/status", json={"status": "disabled"}).status_code == 200
        assert module.get(route).status_code == 403
    finally:
        module.close()


def test_refusals(fleet: FleetProcess, group: list[Device]) -> None:
    device = httpx.Client(base_url=fleet.url, headers={"Authorization": f"Bearer {group[0].credential}"})
    anonymous = httpx.Client(base_url=fleet.url)
    operator = fleet.client()
    try:
        assert anonymous.get("/api/v1/models/motor/2/content").status_code == 401
        assert device.get("/api/v1/models/motor/2/content").status_code == 403  # its deployment names motor@1
        assert device.get("/api/v1/models/motor/1/content").content == MODEL
        assert device.post("/api/v1/rollouts", json={}).status_code == 403
        assert device.get("/api/v1/rollouts").status_code == 403
        assert device.get("/api/v1/models/motor/1/content", headers={"Range": "bytes=999999-"}).status_code == 416
        again = operator.post("/api/v1/models", json={"name": "motor", "version": "2", "content": "AAAA"})
        assert again.status_code == 409
        bad = operator.post("/api/v1/models", json={"name": "motor", "version": "4", "content": "!!"})
        assert bad.status_code == 400
        refused = operator.post(
            "/api/v1/rollouts",
            json={"name": "x", "targetCondition": "tags.site =", "module": MODULE, "model": "motor@2"},
        )
        assert refused.status_code == 400
        assert refused.json()["problems"][0]["pointer"] == "--target"
        assert "rollout-x" not in deployment_ids(fleet)
        assert operator.post("/api/v1/rollouts/nope/pause").status_code == 404
        time.sleep(2.5)  # a driver round
        scraped = operator.get("/metrics").text
        assert "outpost_fleet_rollout_leader 1.0" in scraped
        assert "outpost_fleet_rollout_rounds_total" in scraped
    finally:
        device.close()
        anonymous.close()


def test_the_cli_pushes_a_model_and_starts_watches_and_aborts_a_rollout(fleet: FleetProcess, tmp_path: Path) -> None:
    operator = fleet.client()
    assert operator.post("/api/v1/deployments", json={"document": PLANT_A}).status_code == 201
    for i in range(4):
        add_device(operator, f"gw-{i}", **TAGS)
    model = tmp_path / "motor-v3.tflite"
    model.write_bytes(MODEL)
    metadata = tmp_path / "motor-v3.json"
    metadata.write_text(json.dumps({"report": {"auc": 0.98}}))
    env = {**os.environ, "OUTPOST_FLEET_URL": fleet.url, "OUTPOST_FLEET_TOKEN": fleet.token}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([OUTPOST, *args], capture_output=True, text=True, env=env, timeout=60, check=False)

    pushed = cli(
        "model", "push", str(model), "--name", "motor", "--version", "3", "--metadata", str(metadata), "--json"
    )
    assert pushed.returncode == 0, pushed.stderr
    assert json.loads(pushed.stdout)["sha256"] == hashlib.sha256(MODEL).hexdigest()
    assert cli("model", "push", str(model), "--name", "motor", "--version", "3").returncode == 1
    assert "motor@3" in cli("model", "list").stdout
    assert json.loads(cli("model", "show", "motor@3").stdout)["metadata"] == {"report": {"auc": 0.98}}
    started = cli(
        "rollout",
        "start",
        "m3",
        "--target",
        "tags.site = 'plant-a'",
        "--module",
        MODULE,
        "--model",
        "motor@3",
        "--steps",
        "50,100",
        "--soak",
        "10m",
        "--gate",
        "latency=20%",
        "--json",
    )
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["gates"]["latencyPct"] == 20
    assert "rollout-m3" in cli("deploy", "list").stdout
    status = json.loads(cli("rollout", "status", "m3", "--json").stdout)
    assert status["state"] == "running"
    assert "m3" in cli("rollout", "list").stdout
    assert cli("rollout", "pause", "m3").returncode == 0
    assert cli("rollout", "resume", "m3").returncode == 0
    assert cli("rollout", "abort", "m3").returncode == 0
    assert "aborted" in cli("rollout", "status", "m3").stdout
    assert "rollout-m3" not in cli("deploy", "list").stdout
    bad = cli(
        "rollout",
        "start",
        "m4",
        "--target",
        "tags.site = 'plant-a'",
        "--module",
        MODULE,
        "--model",
        "motor@3",
        "--gate",
        "speed=1",
    )
    assert bad.returncode == 1
    assert "unknown gate" in bad.stderr


def test_a_model_of_several_mib_streams_up_with_its_sha256_checked(fleet_db: str | None, tmp_path: Path) -> None:
    server = FleetProcess(tmp_path / "fleet", fleet_db, extra=["--max-model", str(8 << 20)]).start()
    try:
        operator = server.client()
        big = np.random.default_rng(7).integers(0, 256, 6 << 20, dtype=np.uint8).tobytes()
        model = tmp_path / "motor-big.tflite"
        model.write_bytes(big)
        metadata = tmp_path / "motor-big.json"
        metadata.write_text(json.dumps({"report": {"auc": 0.99}, "notes": "x" * 2000}))
        env = {**os.environ, "OUTPOST_FLEET_URL": server.url, "OUTPOST_FLEET_TOKEN": server.token}
        pushed = subprocess.run(
            [OUTPOST, "model", "push", str(model), "--name", "big", "--version", "1", "--metadata", str(metadata),
             "--json"],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip
        assert pushed.returncode == 0, pushed.stderr
        record = json.loads(pushed.stdout)
        assert (record["size"], record["sha256"]) == (len(big), hashlib.sha256(big).hexdigest())
        assert record["metadata"]["report"] == {"auc": 0.99}
        assert operator.get("/api/v1/models/big/1/content").content == big
        tail = operator.get("/api/v1/models/big/1/content", headers={"Range": f"bytes={5 << 20}-"})
        assert (tail.status_code, tail.content) == (206, big[5 << 20 :])

        def put(version: str, body: bytes, sha: str, **headers: str) -> httpx.Response:
            return operator.put(
                f"/api/v1/models/big/{version}",
                content=body,
                headers={"Content-Type": "application/octet-stream", "X-Model-Sha256": sha, **headers},
            )

        wrong = put("2", big, "0" * 64)
        assert wrong.status_code == 400
        assert wrong.json()["problems"][0]["pointer"] == "X-Model-Sha256"
        assert operator.get("/api/v1/models/big/2").status_code == 404  # nothing stored
        huge = big + big[: 3 << 20]
        assert put("3", huge, hashlib.sha256(huge).hexdigest()).status_code == 413
        sha = hashlib.sha256(big).hexdigest()
        assert put("4", big, sha, **{"Content-Type": "application/json"}).status_code == 415
        assert put("5", big, sha, **{"X-Model-Metadata": "!!"}).status_code == 400
        assert put("1", big, sha).status_code == 409  # versions are immutable
        old_way = {"name": "big", "version": "6", "content": base64.b64encode(big).decode()}
        assert operator.post("/api/v1/models", json=old_way).status_code == 413  # JSON stays under --max-body
        device = server.client(add_device(operator, "gw-up", **TAGS))
        refused = device.put(
            "/api/v1/models/big/7", content=b"x", headers={"Content-Type": "application/octet-stream",
                                                              "X-Model-Sha256": hashlib.sha256(b"x").hexdigest()}
        )  # fmt: skip
        assert refused.status_code == 403
        assert [m["version"] for m in operator.get("/api/v1/models").json()] == ["1"]
    finally:
        server.stop()
