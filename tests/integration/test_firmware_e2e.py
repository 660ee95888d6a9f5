"""The emulated node (the compiled firmware core, TFLM, paho) as a leaf device of a real hub.

The hub is the real one (Mosquitto with generated credentials and ACLs, the SQLite store, routes);
an SDK module receives what the routes deliver. The network goes down by stopping the hub (its
broker with it) and comes back by starting it again on the same port and store.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from emulated_node.core import ActivationState, NodeCore
from emulated_node.node import FACTORY_MODEL, EmulatedNode, NodeSettings
from emulated_node.runtime import TflmRuntime
from emulated_node.sensor import SyntheticMotor
from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from integration.conftest_mosquitto import free_port, wait_for
from integration.firmware_harness import HostBuild
from integration.hub_harness import DEVICE, Counter, hub_manifest
from outpost.hub.acl import HUB_USER
from outpost.wire import topics
from outpost.wire.credentials import device_key, leaf_activation_key, leaf_password

FLOAT_MODEL = Path(__file__).resolve().parents[2] / "ci" / "model" / "artifacts" / "motor-v1-float.tflite"

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

    def make(port: int, *, credential: str | None = None, seed: int = 7, **settings: Any) -> EmulatedNode:
        """``credential``: None for the leaf's real one, "" for none (the node must activate)."""
        state = tmp_path / f"node-{len(nodes)}"
        core = NodeCore(firmware_host.library, state, LEAF, TflmRuntime(), boot=len(nodes))
        password = leaf_password(device_key(tmp_path), LEAF) if credential is None else credential
        node = EmulatedNode(
            NodeSettings(LEAF, state, hub_port=port, windows_per_second=20, credential=password, **settings),
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


def test_first_boot_activates_at_the_hub_then_deactivation_stops_the_node(
    hub_factory: Any, module_factory: Any, node_factory: Callable[..., EmulatedNode], tmp_path: Path
) -> None:
    port = free_port()
    hub = hub_factory(_document(), port=port, activation_port=0)
    assert hub.activation is not None
    alpha = module_factory(hub, "alpha")
    got = Counter()
    alpha.on_input("leaf", got)
    alpha.connect()
    url = f"http://127.0.0.1:{hub.activation.port}/api/v1/activate"
    key = leaf_activation_key(device_key(tmp_path), LEAF)

    wrong = node_factory(port, credential="", activation_url=url, activation_key="not-the-key")
    assert wrong.activate_step() is ActivationState.REFUSED
    assert "HTTP 401" in wrong.core.activation_error()

    node = node_factory(port, credential="", activation_url=url, activation_key=key)
    node.step()
    assert node.core.queue_depth == 0  # nothing is queued before activation
    assert node.activate_step() is ActivationState.ACTIVATED
    stored = node.settings.state_dir / "credential"
    assert stored.read_text() == leaf_password(device_key(tmp_path), LEAF)
    assert stored.stat().st_mode & 0o777 == 0o600
    assert node.connect().wait_connected(15)
    node.step()
    wait_for(lambda: got.count() >= 1, timeout=30, what="the activated node's telemetry")

    # The operator removes the leaf from the deployment: the broker refuses it from its next
    # connection (here: the hub restarts), the node asks the activation endpoint, which says
    # "deactivated", and the node stops sending and says so.
    gone = hub_manifest(LEAF_ROUTE, hub_ext={"leafDevices": ["some-other-node"]})
    hub.stop()
    hub = hub_factory(gone, port=port, activation_port=hub.activation.port)
    assert node.link is not None
    wait_for(node.link.refused.is_set, timeout=30, what="the broker refusing the deactivated leaf")
    node.step()
    assert node.activate_step() is ActivationState.DEACTIVATED
    assert node.core.activation_error() == "device deactivated: not sending"
    assert node.core.reported()["activation"] == "deactivated"
    depth = node.core.queue_depth
    for _ in range(3):
        node.step()
    assert node.core.queue_depth == depth  # stopped sending (and queueing)
    assert not stored.read_text()  # the credential is forgotten


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


# -- over the air, twins and direct methods for leaf devices -----------------------------------------


class ModelServer:
    """Model files over HTTP on 127.0.0.1 (the model registry's role; stdlib's static file server)."""

    def __init__(self, directory: Path) -> None:
        handler = functools.partial(RangeRequestHandler, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.directory = directory

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class RangeRequestHandler(http.server.SimpleHTTPRequestHandler):
    """Answers ``Range: bytes=a-b`` with 206, as a blob store does (the node downloads in chunks)."""

    def do_GET(self) -> None:
        wanted = self.headers.get("Range", "")
        path = Path(self.translate_path(self.path))
        if not wanted.startswith("bytes=") or not path.is_file():
            super().do_GET()
            return
        data = path.read_bytes()
        start, _, end = wanted[len("bytes=") :].partition("-")
        chunk = data[int(start) : int(end) + 1]
        self.send_response(206)
        self.send_header("Content-Length", str(len(chunk)))
        self.send_header("Content-Range", f"bytes {start}-{int(start) + len(chunk) - 1}/{len(data)}")
        self.end_headers()
        self.wfile.write(chunk)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def model_server(tmp_path: Path) -> Iterator[ModelServer]:
    directory = tmp_path / "models"
    directory.mkdir()
    server = ModelServer(directory)
    yield server
    server.close()


def _model_desired(server: ModelServer, name: str, content: bytes, version: str, sha256: str | None = None) -> dict:
    (server.directory / name).write_bytes(content)
    return {
        "model": {
            "url": server.url(name),
            "version": version,
            "sha256": sha256 or hashlib.sha256(content).hexdigest(),
            "size": len(content),
        }
    }


def _with_leaf_desired(desired: dict[str, Any]) -> dict[str, Any]:
    document = _document()
    document["modulesContent"][LEAF] = {"properties.desired": desired}
    return document


def _run_until(node: EmulatedNode, predicate: Callable[[], Any], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}; node reports {node.core.reported()}")
        node.step()
        time.sleep(0.02)


def test_a_new_model_over_the_air_then_a_corrupt_one_and_one_that_does_not_load(
    hub_factory: Any, node_factory: Callable[..., EmulatedNode], model_server: ModelServer
) -> None:
    port = free_port()
    hub = hub_factory(_document(), port=port)
    node = node_factory(port)
    assert node.connect().wait_connected(15)
    for _ in range(2):
        node.step()
    factory = FACTORY_MODEL.read_bytes()
    # Version 2: the shipped network in a new file (a trailing pad changes its bytes and hash).
    v2 = factory + b"\0" * 16
    hub.apply(_with_leaf_desired(_model_desired(model_server, "motor-v2.tflite", v2, "2")))
    _run_until(node, lambda: node.core.reported()["model"]["version"] == "2", "model 2 to run")
    reported = node.core.reported()["model"]
    assert reported["sha256"] == hashlib.sha256(v2).hexdigest()
    assert reported["status"] == "idle"
    _run_until(
        node,
        lambda: hub.twins.reported_of(LEAF, leaf=True).get("model", {}).get("version") == "2",
        "the hub to hold the leaf's reported model version",
    )

    # A corrupt download (the sha256 announced is not the file's): refused, version 2 keeps running.
    v3 = factory + b"\1" * 16
    bad = _model_desired(model_server, "motor-v3.tflite", v3, "3", sha256=hashlib.sha256(b"other").hexdigest())
    hub.apply(_with_leaf_desired(bad))
    _run_until(node, lambda: node.core.reported()["model"]["status"] == "failed", "model 3 to be refused")
    reported = node.core.reported()["model"]
    assert "sha256" in reported["lastError"]
    assert reported["version"] == "2"
    scores = [node.step().score for _ in range(3)]
    assert all(s is not None and 0 <= s <= 1 for s in scores)  # still scoring with version 2

    # A model with the right hash that TFLM loads but the node cannot use (float, not int8): fallback.
    v4 = FLOAT_MODEL.read_bytes()
    hub.apply(_with_leaf_desired(_model_desired(model_server, "motor-v4.tflite", v4, "4")))
    _run_until(node, lambda: "4 failed to load" in (node.core.reported()["model"]["lastError"] or ""), "fallback")
    assert node.core.reported()["model"]["version"] == "2"
    assert node.step().score is not None
    _run_until(
        node,
        lambda: "failed to load" in (hub.twins.reported_of(LEAF, leaf=True).get("model", {}).get("lastError") or ""),
        "the hub to hold the leaf's report of the fallback",
    )


def test_gateway_overrides_the_valve_with_a_direct_method_and_malformed_calls_are_refused(
    hub_factory: Any, node_factory: Callable[..., EmulatedNode]
) -> None:
    port = free_port()
    hub = hub_factory(_document(), port=port)
    node = node_factory(port)
    assert node.connect().wait_connected(15)
    sensor = node.sensor
    assert isinstance(sensor, SyntheticMotor)
    sensor.inject("stall")
    _run_until(node, lambda: node.status.valve_open, "the valve to open on the fault")
    caller = MethodCaller(port, hub.hub_password)
    try:
        status, body = caller.call(node, "valve", {"position": "closed"})
        assert status == 200
        assert body["valve"] == "closed"
        assert body["mode"] == "closed"
        node.step()
        assert not node.status.valve_open  # forced closed despite the fault
        status, body = caller.call(node, "valve", {"position": "sideways"})
        assert status == 400
        assert "position" in body["error"]
        status, _ = caller.call(node, "explode", {})
        assert status == 404
        status, body = caller.call(node, "valve", {"position": "auto"})
        assert (status, body["valve"]) == (200, "open")
    finally:
        caller.close()


class MethodCaller:
    """Calls a leaf device's direct methods as the hub user (docs/hub.md), over MQTT 5."""

    def __init__(self, port: int, hub_password: str) -> None:
        self.responses: queue.Queue[tuple[int, Any]] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="method-caller", protocol=mqtt.MQTTv5)
        self.client.username_pw_set(HUB_USER, hub_password)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(topics.method_responses(DEVICE, "caller"), qos=1)
        time.sleep(0.3)

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        status = dict(message.properties.UserProperty)["status"]  # type: ignore[union-attr]
        self.responses.put((int(status), json.loads(message.payload)))

    def call(self, node: EmulatedNode, method: str, payload: Any) -> tuple[int, Any]:
        props = Properties(PacketTypes.PUBLISH)
        correlation = uuid.uuid4().hex
        props.ResponseTopic = topics.method_response(DEVICE, LEAF, "caller", correlation)
        props.CorrelationData = correlation.encode()
        self.client.publish(topics.leaf_method_request(LEAF, method), json.dumps(payload), qos=1, properties=props)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            node.step()  # the node handles calls between windows
            with contextlib.suppress(queue.Empty):
                return self.responses.get(timeout=0.05)
        pytest.fail(f"no response to {method}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
