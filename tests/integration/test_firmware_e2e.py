"""The emulated node (the compiled firmware core, TFLM, paho) as a leaf device of a real hub.

The hub is the real one (Mosquitto with generated credentials and ACLs, the SQLite store, routes);
an SDK module receives what the routes deliver. The network goes down by stopping the hub (its
broker with it) and comes back by starting it again on the same port and store.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from emulated_node.core import ActivationState, NodeCore
from emulated_node.node import EmulatedNode, NodeSettings
from emulated_node.runtime import TflmRuntime
from emulated_node.sensor import SyntheticMotor

from integration.conftest_mosquitto import free_port, wait_for
from integration.firmware_harness import HostBuild
from integration.hub_harness import Counter, hub_manifest
from outpost.wire.credentials import device_key, leaf_password

LEAF = "motor-node-1"
LEAF_ROUTE = {
    "leaf": "FROM /messages/* WHERE NOT IS_DEFINED($connectionModuleId) "
    'INTO BrokeredEndpoint("/modules/alpha/inputs/leaf")'
}


def _document() -> dict[str, Any]:
    return hub_manifest(LEAF_ROUTE, hub_ext={"leafDevices": [LEAF]})


@pytest.fixture
def node_factory(firmware_host: HostBuild, tmp_path: Path) -> Iterator[Callable[..., EmulatedNode]]:
    nodes: list[EmulatedNode] = []

    def make(port: int, *, credential: str | None = None, seed: int = 7) -> EmulatedNode:
        state = tmp_path / f"node-{len(nodes)}"
        core = NodeCore(firmware_host.library, state, LEAF, TflmRuntime(), boot=len(nodes))
        password = leaf_password(device_key(tmp_path), LEAF) if credential is None else credential
        node = EmulatedNode(
            NodeSettings(LEAF, state, hub_port=port, windows_per_second=20, credential=password),
            core,
            SyntheticMotor(seed=seed, windows_per_second=20),
        )
        node.boot()
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.close()


def _bodies(counter: Counter) -> list[dict[str, Any]]:
    with counter.lock:
        return list(counter.bodies)


def test_telemetry_routed_valve_opens_offline_and_the_node_catches_up(
    hub_factory: Any, module_factory: Any, node_factory: Callable[..., EmulatedNode]
) -> None:
    port = free_port()
    hub = hub_factory(_document(), port=port)
    alpha = module_factory(hub, "alpha")
    got = Counter()
    alpha.on_input("leaf", got)
    alpha.connect()
    node = node_factory(port)
    sensor = node.sensor
    assert isinstance(sensor, SyntheticMotor)
    assert node.connect().wait_connected(15)

    for _ in range(5):  # healthy windows, online
        node.step()
    wait_for(lambda: got.count() >= 5, timeout=30, what="5 telemetry messages at alpha")
    first = _bodies(got)[0]
    assert first["deviceID"] == LEAF
    assert set(first["fft_data"]) == {"current", "temperature", "vibration", "sound"}
    assert "80-200" in first["fft_data"]["vibration"]["bands"]
    assert first["valve"] == "closed"
    assert first["modelVersion"] == "1"
    assert 0 <= first["score"] < 0.5

    hub.stop()  # the network is down
    wait_for(lambda: not node.link or not node.link.connected, timeout=15, what="the node noticing")
    sensor.inject("stall")
    for _ in range(6):
        node.step()
    opened = [move for move in node.status.valve_moves if move[1]]
    assert opened, "the valve did not open"
    window, _, connected = opened[0]
    assert not connected  # opened by the node itself, with the hub unreachable
    assert window == 5 + 3  # K = 3 faulty windows
    assert node.status.duty == node.core.servo_duty(90)
    assert node.core.queue_depth == 6 + 1  # 6 windows and the valve event, kept in the ring

    hub = hub_factory(_document(), port=port)  # the network is back (same store)
    assert node.link is not None
    assert node.link.wait_connected(30)
    deadline = time.monotonic() + 30
    while node.core.queue_depth and time.monotonic() < deadline:
        node.step()  # catching up while sampling goes on
    assert node.core.queue_depth == 0
    sent = node.status.windows + 1  # every window and the valve event
    wait_for(lambda: got.count() >= sent, timeout=60, what="the backlog at alpha")
    bodies = _bodies(got)
    telemetry = [b for b in bodies if "fft_data" in b]
    assert [b["sequence"] for b in telemetry] == list(range(1, node.status.windows + 1))  # none lost, in order
    events = [b for b in bodies if b.get("event") == "valve"]
    assert len(events) == 1
    assert events[0]["valve"] == "open"
    assert events[0]["mode"] == "auto"
    assert events[0]["score"] > 0.8
    assert got.count() == len(set(got.ids))  # no duplicates
    assert node.core.queue_dropped == 0


def test_a_node_whose_credential_the_hub_refuses_stops_and_says_so(
    hub_factory: Any, node_factory: Callable[..., EmulatedNode]
) -> None:
    port = free_port()
    hub_factory(_document(), port=port)
    node = node_factory(port, credential="not-the-right-password")
    link = node.connect()
    wait_for(link.refused.is_set, timeout=15, what="the hub refusing the credential")
    node.step()
    assert node.core.activation_state is ActivationState.REQUESTING  # back to activation, nothing sent
    assert node.status.sent == 0
    assert "refused the stored credential" in node.core.activation_error()
    stored = node.settings.state_dir / "credential"
    assert not stored.exists() or not stored.read_text()  # forgotten in flash too
    kept = node.core.queue_depth  # what was queued while activated waits for a new credential
    node.step()
    assert node.core.queue_depth == kept  # not activated: new telemetry is not even queued
    assert json.loads(json.dumps(node.describe()))["activation"] == "activating"


def test_offline_ring_drops_the_oldest_and_counts(node_factory: Callable[..., EmulatedNode]) -> None:
    node = node_factory(free_port())  # no hub at all
    for _ in range(40):
        node.step()
    assert node.core.queue_dropped > 0
    depth = node.core.queue_depth
    assert 10 < depth < 40
    assert node.core.reported()["queue"]["dropped"] == node.core.queue_dropped
    first = node.core.peek()
    assert first is not None
    assert json.loads(first[1])["sequence"] == 40 - depth + 1  # the newest are kept
