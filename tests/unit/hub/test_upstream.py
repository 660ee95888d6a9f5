"""Upstream: conversion and topic selection (pure), settings -> sink kind, and the azure-bridge protocol.

The protocol test runs the real ``modules/azure-bridge/main.py`` server (standard library only
until it makes an IoT Hub client) with a fake IoT Hub client, talking to the real ``AzureSink``.
"""

from __future__ import annotations

import base64
import importlib.util
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from outpost.hub import upstream
from outpost.hub.adapters.azure_sink import AzureSink, parse_address
from outpost.hub.adapters.kafka_sink import KafkaSink
from outpost.hub.adapters.mqtt_sink import MqttSink
from outpost.hub.service import sink_from_settings
from outpost.hub.sinks import FailureKind
from outpost.hub.store import UPSTREAM, Stored
from outpost.manifest.models import UpstreamSettings
from outpost.wire.message import Message

BRIDGE_MAIN = Path(__file__).resolve().parents[3] / "modules" / "azure-bridge" / "main.py"


def _message(**kwargs: Any) -> Message:
    fields: dict[str, Any] = {
        "id": "m1",
        "body": b'{"t": 21.5}',
        "source_device": "dev1",
        "source_module": "sensor",
        "output": "temperature",
        "properties": {"site": "plant-a"},
        "system": {"contentType": "application/json", "contentEncoding": "utf-8", "correlationId": "c1"},
    }
    fields.update(kwargs)
    return Message(**fields)


def _stored(seq: int, message: Message) -> Stored:
    return Stored(seq=seq, endpoint=UPSTREAM, priority=0, enqueued_at=0.0, expires_at=1e12, message=message)


# --- topics and conversion --------------------------------------------------------------------


def test_source_id_and_kafka_key() -> None:
    assert upstream.source_id(_message()) == "dev1/sensor"
    assert upstream.source_id(_message(source_module=None)) == "dev1"
    assert upstream.kafka_key(_message()) == b"dev1/sensor"


@pytest.mark.parametrize(
    ("output", "topic", "expected"),
    [
        ("alerts", "telemetry", "alerts-topic"),
        ("temperature", "telemetry", "telemetry"),
        (None, "telemetry", "telemetry"),
        ("temperature", None, upstream.DEFAULT_KAFKA_TOPIC),
    ],
)
def test_kafka_topic_selection(output: str | None, topic: str | None, expected: str) -> None:
    message = _message(output=output)
    assert upstream.kafka_topic_for(message, topic=topic, topic_by_output={"alerts": "alerts-topic"}) == expected


@pytest.mark.parametrize("name", ["", ".", "..", "has space", "a/b", "x" * 250, "ümlaut"])
def test_illegal_kafka_topics(name: str) -> None:
    assert upstream.kafka_topic_problem(name) is not None


@pytest.mark.parametrize("name", ["outpost-upstream", "a.b_c-D9", "x" * 249])
def test_legal_kafka_topics(name: str) -> None:
    assert upstream.kafka_topic_problem(name) is None


def test_kafka_headers_carry_application_and_system_properties() -> None:
    headers = dict(upstream.kafka_headers(_message()))
    assert headers == {
        "site": b"plant-a",
        "$.ct": b"application/json",
        "$.ce": b"utf-8",
        "$.cid": b"c1",
        "$.mid": b"m1",
        "$.cdid": b"dev1",
        "$.cmid": b"sensor",
        "$.on": b"temperature",
    }


def test_mqtt_topic_template() -> None:
    template = "plant/{device}/{module}/{output}/{source}"
    assert upstream.mqtt_template_problem(template) is None
    assert upstream.mqtt_topic_for(template, _message()) == "plant/dev1/sensor/temperature/dev1/sensor"
    leaf = _message(source_module=None, output=None)
    assert upstream.mqtt_topic_for(template, leaf) == "plant/dev1/-/-/dev1"
    assert upstream.mqtt_topic_for("fixed/topic", _message()) == "fixed/topic"


@pytest.mark.parametrize("template", ["a/{nope}", "a/{device!r}", "a/{device:>9}", "a/{", "a/#", "$SYS/{device}", ""])
def test_bad_mqtt_templates(template: str) -> None:
    assert upstream.mqtt_template_problem(template) is not None


@pytest.mark.parametrize("topic", ["", "a/+/b", "a/#", "a\0b", "$x/y"])
def test_unpublishable_mqtt_topics(topic: str) -> None:
    assert upstream.mqtt_topic_problem(topic) is not None


def test_azure_fields() -> None:
    fields = upstream.azure_fields(_message(system={"contentType": "application/json", "userId": "u1"}))
    assert fields == upstream.AzureFields(
        data=b'{"t": 21.5}',
        message_id="m1",
        custom_properties={"site": "plant-a", "outpostSourceDevice": "dev1", "outpostSourceModule": "sensor"},
        content_type="application/json",
        content_encoding=None,
        correlation_id=None,
        user_id="u1",
        output_name="temperature",
    )
    leaf = upstream.azure_fields(_message(source_module=None, output=None, properties={}, system={}))
    assert leaf.custom_properties == {"outpostSourceDevice": "dev1"}
    assert (leaf.output_name, leaf.content_type) == (None, None)
    wire = fields.to_wire(7)
    assert wire["seq"] == 7
    assert base64.b64decode(wire["data"]) == b'{"t": 21.5}'
    assert wire["custom_properties"]["site"] == "plant-a"


# --- settings -> sink --------------------------------------------------------------------------


def _settings(data: dict[str, Any]) -> UpstreamSettings:
    return UpstreamSettings.model_validate(data)


def test_no_sink() -> None:
    assert sink_from_settings(None) is None
    assert sink_from_settings(_settings({"sink": "none", "kafka": {"bootstrapServers": "k:9092"}})) is None


def test_kafka_settings_make_a_kafka_sink() -> None:
    settings = _settings(
        {"sink": "kafka", "kafka": {"bootstrapServers": "127.0.0.1:1", "topicByOutput": {"alerts": "a"}}}
    )
    sink = sink_from_settings(settings)
    try:
        assert isinstance(sink, KafkaSink)
        assert sink.name == "kafka"
    finally:
        assert sink is not None
        sink.close()


def test_mqtt_settings_make_an_mqtt_sink() -> None:
    sink = sink_from_settings(
        _settings({"sink": "mqtt", "mqtt": {"host": "127.0.0.1", "port": 1, "topic": "up/{device}"}}),
        device_id="dev1",
    )
    try:
        assert isinstance(sink, MqttSink)
        assert not sink.connected()
    finally:
        assert sink is not None
        sink.close()


def test_azure_settings_make_an_azure_sink() -> None:
    sink = sink_from_settings(
        _settings({"sink": "azure", "azure": {"connectionStringEnv": "IOTHUB_CS"}}), azure_bridge="127.0.0.1:1"
    )
    assert isinstance(sink, AzureSink)
    sink.close()


@pytest.mark.parametrize("kind", ["kafka", "mqtt", "azure"])
def test_missing_section_is_an_error(kind: str) -> None:
    with pytest.raises(ValueError, match=kind):
        sink_from_settings(_settings({"sink": kind}))


def test_bad_mqtt_template_is_refused() -> None:
    with pytest.raises(ValueError, match="placeholder"):
        sink_from_settings(_settings({"sink": "mqtt", "mqtt": {"host": "h", "topic": "a/{oops}"}}))


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:8890") == ("127.0.0.1", 8890)
    assert parse_address("[::1]:8890") == ("::1", 8890)
    with pytest.raises(ValueError, match="host:port"):
        parse_address("localhost")


# --- the azure-bridge protocol, with a fake IoT Hub client ---------------------------------------


class ConnectionFailedError(Exception):
    """Named like azure.iot.device's: the bridge classifies SDK exceptions by class name."""


class FakeMessage:
    def __init__(self, data: bytes, **kwargs: Any) -> None:
        self.data = data
        self.__dict__.update(kwargs)
        self.custom_properties: dict[str, str] = {}


class FakeIotHub:
    """Records what was sent; ``refuse`` maps message ids to the exception the SDK would raise."""

    def __init__(self) -> None:
        self.sent: list[tuple[str | None, FakeMessage]] = []
        self.refuse: dict[str, BaseException] = {}
        self.connect_error: BaseException | None = None
        self.connection_strings: list[str] = []

    def factory(self, connection_string: str) -> FakeIotHub.Client:
        self.connection_strings.append(connection_string)
        return FakeIotHub.Client(self)

    class Client:
        def __init__(self, hub: FakeIotHub) -> None:
            self.hub = hub

        def connect(self) -> None:
            if self.hub.connect_error is not None:
                raise self.hub.connect_error

        def send_message(self, message: FakeMessage) -> None:
            self._send(None, message)

        def send_message_to_output(self, message: FakeMessage, output: str) -> None:
            self._send(output, message)

        def _send(self, output: str | None, message: FakeMessage) -> None:
            error = self.hub.refuse.get(message.message_id)
            if error is not None:
                raise error
            self.hub.sent.append((output, message))

        def shutdown(self) -> None:
            pass


@pytest.fixture(scope="module")
def bridge_main() -> ModuleType:
    spec = importlib.util.spec_from_file_location("outpost_test_azure_bridge_main", BRIDGE_MAIN)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def hub_and_sink(bridge_main: ModuleType) -> Iterator[tuple[FakeIotHub, AzureSink, Any]]:
    hub = FakeIotHub()
    bridge = bridge_main.Bridge(
        client_factory=hub.factory,
        message_factory=lambda wire: bridge_main.build_message(FakeMessage, wire),
        environ={"IOTHUB_CS": "HostName=example.azure-devices.net;DeviceId=dev1;SharedAccessKey=eA=="},
        op_timeout=2.0,
        retry_secs=0.0,
    )
    server = bridge_main.BridgeServer(("127.0.0.1", 0), bridge)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    sink = AzureSink(f"127.0.0.1:{server.server_address[1]}", connection_string_env="IOTHUB_CS", timeout=5.0)
    try:
        yield hub, sink, bridge
    finally:
        sink.close()
        server.shutdown()
        server.server_close()
        thread.join(5)
        bridge.close()


def test_bridge_sends_in_order_and_acks_what_iot_hub_accepted(hub_and_sink: Any) -> None:
    hub, sink, _ = hub_and_sink
    batch = [_stored(seq, _message(id=f"m{seq}")) for seq in range(1, 6)]
    batch.append(_stored(6, _message(id="m6", source_module=None, output=None)))

    result = sink.send(batch)

    assert result.succeeded == [1, 2, 3, 4, 5, 6], result
    assert (result.retryable, result.invalid, result.failure) == ([], [], FailureKind.NONE)
    assert [m.message_id for _, m in hub.sent] == ["m1", "m2", "m3", "m4", "m5", "m6"]
    output, first = hub.sent[0]
    assert output == "temperature"
    assert hub.sent[5][0] is None  # no output: send_message
    assert first.data == b'{"t": 21.5}'
    assert first.custom_properties == {
        "site": "plant-a",
        "outpostSourceDevice": "dev1",
        "outpostSourceModule": "sensor",
    }
    assert (first.content_type, first.content_encoding, first.correlation_id) == ("application/json", "utf-8", "c1")
    assert hub.connection_strings == ["HostName=example.azure-devices.net;DeviceId=dev1;SharedAccessKey=eA=="]
    assert sink.connected()


def test_bridge_refused_message_is_invalid_and_the_rest_goes_on(hub_and_sink: Any) -> None:
    hub, sink, _ = hub_and_sink
    hub.refuse["m2"] = ValueError("Size of telemetry message can not exceed 256 KB.")
    result = sink.send([_stored(seq, _message(id=f"m{seq}")) for seq in range(1, 4)])
    assert result.succeeded == [1, 3]
    assert result.invalid == [(2, "ValueError: Size of telemetry message can not exceed 256 KB.")]
    assert result.failure is FailureKind.INVALID


def test_bridge_connection_failure_mid_batch_leaves_the_rest_retryable(hub_and_sink: Any) -> None:
    hub, sink, _ = hub_and_sink
    hub.refuse["m3"] = ConnectionFailedError("Could not connect to IoTHub")
    result = sink.send([_stored(seq, _message(id=f"m{seq}")) for seq in range(1, 6)])
    assert result.succeeded == [1, 2]
    assert result.retryable == [3, 4, 5]
    assert result.failure is FailureKind.UNREACHABLE
    assert "ConnectionFailedError" in result.detail
    assert not sink.connected()  # the bridge dropped its client; a ping starts a reconnect in the background


def test_bridge_that_cannot_connect_reports_unreachable(hub_and_sink: Any) -> None:
    hub, sink, _ = hub_and_sink
    hub.connect_error = ConnectionFailedError("Could not connect to IoTHub")
    result = sink.send([_stored(1, _message())])
    assert (result.retryable, result.failure) == ([1], FailureKind.UNREACHABLE)


def test_bridge_without_the_connection_string_variable(hub_and_sink: Any) -> None:
    _hub, sink, _ = hub_and_sink
    other = AzureSink(f"127.0.0.1:{sink._address[1]}", connection_string_env="NOT_SET")
    result = other.send([_stored(1, _message())])
    assert (result.retryable, result.failure) == ([1], FailureKind.INTERNAL)
    assert "NOT_SET" in result.detail


def test_bridge_down_is_unreachable() -> None:
    sink = AzureSink("127.0.0.1:1", connection_string_env="IOTHUB_CS", connect_timeout=0.5)
    result = sink.send([_stored(1, _message()), _stored(2, _message(id="m2"))])
    assert result.retryable == [1, 2]
    assert result.failure is FailureKind.UNREACHABLE
    assert not sink.connected()
