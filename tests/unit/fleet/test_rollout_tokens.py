"""Model download tokens: stamped only into this fleet's registry models, bound to device, model and bytes."""

from __future__ import annotations

from typing import Any

from outpost.fleet.rollout.tokens import model_token, registry_ref, stamp, token_matches

BASE = "https://fleet.example:9700"
SHA = "ab" * 32


def document(url: str, sha: str | None = SHA) -> dict[str, Any]:
    model: dict[str, Any] = {"version": "2", "url": url}
    if sha:
        model["sha256"] = sha
    return {"modulesContent": {"anomaly-detector": {"properties.desired": {"model": model, "threshold": 0.7}},
                               "fft-filter": {"properties.desired": {"bands": 4}}}}  # fmt: skip


def test_a_registry_model_gets_the_device_route_and_a_token_bound_to_device_model_and_bytes() -> None:
    doc = document(f"{BASE}/api/v1/models/motor/2/content")
    stamped = stamp(doc, "gw 1/a", BASE, "hash-a")
    assert stamped is not None
    model = stamped["modulesContent"]["anomaly-detector"]["properties.desired"]["model"]
    assert model["url"] == f"{BASE}/api/v1/devices/gw%201%2Fa/models/motor/2/content"
    assert model["token"] == model_token("hash-a", "gw 1/a", "motor", "2", SHA)
    assert stamped["modulesContent"]["fft-filter"] == doc["modulesContent"]["fft-filter"]
    assert "token" not in doc["modulesContent"]["anomaly-detector"]["properties.desired"]["model"]  # not mutated
    token = model["token"]
    assert token_matches(token, "hash-a", device_id="gw 1/a", name="motor", version="2", sha256=SHA)
    assert not token_matches(token, "hash-b", device_id="gw 1/a", name="motor", version="2", sha256=SHA)
    assert not token_matches(token, "hash-a", device_id="gw-2", name="motor", version="2", sha256=SHA)
    assert not token_matches(token, "hash-a", device_id="gw 1/a", name="motor", version="3", sha256=SHA)
    assert not token_matches(token, "hash-a", device_id="gw 1/a", name="motor", version="2", sha256="cd" * 32)
    assert not token_matches(token, None, device_id="gw 1/a", name="motor", version="2", sha256=SHA)


def test_foreign_urls_paths_and_models_without_a_digest_get_no_token() -> None:
    assert stamp(document("https://elsewhere.example/api/v1/models/motor/2/content"), "gw", BASE, "h") is None
    assert stamp(document(f"{BASE}/models/motor-2.tflite"), "gw", BASE, "h") is None
    assert stamp(document(f"{BASE}/api/v1/models/motor/2/content", sha=None), "gw", BASE, "h") is None
    assert stamp({"modulesContent": {"m": {"properties.desired": {"model": {"path": "/x"}}}}}, "gw", BASE, "h") is None
    assert registry_ref(f"{BASE}:1/api/v1/models/motor/2/content", BASE) is None
    assert registry_ref(f"{BASE}/api/v1/models/motor/2/content", BASE + "/") == ("motor", "2")
