"""ci/model/candidate.py against a real ``outpost fleet serve``: a candidate that is not worse than the
registry's current model on a fresh held-out set is registered with its evaluation and rolled out; a worse
one and one the device could not load are refused and leave the registry and deployments as they were."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from integration.fleet_harness import OUTPOST, REPO, FleetProcess, add_device

SCRIPT = REPO / "ci" / "model" / "candidate.py"
MODELS = REPO / "modules" / "anomaly-detector" / "anomaly_detector" / "models"
FLOAT = REPO / "ci" / "model" / "artifacts" / "motor-v1-float"
WRONG_SHAPE = REPO / "tests" / "unit" / "modules" / "data" / "wrong-shape.tflite"


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[FleetProcess]:
    process = FleetProcess(tmp_path / "fleet").start()
    try:
        operator = process.client()
        plant_a = json.loads((REPO / "manifests/groups/plant-a.json").read_text())
        assert operator.post("/api/v1/deployments", json={"document": plant_a}).status_code == 201
        for i in range(3):
            add_device(operator, f"gw-{i}", site="plant-a", role="motor-gateway")
        pushed = subprocess.run(
            [OUTPOST, "model", "push", str(MODELS / "motor-v1.tflite"), "--name", "motor", "--version", "1",
             "--metadata", str(MODELS / "motor-v1.json"), "--fleet", process.url, "--token", process.token],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert pushed.returncode == 0, pushed.stderr
        yield process
    finally:
        process.stop()


def candidate(fleet: FleetProcess, model: Path, metadata: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OUTPOST_FLEET_URL": fleet.url, "OUTPOST_FLEET_TOKEN": fleet.token, "OUTPOST": OUTPOST}
    command = [sys.executable, str(SCRIPT), "--name", "motor", "--candidate", str(model), "--metadata", str(metadata),
               "--scale", "0.25", "--windows", "60", *extra]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)


def registered(operator: httpx.Client) -> list[str]:
    return [f"{m['name']}@{m['version']}" for m in operator.get("/api/v1/models").json()]


def test_a_candidate_not_worse_is_registered_with_its_evaluation_and_rolled_out(
    fleet: FleetProcess, tmp_path: Path
) -> None:
    report = tmp_path / "report.md"
    done = candidate(
        fleet, FLOAT.with_suffix(".tflite"), FLOAT.with_suffix(".json"),
        "--rollout-target", "tags.site = 'plant-a'", "--soak", "30s", "--gate", "latency=20%", "--report", str(report),
        "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    evaluation = json.loads(done.stdout)
    assert evaluation["verdict"] == "not worse"
    assert evaluation["rollout"] == "motor-v2"
    assert evaluation["candidate"]["metrics"]["f1"] > 0.9
    assert "rollout motor-v2 started" in done.stderr
    operator = fleet.client()
    assert registered(operator) == ["motor@1", "motor@2"]
    record = operator.get("/api/v1/models/motor/2").json()
    assert record["metadata"]["evaluation"]["current"]["ref"] == "motor@1"
    assert record["metadata"]["sha256"] == record["sha256"]
    rollout = operator.get("/api/v1/rollouts/motor-v2").json()
    assert (rollout["state"], rollout["gates"]["latencyPct"], rollout["gates"]["soakSeconds"]) == ("running", 20, 30)
    assert rollout["model"]["metadata"]["features"]  # the candidate's normalisation travels with it
    assert "| f1 |" in report.read_text()
    assert "not worse" in report.read_text()


def test_a_worse_or_unloadable_candidate_is_not_registered(fleet: FleetProcess, tmp_path: Path) -> None:
    skewed = json.loads(FLOAT.with_suffix(".json").read_text())
    skewed["normalization"]["mean"][1] += 30.0  # the candidate's own normalisation is wrong: it alarms on healthy
    metadata = tmp_path / "skewed.json"
    metadata.write_text(json.dumps(skewed))
    report = tmp_path / "report.md"
    worse = candidate(fleet, FLOAT.with_suffix(".tflite"), metadata, "--rollout-target", "*", "--report", str(report))
    assert worse.returncode == 1
    assert "the candidate is worse than motor@1" in worse.stderr
    assert "not registered" in worse.stderr
    assert "**worse**" in report.read_text()
    unloadable = candidate(fleet, WRONG_SHAPE, MODELS / "motor-v1.json")
    assert unloadable.returncode == 1
    assert "cannot be loaded as the device would" in unloadable.stderr
    operator = fleet.client()
    assert registered(operator) == ["motor@1"]
    assert operator.get("/api/v1/rollouts").json() == []
