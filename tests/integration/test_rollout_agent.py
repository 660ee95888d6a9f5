"""The real chain, with no simulation: a fleet, a real agent (``outpost agent run --fleet``, process
runtime), the real hub and the real anomaly detector (``python -m anomaly_detector``, started by the
agent). A rollout gives the device a registry model: the fleet stamps the device's model route and
token into the deployment, the agent applies it, the hub hands it to the detector alone, the detector
downloads with the token, verifies and loads it, and its report reaches the fleet; the abort brings the
old model back the same way. The token is never reported.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx

from integration.agent_harness import manifest, module, wait_for
from integration.conftest_mosquitto import free_port
from integration.fleet_harness import OUTPOST, REPO, FleetProcess
from outpost.agent.adapters import make_runtime

DETECTOR = REPO / "modules" / "anomaly-detector"
MODELS = DETECTOR / "anomaly_detector" / "models"
CURRENT = (MODELS / "motor-v1.tflite").read_bytes()
FLOAT = REPO / "ci" / "model" / "artifacts" / "motor-v1-float"
CANDIDATE = FLOAT.with_suffix(".tflite").read_bytes()


def push_model(operator: httpx.Client, version: str, content: bytes, metadata: Path) -> None:
    body = {"name": "motor", "version": version, "content": base64.b64encode(content).decode(),
            "metadata": json.loads(metadata.read_text())}  # fmt: skip
    pushed = operator.post("/api/v1/models", json=body)
    assert pushed.status_code == 201, pushed.text


def reported(operator: httpx.Client) -> dict[str, Any]:
    twin = operator.get("/api/v1/devices/gw").json()
    props: dict[str, Any] = twin["modules"].get("anomaly-detector", {}).get("properties", {}).get("reported", {})
    return props


def test_a_real_agent_and_detector_download_the_rollout_model_with_the_model_token(
    tmp_path: Path, mosquitto_installed: None
) -> None:
    from outpost.hub.service import HubService, HubSettings

    fleet = FleetProcess(tmp_path / "fleet").start()
    operator = fleet.client()
    push_model(operator, "1", CURRENT, MODELS / "motor-v1.json")
    push_model(operator, "2", CANDIDATE, FLOAT.with_suffix(".json"))
    key = operator.post("/api/v1/devices", json={"deviceId": "gw", "tags": {"site": "plant-a"}}).json()["activationKey"]
    detector = module(order=1)
    detector["outpost"]["process"] = {
        "command": [sys.executable, "-m", "anomaly_detector"],
        "workingDir": str(DETECTOR),
    }
    detector["env"] = {
        "PYTHONPATH": {"value": str(DETECTOR)},
        "OUTPOST_MODELS_DIR": {"value": str(tmp_path / "models")},
        "OUTPOST_EDGETPU": {"value": "off"},
    }
    document = manifest({"anomaly-detector": detector}, window=1.0)
    current = {"version": "1", "url": f"{fleet.url}/api/v1/models/motor/1/content",
               "sha256": hashlib.sha256(CURRENT).hexdigest()}  # fmt: skip
    document["modulesContent"]["anomaly-detector"] = {"properties.desired": {"model": current}}
    body = {"document": document, "name": "plant-a", "targetCondition": "tags.site = 'plant-a'", "priority": 10}
    assert operator.post("/api/v1/deployments", json=body).status_code == 201

    port = free_port()
    root = tmp_path / "gw"
    root.mkdir()
    state = root / "agent"
    command = [
        OUTPOST, "agent", "run", "--fleet", fleet.url, "--device-id", "gw", "--activation-key", key,
        "--state-dir", str(state), "--runtime", "process", "--namespace", f"rollout-{port}",
        "--metrics-port", "0", "--interval", "1", "--workdir", str(root), "--hub", f"127.0.0.1:{port}",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OUTPOST_FLEET", "OUTPOST_STATE"))}
    log = (root / "agent.log").open("ab")
    agent = subprocess.Popen(command, stdout=log, stderr=log, env=env, cwd=root)
    stop = threading.Event()
    hub: HubService | None = None
    try:
        stored = state / "deployment.json"
        wait_for(stored.exists, 90, "the agent's first deployment")

        def read() -> dict[str, Any]:
            return dict(json.loads(stored.read_text())["document"])

        hub = HubService(HubSettings(state_dir=root / "hub", device_id="gw", port=port, metrics_port=0, key_root=root))
        hub.start(read())
        threading.Thread(target=hub.run, args=(stop,), kwargs={"source": read}, daemon=True).start()

        def serving(version: str) -> dict[str, Any] | None:
            now = reported(operator)
            model = now.get("model") or {}
            return now if model.get("version") == version and not now.get("modelError") else None

        wait_for(lambda: serving("1"), 120, "the detector to report model 1")
        started = operator.post("/api/v1/rollouts", json={
            "name": "motor-v2", "targetCondition": "tags.site = 'plant-a'", "module": "anomaly-detector",
            "model": "motor@2", "steps": [100], "soak": "1h",
        })  # fmt: skip
        assert started.status_code == 201, started.text
        now = wait_for(lambda: serving("2"), 120, "the detector to download, verify and serve model 2")
        assert now["model"]["sha256"] == hashlib.sha256(CANDIDATE).hexdigest()
        assert now["model"]["source"] == f"{fleet.url}/api/v1/devices/gw/models/motor/2/content"
        assert "mdl." not in json.dumps(operator.get("/api/v1/devices/gw").json())  # never reported
        assert (tmp_path / "models" / f"{now['model']['sha256']}.tflite").read_bytes() == CANDIDATE

        assert operator.post("/api/v1/rollouts/motor-v2/abort").status_code == 200
        back = wait_for(lambda: serving("1"), 120, "the detector to go back to model 1")
        assert back["model"]["source"] == f"{fleet.url}/api/v1/devices/gw/models/motor/1/content"
    finally:
        stop.set()
        if hub is not None:
            hub.stop()
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
        log.close()
        runtime = make_runtime("process", state_dir=state, namespace=f"rollout-{port}", workdir=root)
        for name, module_state in runtime.observe().modules.items():
            runtime.remove(name, module_state.id)
        fleet.stop()
