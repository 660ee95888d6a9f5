"""MqttSink against a real Mosquitto playing the "cloud" broker (127.0.0.1, a free port, anonymous).

The broker here is our own ``mosquitto -c`` process with its own config, never the system service
(which these tests neither need nor touch; it would only matter if it held port 1883, which they
never use). Mosquitto is installed with apt when missing; failing that, the tests fail.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from outpost.hub.adapters.mqtt_sink import MqttSink
from outpost.hub.sinks import FailureKind
from outpost.hub.store import UPSTREAM, Stored
from outpost.wire.message import Message

DEVICE = "dev1"


def _mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if found:
        return found
    proc = subprocess.run(
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mosquitto",
        shell=True,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0 or not Path("/usr/sbin/mosquitto").exists():
        pytest.fail(f"mosquitto is not installed and apt-get failed:\n{proc.stdout}{proc.stderr}", pytrace=False)
    return "/usr/sbin/mosquitto"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class CloudBroker:
    binary: str
    directory: Path
    port: int = field(default_factory=_free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        config = self.directory / "mosquitto.conf"
        config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "max_queued_messages 0\n"  # unlimited: nothing dropped for a slow subscriber
            "log_dest stderr\n"
        )
        with open(self.directory / "mosquitto.log", "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(config)], stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        deadline = time.monotonic() + 10
        while not _port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log_text = (self.directory / "mosquitto.log").read_text(errors="replace")
                pytest.fail(f"cloud mosquitto did not start on {self.port}:\n{log_text}", pytrace=False)
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudBroker]:
    broker = CloudBroker(_mosquitto_binary(), tmp_path_factory.mktemp("cloud-mqtt"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class Subscriber:
    """A paho client subscribed (QoS 1) to everything on the cloud broker."""

    def __init__(self, port: int) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, *_: c.subscribe("#", qos=1)
        self.client.on_subscribe = lambda *_: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._ready.wait(10), "subscriber did not subscribe"

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(message)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[mqtt.MQTTMessage]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.02)
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscriber(cloud: CloudBroker) -> Iterator[Subscriber]:
    sub = Subscriber(cloud.port)
    try:
        yield sub
    finally:
        sub.close()


@pytest.fixture
def sink_factory(cloud: CloudBroker) -> Iterator[Any]:
    sinks: list[MqttSink] = []

    def make(**kwargs: Any) -> MqttSink:
        kwargs.setdefault("client_id", f"outpost-upstream-test-{len(sinks)}")
        kwargs.setdefault("timeout", 5.0)
        kwargs.setdefault("connect_wait", 5.0)
        sink = MqttSink("127.0.0.1", cloud.port, **kwargs)
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.close()


def _stored(seq: int, *, module: str | None = "sensor", output: str | None = "temperature", **props: str) -> Stored:
    message = Message(
        id=f"m{seq:04d}",
        body=f'{{"n": {seq}}}'.encode(),
        source_device=DEVICE,
        source_module=module,
        output=output,
        properties=props,
        system={"contentType": "application/json"},
    )
    return Stored(seq=seq, endpoint=UPSTREAM, priority=0, enqueued_at=0.0, expires_at=1e12, message=message)


def test_delivery_with_properties_and_topic_template(sink_factory: Any, subscriber: Subscriber) -> None:
    sink = sink_factory(topic="cloud/{device}/{module}/{output}")
    batch = [_stored(seq, site="plant-a") for seq in range(1, 101)] + [_stored(101, module=None, output=None)]

    result = sink.send(batch)

    assert result.succeeded == list(range(1, 102)), result
    assert (result.retryable, result.invalid, result.failure) == ([], [], FailureKind.NONE)
    received = subscriber.wait_for(101)
    assert [m.payload for m in received] == [item.message.body for item in batch]  # in order
    assert {m.topic for m in received[:100]} == {"cloud/dev1/sensor/temperature"}
    assert received[100].topic == "cloud/dev1/-/-"  # a leaf device has no module or output
    props = dict(received[0].properties.UserProperty)
    assert props["site"] == "plant-a"
    assert props["$.mid"] == "m0001"
    assert props["$.cdid"] == DEVICE
    assert props["$.cmid"] == "sensor"
    assert props["$.on"] == "temperature"
    assert received[0].properties.ContentType == "application/json"


def test_topic_that_cannot_be_published_is_invalid(sink_factory: Any, subscriber: Subscriber) -> None:
    sink = sink_factory(topic="cloud/{output}")
    result = sink.send([_stored(1), _stored(2, output="a+b"), _stored(3)])
    assert result.succeeded == [1, 3]
    assert [seq for seq, _ in result.invalid] == [2]
    assert result.failure is FailureKind.INVALID
    assert len(subscriber.wait_for(2)) == 2


def test_broker_down_is_retryable_and_back_succeeds(cloud: CloudBroker, sink_factory: Any, wait_until: Any) -> None:
    sink = sink_factory(topic="cloud/{device}", connect_wait=1.0, max_reconnect_delay=1)
    assert sink.send([_stored(1)]).succeeded == [1]

    cloud.stop()
    try:
        wait_until(lambda: not sink.connected(), timeout=10.0, what="the sink noticing the broker is gone")
        started = time.monotonic()
        result = sink.send([_stored(seq) for seq in range(2, 12)])
        elapsed = time.monotonic() - started
        assert result.failure is FailureKind.UNREACHABLE, result
        assert result.retryable == list(range(2, 12))
        assert (result.succeeded, result.invalid) == ([], [])
        assert elapsed < 3.0
    finally:
        cloud.start()

    wait_until(sink.connected, timeout=15.0, interval=0.1, what="MqttSink.connected() after the restart")
    sub = Subscriber(cloud.port)
    try:
        result = sink.send([_stored(seq) for seq in range(2, 12)])
        assert result.succeeded == list(range(2, 12)), result
        payloads = [m.payload for m in sub.wait_for(10)]
        assert payloads == [f'{{"n": {seq}}}'.encode() for seq in range(2, 12)]
    finally:
        sub.close()
