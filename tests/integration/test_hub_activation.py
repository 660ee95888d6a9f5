"""The hub's leaf-activation endpoint over real HTTP (outpost.hub.adapters.activation_http)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from integration.conftest_mosquitto import free_port
from integration.hub_harness import hub_manifest
from outpost.wire.credentials import device_key, leaf_activation_key, leaf_password


def _call(url: str, body: bytes | None, method: str = "POST") -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_activation_over_http_and_its_refusals(hub_factory: Any, tmp_path: Path) -> None:
    hub = hub_factory(hub_manifest({}, hub_ext={"leafDevices": ["node-1"]}), port=free_port(), activation_port=0)
    assert hub.activation is not None
    base = f"http://127.0.0.1:{hub.activation.port}"
    key = device_key(tmp_path)
    good = json.dumps({"deviceId": "node-1", "activationKey": leaf_activation_key(key, "node-1")}).encode()

    assert _call(f"{base}/api/v1/activate", good) == (
        200,
        {"deviceId": "node-1", "credential": leaf_password(key, "node-1")},
    )
    status, body = _call(f"{base}/api/v1/activate", json.dumps({"deviceId": "node-1", "activationKey": "x"}).encode())
    assert status == 401
    assert "credential" not in body
    assert _call(f"{base}/api/v1/activate", b"{oops")[0] == 400
    assert _call(f"{base}/api/v1/activate", None, method="GET")[0] == 405
    assert _call(f"{base}/other", good)[0] == 404

    hub.apply(hub_manifest({}, hub_ext={"leafDevices": ["node-2"]}))  # node-1 removed: deactivated
    assert _call(f"{base}/api/v1/activate", good) == (403, {"error": "deactivated"})
