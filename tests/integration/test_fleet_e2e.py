"""A fleet and real agents (``outpost agent run --fleet``, process runtime) converging, end to end.

Runs on SQLite and on a real PostgreSQL. Push to a group: only the matching devices converge and the
counts are right; retarget: devices leave and join; a higher priority overrides; a layer adds a
module; a crashing deployment is reported failed with the agent's reason; the fleet stops for a
minute: agents keep running, then catch up and report; a deactivated device is refused.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
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

    def __init__(
        self, root: Path, device_id: str, fleet_url: str, key: str, *, runtime: str = "process",
        namespace: str | None = None,
    ) -> None:  # fmt: skip
        self.root = root
        self.device_id = device_id
        self.kind = runtime
        self.state = root / "agent"
        self.namespace = namespace or f"fleet-{uuid.uuid4().hex[:6]}"
        self.log = root / "agent.log"
        root.mkdir(parents=True, exist_ok=True)
        command = [
            OUTPOST, "agent", "run", "--fleet", fleet_url, "--device-id", device_id, "--activation-key", key,
            "--state-dir", str(self.state), "--runtime", runtime, "--namespace", self.namespace,
            "--metrics-port", "0", "--interval", "1", "--workdir", str(root),
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OUTPOST_FLEET", "OUTPOST_STATE"))}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log, env=env, cwd=root)

    def running(self) -> set[str]:
        runtime = make_runtime(self.kind, state_dir=self.state, namespace=self.namespace, workdir=self.root)
        return {name for name, m in runtime.observe().modules.items() if m.running}

    def stop(self, *, keep_modules: bool = False) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if keep_modules:
            return
        runtime = make_runtime(self.kind, state_dir=self.state, namespace=self.namespace, workdir=self.root)
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


def test_agents_ride_out_a_fleet_outage(
    world: tuple[FleetProcess, dict[str, Agent]], tmp_path: Path, backend: str | None
) -> None:
    """The fleet stops for a minute: agents keep running, a module crashes and a device reboots meanwhile;
    when the fleet is back the agents catch up on their own, report what happened, and take a new push.

    A minute on SQLite. On PostgreSQL the outage is 20 s, because what the outage exercises is the
    device's side, which does not know the fleet's database: the agents' fetch and report loops back off
    (1 s doubling, jittered, capped at 60 s: a 60 s outage takes them to the cap's doubling step, a 20 s
    one to its 16 s step), the outbox keeps reports across a reboot, and they are sent once a call gets
    through. The fleet's database only matters for the restart, which both lengths exercise alike, so
    the CI budget pays for one minute, not two.
    """
    fleet, agents = world
    outage_seconds = 60.0 if backend is None else 20.0
    with fleet.client() as operator:
        _push(operator, "base", _content({"sensor": module(order=1)}), "*", 1)
        wait_for(lambda: _settled(operator, "base", 3), CONVERGE, "base everywhere")
    fleet.stop()
    outage = time.monotonic()
    # while the fleet is away, b1's sensor crashes: its agent restarts it, and the report of it waits in the outbox
    b1 = agents["b1"]
    runtime = make_runtime("process", state_dir=b1.state, namespace=b1.namespace, workdir=b1.root)
    os.kill(int(next(b1.state.rglob("sensor.pid")).read_text().strip()), signal.SIGKILL)
    wait_for(lambda: runtime.observe().modules["sensor"].running and "sensor" in _outbox_agent_modules(b1),
             CONVERGE, "b1's agent to restart the sensor and keep the report")  # fmt: skip
    time.sleep(outage_seconds / 3)
    # b1 reboots while offline: its agent is killed and started again with nothing but its state dir
    b1.process.kill()
    b1.process.wait()
    agents["b1"] = b1 = Agent(b1.root, "b1", fleet.url, "no-key-needed-any-more", namespace=b1.namespace)
    time.sleep(max(0.0, outage_seconds - (time.monotonic() - outage)))
    assert all(agent.process.poll() is None for agent in agents.values())
    assert all("sensor" in agent.running() for agent in agents.values())
    assert "sensor" in _outbox_agent_modules(b1)  # kept across the reboot, not sent yet
    back = FleetProcess(fleet.state_dir, fleet.db, port=fleet.port).start()
    try:
        assert time.monotonic() - outage >= outage_seconds
        with back.client() as operator:
            # caught up without a push: the crash made during the outage arrives (after the backoff's wait)
            wait_for(lambda: _restarts(operator, "b1", "sensor") >= 1, CONVERGE, "b1's report from the outage")
            _push(operator, "after", _content({"sensor": module(order=1), "late": module(order=2)}), "*", 2)
            wait_for(lambda: _settled(operator, "after", 3), CONVERGE, "every agent caught up")
        assert all("late" in agent.running() for agent in agents.values())
    finally:
        back.stop()


def _outbox_agent_modules(agent: Agent) -> dict[str, Any]:
    """Modules in the $edgeAgent report waiting in the agent's outbox (what the fleet has not got)."""
    path = agent.state / "fleet" / "outbox.json"
    pending = json.loads(path.read_text()) if path.exists() else {}
    return dict(pending.get("$edgeAgent", {}).get("modules") or {})


def _restarts(operator: httpx.Client, device_id: str, module_name: str) -> int:
    twin = operator.get(f"/api/v1/devices/{device_id}").json()
    reported = twin["modules"].get("$edgeAgent", {}).get("properties", {}).get("reported", {})
    return int((reported.get("modules") or {}).get(module_name, {}).get("restartCount") or 0)


def test_a_module_desired_property_reaches_the_module_without_a_redeploy(
    tmp_path: Path, mosquitto_installed: None
) -> None:
    """fleet twin --set -> agent -> hub -> ModuleClient handler; the module is not restarted; its report comes back."""
    from integration.conftest_mosquitto import free_port
    from outpost.hub.service import HubService, HubSettings
    from outpost.sdk import ModuleClient
    from outpost.wire.credentials import device_key, module_password

    fleet = FleetProcess(tmp_path / "fleet").start()
    operator = fleet.client()
    key = operator.post("/api/v1/devices", json={"deviceId": "gw", "tags": {}}).json()["activationKey"]
    document = _content({"beta": module(order=1)})
    document["modulesContent"]["beta"] = {"properties.desired": {"threshold": 1}}
    _push(operator, "twin-test", document, "*", 1)
    agent = Agent(tmp_path / "gw", "gw", fleet.url, key)
    stop = threading.Event()
    hub: HubService | None = None
    client: ModuleClient | None = None
    try:
        wait_for(lambda: _settled(operator, "twin-test", 1), CONVERGE, "the agent to converge")
        stored = agent.state / "deployment.json"

        def read() -> dict[str, Any]:
            return dict(json.loads(stored.read_text())["document"])

        port = free_port()
        hub = HubService(HubSettings(state_dir=agent.root / "hub", device_id="gw", port=port, metrics_port=0,
                                     key_root=agent.root))  # fmt: skip
        hub.start(read())
        threading.Thread(target=hub.run, args=(stop,), kwargs={"source": read}, daemon=True).start()
        client = ModuleClient(
            device_id="gw", module_id="beta", password=module_password(device_key(agent.root), "beta"), port=port
        )
        patches: list[dict[str, Any]] = []
        client.on_desired_change(patches.append)
        client.connect()
        assert client.twin()["threshold"] == 1
        runtime = make_runtime("process", state_dir=agent.state, namespace=agent.namespace, workdir=agent.root)
        before = runtime.observe().modules["beta"].id

        set_ = operator.patch("/api/v1/devices/gw/modules/beta/twin/desired", json={"threshold": 7})
        assert set_.status_code == 200, set_.text
        wait_for(lambda: any(p.get("threshold") == 7 for p in patches), 60, "the patch at the module")
        assert runtime.observe().modules["beta"].id == before  # not redeployed, not restarted

        client.report({"seen": 7})

        def reported() -> Any:
            twin = operator.get("/api/v1/devices/gw").json()
            return twin["modules"].get("beta", {}).get("properties", {}).get("reported", {}).get("seen") == 7

        wait_for(reported, 60, "the module's reported property at the fleet")
    finally:
        stop.set()
        if client is not None:
            client.close(timeout=2)
        if hub is not None:
            hub.stop()
        agent.stop()
        fleet.stop()


def test_a_docker_agent_converges_and_reports_a_missing_image(tmp_path: Path, docker_engine: Any) -> None:
    fleet = FleetProcess(tmp_path / "fleet").start()
    operator = fleet.client()
    key = operator.post("/api/v1/devices", json={"deviceId": "d1", "tags": {"runtime": "docker"}}).json()
    agent = Agent(tmp_path / "d1", "d1", fleet.url, key["activationKey"], runtime="docker")
    try:
        _push(operator, "good", _content({"app": module(order=1)}), "tags.runtime = 'docker'", 1)
        wait_for(lambda: _settled(operator, "good", 1), CONVERGE, "the Docker agent to converge")
        assert "app" in agent.running()
        missing = module(order=1, image="outpost-test/does-not-exist:9")
        _push(operator, "missing", _content({"app": module(order=1), "ghost": missing}), "*", 2)
        status = wait_for(lambda: _settled(operator, "missing", 0, failed=1), CONVERGE, "the missing image reported")
        assert "outpost-test/does-not-exist:9" in status["failing"][0]["reason"]
        assert "app" in agent.running()
    finally:
        agent.stop()
        fleet.stop()
