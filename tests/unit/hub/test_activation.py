"""Leaf-device activation decisions (outpost.hub.activation): pure, no server."""

from __future__ import annotations

import json

import pytest

from outpost.hub.activation import activate
from outpost.wire.credentials import leaf_activation_key, leaf_password

KEY = bytes(range(32))


def _body(device: object = "node-1", key: object = None) -> bytes:
    return json.dumps(
        {"deviceId": device, "activationKey": leaf_activation_key(KEY, "node-1") if key is None else key}
    ).encode()


def test_a_listed_leaf_with_its_key_gets_its_broker_credential() -> None:
    reply = activate(_body(), key=KEY, leaves={"node-1"})
    assert reply.status == 200
    assert reply.body == {"deviceId": "node-1", "credential": leaf_password(KEY, "node-1")}


def test_a_leaf_no_longer_listed_is_deactivated() -> None:
    reply = activate(_body(), key=KEY, leaves={"other"})
    assert (reply.status, reply.body) == (403, {"error": "deactivated"})


def test_a_wrong_key_or_another_devices_key_is_refused_without_a_credential() -> None:
    for given in ("x" * 43, leaf_activation_key(KEY, "node-2"), leaf_activation_key(b"\0" * 32, "node-1")):
        reply = activate(_body(key=given), key=KEY, leaves={"node-1", "node-2"})
        assert reply.status == 401
        assert "credential" not in reply.body


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"not json", 400, "body"),
        (b"[1]", 400, "body"),
        (_body(device="a/b"), 400, "deviceId"),
        (_body(device=7), 400, "deviceId"),
        (_body(key=""), 400, "activationKey"),
        (b"{" + b" " * 5000 + b"}", 413, "body"),
    ],
)
def test_malformed_requests_name_the_field(body: bytes, status: int, field: str) -> None:
    reply = activate(body, key=KEY, leaves={"node-1"})
    assert reply.status == status
    assert reply.body["error"].startswith(field)
