"""A fleet and real agents (``outpost agent run --fleet``, process runtime) converging, end to end.

Runs on SQLite and on a real PostgreSQL. Push to a group: only the matching devices converge and the
counts are right; retarget: devices leave and join; a higher priority overrides; a layer adds a
module; a crashing deployment is reported failed with the agent's reason; the fleet goes away for
a while: agents keep running, then catch up and report; a deactivated device is refused.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from integration.agent_harness import manifest, module, wait_for
from integration.fleet_harness import OUTPOST, FleetProcess, fresh_database
from outpost.agent.adapters import make_runtime

CONVERGE = 90.0


class Agent:
    """``outpost agent run --fleet`` as a subprocess with its own state dir and namespace."""

    def __init__(self, root: Path, device_id: str, fleet_url: str, key: str) -> None:
        self.root = root
        self.device_id = device_id
        self.state = root / "agent"
        self.namespace = f"fleet-{uuid.uuid4().hex[:6]}"
        self.log = root / "agent.log"
        root.mkdir(parents=True, exist_ok=True)
        command = [
            OUTPOST, "agent", "run", "--fleet", fleet_url, "--device-id", device_id, "--activation-key", key,
            "--state-dir", str(self.state), "--runtime", "process", "--namespace", self.namespace,
            "--metrics-port", "0", "--interval", "1", "--workdir", str(root),
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OUTPOST_FLEET", "OUTPOST_STATE"))}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log, env=env, cwd=root)

    def running(self) -> set[str]:
        runtime = make_runtime("process", state_dir=self.state, namespace=self.namespace, workdir=self.root)
        return {name for name, m in runtime.observe().modules.items() if m.running}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        runtime = make_runtime("process", state_dir=self.state, namespace=self.namespace, workdir=self.root)
        for name, state in runtime.observe().modules.items():
            runtime.remove(name, state.id)


def _content(modules: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return manifest(modules, window=1.0)


def _layer(name: str) -> dict[str, Any]:
    entry = module(order=2)
    return {"modulesContent": {"$edgeAgent": {f"properties.desired.modules.{name}": entry}}}


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None
    return fresh_database(request.getfixturevalue("postgres_cluster"))


@pytest.fixture
def world(tmp_path: Path, backend: str | None) -> Iterator[tuple[FleetProcess, dict[str, Agent]]]:
    fleet = FleetProcess(tmp_path / "fleet", backend).start()
    agents: dict[str, Agent] = {}
    try:
        with fleet.client() as operator:
            for device_id, site in (("a1", "plant-a"), ("a2", "plant-a"), ("b1", "plant-b")):
                added = operator.post("/api/v1/devices", json={"deviceId": device_id, "tags": {"site": site}})
                assert added.status_code == 201, added.text
                agents[device_id] = Agent(tmp_path / device_id, device_id, fleet.url, added.json()["activationKey"])
        yield fleet, agents
    finally:
        for agent in agents.values():
            agent.stop()
        fleet.stop()


def _status(operator: httpx.Client, name: str) -> dict[str, Any]:
    response = operator.get(f"/api/v1/deployments/{name}/status")
    assert response.status_code == 200, response.text
    return dict(response.json())


def _settled(operator: httpx.Client, name: str, successful: int, failed: int = 0) -> dict[str, Any] | None:
    status = _status(operator, name)
    metrics = status["systemMetrics"]
    if metrics["reportedSuccessfulCount"] == successful and metrics["reportedFailedCount"] == failed:
        return status
    return None


def _push(operator: httpx.Client, name: str, document: dict[str, Any], target: str, priority: int, **kw: Any) -> None:
    body = {"document": document, "name": name, "targetCondition": target, "priority": priority, **kw}
    response = operator.post("/api/v1/deployments", json=body)
    assert response.status_code == 201, response.text


def test_a_fleet_of_agents_converges(world: tuple[FleetProcess, dict[str, Agent]]) -> None:
    fleet, agents = world
    operator = fleet.client()
    a1, a2, b1 = agents["a1"], agents["a2"], agents["b1"]

    # a base for everyone, and one for plant-a on top by priority
    _push(operator, "idle", _content({"idle": module(order=1)}), "*", 0)
    _push(operator, "plant-a", _content({"sensor": module(order=1), "filter": module(order=2)}),
          "tags.site = 'plant-a'", 10)  # fmt: skip
    status = wait_for(lambda: _settled(operator, "plant-a", 2), CONVERGE, "plant-a to converge on a1 and a2")
    assert status["systemMetrics"]["targetedCount"] == 2
    assert status["systemMetrics"]["appliedCount"] == 2
    wait_for(lambda: _settled(operator, "idle", 1), CONVERGE, "idle to converge on b1")
    assert a1.running() >= {"sensor", "filter"}
    assert "sensor" not in b1.running()

    # retarget: a2 leaves plant-a's group (by its tag), b1 joins (by the new condition)
    operator.patch("/api/v1/devices/a2/tags", json={"site": "plant-c"})
    operator.patch("/api/v1/deployments/plant-a", json={"targetCondition": "tags.site IN ['plant-a', 'plant-b']"})
    wait_for(lambda: _settled(operator, "plant-a", 2), CONVERGE, "plant-a on a1 and b1")
    assert sorted(_status(operator, "plant-a")["successful"]) == ["a1", "b1"]
    wait_for(lambda: "sensor" not in a2.running() and "idle" in a2.running(), CONVERGE, "a2 back on idle")
    wait_for(lambda: "sensor" in b1.running(), CONVERGE, "b1 running plant-a")

    # a higher priority overrides; a layer adds a module everywhere
    _push(operator, "urgent", _content({"hotfix": module(order=1)}), "tags.site = 'plant-b'", 50)
    _push(operator, "extra", _layer("extra"), "*", 100, layered=True)
    wait_for(lambda: _settled(operator, "urgent", 1), CONVERGE, "urgent on b1")
    wait_for(lambda: _settled(operator, "extra", 3), CONVERGE, "the layer on every device")
    assert {"hotfix", "extra"} <= b1.running()
    assert "sensor" not in b1.running()
    assert {"sensor", "extra"} <= a1.running()

    # a deployment whose image does not exist is reported failed, with the agent's reason, and rolled back
    ghost = module(order=1, image="outpost-test/does-not-exist:9")
    del ghost["outpost"]["process"]  # the process runtime cannot run it either
    _push(operator, "broken", _content({"sensor": module(order=1), "ghost": ghost}), "tags.site = 'plant-a'", 60)
    status = wait_for(lambda: _settled(operator, "broken", 0, failed=1), CONVERGE, "broken reported failed")
    assert status["failing"][0]["deviceId"] == "a1"
    assert "ghost" in status["failing"][0]["reason"]
    assert "ghost" not in a1.running()
    assert "sensor" in a1.running()

    # a deactivated device is refused and keeps running what it has
    operator.put("/api/v1/devices/a2/status", json={"status": "disabled"})
    wait_for(lambda: "deactivated" in a2.log.read_text(), 60, "a2's agent to be refused")
    assert "idle" in a2.running()
    operator.close()


def test_agents_ride_out_a_fleet_outage(world: tuple[FleetProcess, dict[str, Agent]], tmp_path: Path) -> None:
    fleet, agents = world
    with fleet.client() as operator:
        _push(operator, "base", _content({"sensor": module(order=1)}), "*", 1)
        wait_for(lambda: _settled(operator, "base", 3), CONVERGE, "base everywhere")
    fleet.stop()
    outage = time.monotonic()
    # while the fleet is away, a module stops on b1: the agent's report of it waits in the outbox
    b1 = agents["b1"]
    runtime = make_runtime("process", state_dir=b1.state, namespace=b1.namespace, workdir=b1.root)
    time.sleep(20)
    assert all(agent.process.poll() is None for agent in agents.values())
    assert all("sensor" in agent.running() for agent in agents.values())
    assert runtime.observe().modules["sensor"].running
    assert (b1.state / "fleet" / "outbox.json").exists()
    back = FleetProcess(fleet.state_dir, fleet.db, port=fleet.port).start()
    try:
        with back.client() as operator:
            _push(operator, "after", _content({"sensor": module(order=1), "late": module(order=2)}), "*", 2)
            wait_for(lambda: _settled(operator, "after", 3), CONVERGE + 60, "every agent caught up")
        assert all("late" in agent.running() for agent in agents.values())
        assert time.monotonic() - outage > 20
    finally:
        back.stop()
