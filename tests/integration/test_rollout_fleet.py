"""Rollouts on a real ``outpost fleet serve`` (SQLite and PostgreSQL) with light simulated devices.

Each simulated device does over the device API what an agent and the anomaly detector do: fetch
its deployment, download the desired model from the registry with its own credential (in two
ranged halves, as a resumed download) and check its sha256, then report what the detector
reports (model, modelError, inference count and latency, alerts, invalid messages).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import time
import zlib
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from integration.fleet_harness import OUTPOST, REPO, FleetProcess, add_device, fleet, fleet_db, postgres_cluster

__all__ = ["fleet", "fleet_db", "postgres_cluster"]

PLANT_A = json.loads((REPO / "manifests/groups/plant-a.json").read_text())
MODEL = (REPO / "modules/anomaly-detector/anomaly_detector/models/motor-v1.tflite").read_bytes()
MODULE = "anomaly-detector"
TAGS = {"site": "plant-a", "role": "motor-gateway"}


class Device:
    def __init__(self, fleet: FleetProcess, device_id: str) -> None:
        self.id = device_id
        self.fleet = fleet
        self.credential = add_device(fleet.client(), device_id, **TAGS)
        self.count = 0
        self.rng = np.random.default_rng(zlib.crc32(device_id.encode()))

    def round(self, *, slow: float = 1.0) -> str:
        """Converge to the desired model and report 100 more inferences; the version served."""
        with httpx.Client(base_url=self.fleet.url, headers={"Authorization": f"Bearer {self.credential}"}) as http:
            got = http.get(f"/api/v1/devices/{self.id}/deployment")
            assert got.status_code == 200, got.text
            wanted = got.json()["manifest"]["modulesContent"][MODULE]["properties.desired"]["model"]
            serving = {"version": wanted["version"], "sha256": wanted.get("sha256", "1" * 64)}
            if "url" in wanted:
                path = httpx.URL(wanted["url"]).path
                half = len(MODEL) // 2
                first = http.get(path, headers={"Range": f"bytes=0-{half - 1}"})
                rest = http.get(path, headers={"Range": f"bytes={half}-"})
                assert (first.status_code, rest.status_code) == (206, 206)
                assert hashlib.sha256(first.content + rest.content).hexdigest() == wanted["sha256"]
            self.count += 100
            candidate = wanted["version"] == "2"
            latency = float(self.rng.normal(4.0, 0.2)) * (slow if candidate else 1.0)
            patch = {
                "model": serving,
                "modelError": None,
                "inference": {"count": self.count, "latencyMsP50": round(latency, 4)},
                "alerts": {"count": self.count // 25},
                "invalidMessages": 0,
            }
            sent = http.patch(f"/api/v1/devices/{self.id}/modules/reported", json={MODULE: patch})
            assert sent.status_code == 200, sent.text
        return str(wanted["version"])


@pytest.fixture
def group(fleet: FleetProcess) -> list[Device]:
    operator = fleet.client()
    assert operator.post("/api/v1/deployments", json={"document": PLANT_A}).status_code == 201
    pushed = operator.post(
        "/api/v1/models",
        json={
            "name": "motor",
            "version": "2",
            "content": base64.b64encode(MODEL).decode(),
            "metadata": {"report": {"auc": 0.97}},
        },
    )
    assert pushed.status_code == 201, pushed.text
    assert pushed.json()["sha256"] == hashlib.sha256(MODEL).hexdigest()
    return [Device(fleet, f"gw-{i:02d}") for i in range(12)]


def start(fleet: FleetProcess, **changes: Any) -> dict[str, Any]:
    body = {
        "name": "motor-v2",
        "targetCondition": "tags.site = 'plant-a'",
        "module": MODULE,
        "model": "motor@2",
        "steps": [50, 100],
        "soak": "0s",
        "minDevices": 3,
        "gates": ["min-inferences=100"],
        **changes,
    }
    response = fleet.client().post("/api/v1/rollouts", json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def drive(fleet: FleetProcess, devices: list[Device], until: set[str], *, slow: float = 1.0) -> dict[str, Any]:
    deadline = time.monotonic() + 60
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
        assert offline.count == 0
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
    status = drive(fleet, group, {"promoted", "rolled-back"}, slow=1.5)
    assert status["state"] == "rolled-back", status
    assert [g["gate"] for g in status["failure"]["gates"]] == ["latency"]
    assert status["failure"]["gates"][0]["test"].startswith("Mann-Whitney U")
    assert {d.round() for d in group} == {"1"}


def test_refusals(fleet: FleetProcess, group: list[Device]) -> None:
    device = httpx.Client(base_url=fleet.url, headers={"Authorization": f"Bearer {group[0].credential}"})
    anonymous = httpx.Client(base_url=fleet.url)
    operator = fleet.client()
    try:
        assert anonymous.get("/api/v1/models/motor/2/content").status_code == 401
        assert device.get("/api/v1/models/motor/2/content").content == MODEL
        assert device.post("/api/v1/rollouts", json={}).status_code == 403
        assert device.get("/api/v1/rollouts").status_code == 403
        assert device.get("/api/v1/models/motor/2/content", headers={"Range": "bytes=999999-"}).status_code == 416
        again = operator.post("/api/v1/models", json={"name": "motor", "version": "2", "content": "AAAA"})
        assert again.status_code == 409
        bad = operator.post("/api/v1/models", json={"name": "motor", "version": "3", "content": "!!"})
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
