"""Hub test fixtures and builders (a pytest plugin, registered in tests/conftest.py): a hub
service on a free port with its own Mosquitto, SDK module clients, manifests and counters."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from integration.conftest_mosquitto import free_port
from outpost.hub.service import HubService, HubSettings
from outpost.sdk import InputMessage, ModuleClient
from outpost.wire.credentials import device_key, module_password

DEVICE = "hubdev"
OUTPOST = str(Path(sys.executable).parent / "outpost")


def hub_manifest(routes: dict[str, Any], *, modules=("alpha", "beta", "gamma"), hub_ext=None, ttl=7200) -> dict:
    def mod(name: str) -> dict:
        return {"version": "1", "type": "docker", "status": "running", "restartPolicy": "always",
                "settings": {"image": f"x/{name}:1"}}  # fmt: skip

    hub_desired: dict[str, Any] = {
        "schemaVersion": "1.1",
        "routes": routes,
        "storeAndForwardConfiguration": {"timeToLiveSecs": ttl},
    }
    if hub_ext:
        hub_desired["outpost"] = hub_ext
    return {
        "modulesContent": {
            "$edgeAgent": {"properties.desired": {
                "schemaVersion": "1.1", "runtime": {"type": "docker", "settings": {}},
                "systemModules": {
                    "edgeAgent": {"type": "docker", "settings": {"image": "a"}},
                    "edgeHub": {"type": "docker", "status": "running", "restartPolicy": "always",
                                "settings": {"image": "h"}},
                },
                "modules": {m: mod(m) for m in modules},
            }},
            "$edgeHub": {"properties.desired": hub_desired},
            "beta": {"properties.desired": {"threshold": 0.5, "nested": {"a": 1}}},
        }
    }  # fmt: skip


ALPHA_TO_BETA = {"a2b": 'FROM /messages/modules/alpha/outputs/out INTO BrokeredEndpoint("/modules/beta/inputs/in")'}


class Counter:
    """An input handler that records ids (and counts repeats, which the SDK should prevent)."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.bodies: list[Any] = []
        self.lock = threading.Lock()

    def __call__(self, message: InputMessage) -> None:
        with self.lock:
            self.ids.append(message.id)
            self.bodies.append(message.json())

    def count(self) -> int:
        with self.lock:
            return len(self.ids)


@pytest.fixture
def hub_factory(tmp_path: Path, mosquitto_installed: None) -> Iterator[Callable[..., HubService]]:
    services: list[HubService] = []

    def make(document: dict, **kw: Any) -> HubService:
        settings = HubSettings(
            state_dir=tmp_path / "hub", device_id=DEVICE, port=kw.pop("port", free_port()), metrics_port=0,
            key_root=tmp_path, **kw,
        )  # fmt: skip
        service = HubService(settings)
        services.append(service)
        service.start(document)
        return service

    yield make
    for service in services:
        service.stop()


@pytest.fixture
def module_factory(tmp_path: Path) -> Iterator[Callable[..., ModuleClient]]:
    clients: list[ModuleClient] = []

    def make(hub: HubService, name: str, **kw: Any) -> ModuleClient:
        client = ModuleClient(
            device_id=DEVICE, module_id=name, password=module_password(device_key(tmp_path), name),
            port=hub.settings.port, **kw,
        )  # fmt: skip
        clients.append(client)
        return client

    yield make
    for client in clients:
        with contextlib.suppress(Exception):
            client.close(timeout=2)
