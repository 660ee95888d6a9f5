"""The SDK's public surface and its pure parts (no broker needed)."""

from __future__ import annotations

import pytest

import outpost.sdk
from outpost.errors import OutpostError
from outpost.sdk import ConnectError, InputMessage, MethodTimeoutError, ModuleClient, SdkError, SdkTimeoutError
from outpost.wire.patch import merge_patch


def test_exported_members() -> None:
    assert sorted(outpost.sdk.__all__) == [
        "ConnectError",
        "InputHandler",
        "InputMessage",
        "MethodHandler",
        "MethodTimeoutError",
        "ModuleClient",
        "ModuleRun",
        "NotAuthorizedError",
        "OutboxFullError",
        "SdkError",
        "SdkTimeoutError",
        "TwinHandler",
        "initial_twin",
        "start_module",
    ]
    for name in outpost.sdk.__all__:
        assert getattr(outpost.sdk, name) is not None


def test_errors_are_outpost_errors_and_timeouts_are_timeout_errors() -> None:
    error = MethodTimeoutError("beta", "reset", 2.5)
    assert isinstance(error, SdkTimeoutError)
    assert isinstance(error, TimeoutError)
    assert isinstance(error, OutpostError)
    assert str(error) == "direct method 'reset' on module 'beta' got no response within 2.5 s"


ENV = {
    "IOTEDGE_MODULEID": "filter",
    "IOTEDGE_DEVICEID": "dev-azure",
    "OUTPOST_DEVICE_ID": "dev1",
    "OUTPOST_HUB_HOST": "127.0.0.5",
    "OUTPOST_HUB_PORT": "1884",
    "OUTPOST_MODULE_PASSWORD": "secret",
}


def test_from_environment_reads_what_the_agent_sets() -> None:
    client = ModuleClient.from_environment(ENV)
    assert (client.device_id, client.module_id) == ("dev1", "filter")
    settings = client._settings
    assert (settings.host, settings.port) == ("127.0.0.5", 1884)
    assert (settings.username, settings.password) == ("filter", "secret")
    assert settings.client_id == "dev1/filter"
    assert settings.will_topic == "devices/dev1/modules/filter/status"
    assert settings.session_expiry == 86400


def test_from_environment_defaults_and_azure_device_id() -> None:
    env = {k: v for k, v in ENV.items() if not k.startswith("OUTPOST_HUB") and k != "OUTPOST_DEVICE_ID"}
    client = ModuleClient.from_environment(env, max_outbox=5)
    assert client.device_id == "dev-azure"
    assert (client._settings.host, client._settings.port) == ("127.0.0.1", 1883)


def test_from_environment_names_what_is_missing() -> None:
    missing = r"IOTEDGE_MODULEID, OUTPOST_DEVICE_ID \(or IOTEDGE_DEVICEID\), OUTPOST_MODULE_PASSWORD"
    with pytest.raises(SdkError, match=missing):
        ModuleClient.from_environment({})


def test_using_a_client_before_connect_is_a_clear_error() -> None:
    client = ModuleClient(device_id="d", module_id="m", password="p")
    with pytest.raises(SdkError, match="call connect"):
        client.send("out", b"x")
    with pytest.raises(SdkError, match="call connect"):
        client.report({"a": 1})
    client.close()  # harmless when never connected


@pytest.mark.parametrize("bad", ["", "a/b", "a+", "#", " x"])
def test_names_are_checked(bad: str) -> None:
    client = ModuleClient(device_id="d", module_id="m", password="p")
    with pytest.raises(ValueError, match="must be non-empty"):
        client.send(bad, b"x")
    with pytest.raises(ValueError, match="must be non-empty"):
        client.on_input(bad, print)


def test_system_property_names_are_not_application_properties() -> None:
    client = ModuleClient(device_id="d", module_id="m", password="p")
    with pytest.raises(ValueError, match="system properties"):
        client.send("out", b"x", {"$.mid": "forged"})


def test_merge_patch_follows_twin_semantics() -> None:
    doc = {"$version": 1, "a": 1, "n": {"x": 1, "y": 2}, "keep": [1, 2]}
    patch = {"$version": 2, "a": None, "n": {"y": None, "z": {"deep": True}}, "keep": [3], "new": "v"}
    assert merge_patch(doc, patch) == {"$version": 2, "n": {"x": 1, "z": {"deep": True}}, "keep": [3], "new": "v"}
    assert doc["a"] == 1  # not modified in place


def test_input_message_accessors() -> None:
    message = InputMessage(
        "id1", "in1", b'{"t": 1}', {"k": "v"}, {"contentType": "application/json", "contentEncoding": "utf-8"}
    )
    assert message.json() == {"t": 1}
    assert message.text() == '{"t": 1}'
    assert message.content_type == "application/json"


def test_connect_without_a_broker_fails_within_its_timeout() -> None:
    client = ModuleClient(device_id="d", module_id="m", password="p", host="127.0.0.1", port=1)  # nothing listens
    with pytest.raises(ConnectError, match=r"no broker answered at 127\.0\.0\.1:1 within 0\.5 s"):
        client.connect(timeout=0.5)
    assert not client.connected
